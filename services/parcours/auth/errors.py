"""Errors of partner authentication. The token endpoint answers them as OAuth 2.0 errors (RFC 6749
section 5.2: `error`, `error_description`); the edge answers a refused access token 401."""

from __future__ import annotations

from parcours.errors import ParcoursError


class AuthError(ParcoursError):
    """Base of authentication errors; `oauth` is the RFC 6749 error code."""

    oauth = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(AuthError):
    """A token request without a required parameter, or with one twice."""


class UnsupportedGrant(AuthError):
    oauth = "unsupported_grant_type"


class InvalidClient(AuthError):
    """The client assertion does not authenticate a registered structure (signature, key, claims, replay)."""

    oauth = "invalid_client"


class InvalidScope(AuthError):
    """None of the scopes asked for is one the structure's kind may hold."""

    oauth = "invalid_scope"


class TokenRefused(AuthError):
    """An access token the edge does not accept (signature, issuer, audience, expiry)."""

    oauth = "invalid_token"


class BadKeys(AuthError):
    """A JWKS a structure registers is unusable (kind of key, algorithm, private parts)."""


class IssuerUnavailable(AuthError):
    """The external OpenID issuer's discovery document or keys cannot be read."""
