"""Refusals: the documented error body, and the one place where every error becomes an HTTP status
(`install_errors`): the edge's own errors, those of the other areas through `adapters.errors.http_error`,
FastAPI's and Starlette's, the FHIR bridge's (an OperationOutcome), and a bug (500, logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from parcours.adapters.errors import AdapterError, Invalid, http_error
from parcours.adapters.http.deps import Adapter, route_type
from parcours.adapters.outcomes import MEDIA_TYPE as FHIR_MEDIA_TYPE
from parcours.adapters.outcomes import is_fhir, refusal
from parcours.errors import ParcoursError
from parcours.fhir import outbound
from parcours.fhir.errors import FhirError

log = logging.getLogger("parcours.adapter")


class FieldError(BaseModel):
    field: str
    rule: str

class ErrorBody(BaseModel):
    """Every refusal: a stable `error` code, a `message`, the `rule` it enforces, each bad field."""

    error: str
    message: str
    rule: str | None = None
    fields: list[FieldError] | None = None


class OAuthErrorBody(BaseModel):
    """A token request refused, as OAuth 2.0 answers it (RFC 6749 section 5.2)."""

    error: str
    error_description: str


#: the token endpoint's refusals, in the OpenAPI document (OAuth's shape, not ErrorBody)
OAUTH_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorBody, "description": "the request is not a valid client_credentials grant (`error`: invalid_request, "
                                                   "unsupported_grant_type, invalid_scope, ...)"},
    401: {"model": OAuthErrorBody, "description": "the client assertion is refused (`error`: invalid_client)"},
}


#: the refusals any route may answer, in the OpenAPI document

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "the body is not readable (not JSON, not UTF-8, nested too deep)"),
        (401, "no token, or an unknown one"),
        (403, "a rule forbids it (named in `rule`)"),
        (404, "no such case or referral visible to the caller"),
        (409, "the Idempotency-Key was used with another body"),
        (413, "the body is larger than a record may be"),
        (422, "a field breaks a rule (each named in `fields`)"),
        (429, "over the token's rate; see Retry-After"),
        (500, "an unexpected error (logged)"),
        (503, "Kafka is unreachable; nothing was written"),
    )}

def _answer(request: Request, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    """A refusal in the documented shape: the JSON API's error body, or on the FHIR routes an
    OperationOutcome saying the same."""
    if is_fhir(request.url.path):
        fields = body.get("fields")
        return Response(refusal(status, str(body["message"]), rule=body.get("rule"), fields=fields if isinstance(fields, list) else None),
                        status_code=status, media_type=FHIR_MEDIA_TYPE, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)

def _channel(request: Request) -> str:
    return "fhir" if is_fhir(request.url.path) else "http"

def install_errors(app: FastAPI, adapter: Adapter) -> None:
    @app.exception_handler(AdapterError)
    async def adapter_error(request: Request, exc: AdapterError) -> Response:
        adapter.metrics.refused.labels(route_type(request), adapter.kind, exc.code, _channel(request)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == HTTPStatus.UNAUTHORIZED else None
        return _answer(request, exc.status, exc.body(), headers)

    @app.exception_handler(ParcoursError)
    async def area_error(request: Request, exc: ParcoursError) -> Response:
        mapped = http_error(exc)
        return await (unexpected(request, exc) if mapped is None else adapter_error(request, mapped))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = [{"field": _field_of(e["loc"]), "rule": e["msg"]} for e in exc.errors()]
        adapter.metrics.refused.labels(route_type(request), adapter.kind, "invalid", _channel(request)).inc()
        return _answer(request, 422, Invalid("the request is invalid", fields=fields).body())

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Starlette's own refusals (unknown path, method, unreadable body) in the documented shape."""
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < HTTPStatus.INTERNAL_SERVER_ERROR else "error")
        adapter.metrics.refused.labels(route_type(request), adapter.kind, code, _channel(request)).inc()
        return _answer(request, exc.status_code, {"error": code, "message": str(exc.detail)}, exc.headers)

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        """A resource the FHIR bridge refuses: an OperationOutcome naming each element."""
        adapter.metrics.refused.labels(route_type(request), adapter.kind, "invalid", "fhir").inc()
        return Response(outbound.outcome(exc.issues), status_code=exc.status, media_type=FHIR_MEDIA_TYPE)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        """A bug: logged with its type and route (never the body), answered in the documented shape."""
        log.error("unexpected error", extra={"route": route_type(request), "error": type(exc).__name__}, exc_info=exc)
        return _answer(request, 500, {"error": "internal", "message": "an unexpected error; it was logged"})

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}

def _field_of(loc: Any) -> str:
    """The field a validation error names: the body's path, or the query/path/header parameter."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        return ".".join(parts[1:]) or "body"
    return ".".join(parts[1:]) if len(parts) > 1 else (parts[0] if parts else "request")
