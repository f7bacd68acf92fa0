"""Who is calling the edge: a structure with an access token from the token issuer (its scopes
then bound what it may call), or, in the development profile only, with a static token whose
SHA-256 is in the registry (every right of its kind).

The token issuer is the embedded one (the adapters' own token endpoint, SMART Backend Services)
or, in production, an external OpenID issuer whose keys are found by discovery
(`auth.discovery`). Either way the check is offline: no call per request. A token of a
structure no longer in the registry is refused, whatever its expiry.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from parcours.adapters.errors import Forbidden, Unauthorized
from parcours.adapters.outcomes import PREFIX as FHIR_PREFIX
from parcours.auth import scopes as sc
from parcours.auth.discovery import Discovery
from parcours.auth.errors import TokenRefused
from parcours.auth.keys import ASSERTION_ALGORITHMS
from parcours.auth.tokens import AccessTokens, TokenService
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Structure, hash_token

#: the SMART capabilities the edge offers (Backend Services, v2 scopes)
CAPABILITIES = ["client-confidential-asymmetric", "permission-v2"]
TOKEN_PATH = "/auth/token"  # noqa: S105 - a path, not a secret
JWKS_PATH = "/auth/jwks"
#: the operator API's routes: the operators' token, not a partner's
ADMIN_PREFIX = "/v1/admin/"
#: SMART's discovery document: at the root and below the FHIR base
SMART_PATHS = ("/.well-known/smart-configuration", FHIR_PREFIX + "/.well-known/smart-configuration")


@dataclass
class EdgeAuth:
    kind: str
    catalogue: Catalogue
    tokens: AccessTokens
    #: the embedded issuer (None: tokens come from an external issuer)
    service: TokenService | None
    #: accept the registry's static token hashes (development profile only)
    static_tokens: bool
    #: the adapter's public URL (its token endpoint's base)
    public_url: str
    #: an external issuer's token endpoint (from its discovery document)
    external_token_endpoint: str | None = None
    #: an external issuer's keys, read again in the background
    discovery: Discovery | None = None
    #: the SHA-256 of the operators' token (operator API); empty: none accepted
    admin_token_sha256: str = ""

    def operator(self, token: str) -> None:
        """401 unless `token` is the operators' token."""
        if not self.admin_token_sha256 or not hmac.compare_digest(hash_token(token), self.admin_token_sha256):
            raise Unauthorized("the operator API needs the operators' token (PARCOURS_ADMIN_TOKEN_SHA256)")

    def caller(self, token: str) -> tuple[Structure, sc.Scopes | None]:
        """The structure behind a bearer token, and its scopes (None: a static token, every right
        of its kind); Unauthorized (401) or Forbidden (403, another kind) otherwise."""
        if token.count(".") == 2:  # noqa: PLR2004 - a compact JWT has three parts
            try:
                verdict = self.tokens.check(token)
            except TokenRefused as exc:
                raise Unauthorized(exc.message) from None
            structure, granted = self.catalogue.registry.structures.get(verdict.slug), verdict.scopes
            if structure is None:
                raise Unauthorized(f"{verdict.slug} is not a registered structure (removed?)")
        else:
            found = self.catalogue.registry.by_token(token) if self.static_tokens else None
            if found is None:
                raise Unauthorized("unknown or revoked token")
            structure, granted = found, None
        if structure.kind != self.kind:
            raise Forbidden(f"this adapter serves {self.kind} structures; {structure.slug} is a {structure.kind}",
                            rule="one adapter per structure kind")
        return structure, granted

    @staticmethod
    def check_scope(granted: sc.Scopes | None, route: str | None) -> None:
        """403 when the token's scopes do not cover the route."""
        needed = sc.need(route)
        if granted is None or needed is None or sc.covers(granted, needed):
            return
        raise Forbidden(f"the access token's scopes do not allow this route (it needs system/{needed[0]}.{needed[1]})",
                        rule="SMART scopes granted by the token endpoint")

    def smart_configuration(self) -> dict[str, Any]:
        """The `/.well-known/smart-configuration` document of this adapter."""
        embedded = self.service is not None
        out: dict[str, Any] = {
            "token_endpoint": self.public_url + TOKEN_PATH if embedded else self._external_endpoint(),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "scopes_supported": sc.render(sc.grantable(self.catalogue, self.kind)).split(),
            "capabilities": CAPABILITIES,
            "issuer": self.tokens.issuer,
        }
        if embedded:
            out["jwks_uri"] = self.public_url + JWKS_PATH
        return out

    def _external_endpoint(self) -> str | None:
        return self.discovery.token_endpoint if self.discovery is not None else self.external_token_endpoint
