"""SMART Backend Services on each adapter: the discovery document
(`/.well-known/smart-configuration`, also below the FHIR base), the token endpoint (a client
assertion in, an access token out) and the issuer's public keys."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from parcours.adapters.auth import JWKS_PATH, SMART_PATHS, TOKEN_PATH
from parcours.adapters.errors import NotFound, PayloadTooLarge
from parcours.adapters.http.answers import OAUTH_ERROR_RESPONSES
from parcours.adapters.http.deps import Adapter
from parcours.auth.errors import InvalidRequest

#: a token request is a few form fields and one JWT
MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def smart_routes(app: FastAPI, adapter: Adapter) -> None:
    auth = adapter.auth

    for path in SMART_PATHS:
        app.add_api_route(path, auth.smart_configuration, methods=["GET"], tags=["auth"], name=f"smart_configuration{path.count('/')}",
                          summary="SMART App Launch discovery: the token endpoint, its methods, the scopes")

    @app.post(TOKEN_PATH, tags=["auth"], name="token", responses=OAUTH_ERROR_RESPONSES)
    async def token(request: Request) -> JSONResponse:
        """SMART Backend Services: a `client_credentials` grant authenticated by a signed
        `client_assertion` (`private_key_jwt`, ES384 or RS384), form-encoded; answers an access
        token for the scopes asked within what the structure's kind may do."""
        if auth.service is None:
            raise NotFound(f"tokens come from {auth.tokens.issuer}: {auth.external_token_endpoint}")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise PayloadTooLarge(f"a token request is at most {MAX_FORM_BYTES} bytes")
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:
                raise InvalidRequest(f"parameter {name} is given twice")
            form[name] = value
        return JSONResponse(await auth.service.exchange(form), headers=NO_STORE)

    @app.get(JWKS_PATH, tags=["auth"], name="jwks")
    async def jwks() -> dict[str, Any]:
        """The embedded issuer's public keys: what checks the access tokens it signs."""
        if auth.service is None:
            raise NotFound(f"tokens come from {auth.tokens.issuer}")
        return auth.service.jwks()
