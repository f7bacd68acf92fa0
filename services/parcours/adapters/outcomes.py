"""Refusals on the FHIR routes: the same errors as the JSON API's, answered as OperationOutcome
(`application/fhir+json`). Used by the error handlers and by the edge guard, which refuses before
any route runs."""

from __future__ import annotations

from parcours.fhir import outbound
from parcours.fhir.errors import Issue

PREFIX = "/fhir/r4"
MEDIA_TYPE = outbound.MEDIA_TYPE

#: HTTP status -> OperationOutcome issue type (FHIR issue-type value set)
_ISSUE_CODE = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported", 409: "conflict",
               413: "too-costly", 415: "not-supported", 422: "invalid", 429: "throttled", 500: "exception", 503: "transient"}


def is_fhir(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def refusal(status: int, message: str, *, rule: str | None = None, fields: list[dict[str, str]] | None = None) -> bytes:
    """A refusal as an OperationOutcome: one issue per field at fault (its FHIRPath in
    `expression`), else one issue with the message and the rule."""
    code = _ISSUE_CODE.get(status, "processing")
    if fields:
        return outbound.outcome(Issue(code, f["field"], f["rule"]) for f in fields)
    return outbound.outcome([Issue(code, None, f"{message} ({rule})" if rule else message)])
