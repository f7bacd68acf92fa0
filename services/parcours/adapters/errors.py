"""Errors of the HTTP edge, each with its status and a stable code for clients; and `http_error`,
the one mapping from the errors of the other areas (publishing rules, contract, bus) to them."""

from __future__ import annotations

from parcours.auth.errors import AuthError, InvalidClient, TokenRefused
from parcours.bus.errors import KafkaUnavailable, KeyReused, NotCaughtUp
from parcours.contract.errors import EventValidationError
from parcours.errors import ParcoursError
from parcours.publishing.errors import BadReference, NotPermitted, NotVisible, PublishingError, TooLate


class AdapterError(ParcoursError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, rule: str | None = None, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message, self.rule, self.fields = message, rule, fields

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"error": self.code, "message": self.message}
        if self.rule:
            out["rule"] = self.rule
        if self.fields:
            out["fields"] = self.fields
        return out


class Unauthorized(AdapterError):
    status, code = 401, "unauthorized"


class Forbidden(AdapterError):
    status, code = 403, "forbidden"


class NotFound(AdapterError):
    status, code = 404, "not_found"


class Conflict(AdapterError):
    status, code = 409, "conflict"


class PayloadTooLarge(AdapterError):
    status, code = 413, "payload_too_large"


class TooManyRequests(AdapterError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, rule=f"retry after {retry_after}s")
        self.retry_after = retry_after


class Invalid(AdapterError):
    status, code = 422, "invalid"


class BusUnavailable(AdapterError):
    status, code = 503, "kafka_unavailable"


class NotReady(AdapterError):
    status, code = 503, "not_ready"


class OAuthRefusal(AdapterError):
    """A token request refused, answered as OAuth 2.0 says (RFC 6749 section 5.2)."""

    def __init__(self, exc: AuthError) -> None:
        super().__init__(exc.message)
        self.code = exc.oauth
        self.status = 401 if isinstance(exc, InvalidClient) else 400

    def body(self) -> dict[str, object]:
        return {"error": self.code, "error_description": self.message}


_FROM_RULES: dict[type[PublishingError], type[AdapterError]] = {
    NotPermitted: Forbidden, BadReference: Invalid, NotVisible: NotFound, TooLate: Conflict}


def from_domain(exc: PublishingError) -> AdapterError:
    """The HTTP answer to a refusal of the publishing rules."""
    cls = next((c for d, c in _FROM_RULES.items() if isinstance(exc, d)), AdapterError)
    return cls(exc.message, rule=exc.rule, fields=exc.fields)


def http_error(exc: ParcoursError) -> AdapterError | None:
    """The HTTP answer to an error of any area: a refusal of the publishing rules, an event the
    contract refuses, a token request refused (OAuth's answer) or an access token refused, the bus
    down or not caught up, an idempotency key reused. None: an error no client caused nor can
    retry (a bug, answered 500 and logged)."""
    if isinstance(exc, AdapterError):
        return exc
    if isinstance(exc, PublishingError):
        return from_domain(exc)
    if isinstance(exc, EventValidationError):
        return Invalid(str(exc), fields=[{"field": f, "rule": r} for f, r in exc.errors])
    if isinstance(exc, AuthError):
        return Unauthorized(exc.message) if isinstance(exc, TokenRefused) else OAuthRefusal(exc)
    if isinstance(exc, KeyReused):
        return Conflict(str(exc), rule=exc.rule)
    simple = {KafkaUnavailable: BusUnavailable, NotCaughtUp: NotReady}
    return next((cls(str(exc)) for area, cls in simple.items() if isinstance(exc, area)), None)
