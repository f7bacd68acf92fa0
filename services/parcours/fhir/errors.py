"""Errors of the FHIR bridge: each carries the OperationOutcome issues that explain it."""

from __future__ import annotations

from typing import NamedTuple

from parcours.errors import ParcoursError


class Issue(NamedTuple):
    """One `OperationOutcome.issue`: its code (FHIR issue-type), the FHIRPath of the element at
    fault (or None), and what rule it breaks."""

    code: str
    expression: str | None
    diagnostics: str
    severity: str = "error"


class FhirError(ParcoursError):
    """A resource the bridge refuses; `status` is the HTTP answer."""

    status = 422

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.issues = issues


class FhirUnreadable(FhirError):
    """Not a FHIR resource at all: not JSON, not an object, another resource type."""

    status = 400


class FhirNotSupported(FhirError):
    """A valid resource asking for what Parcours does not do (a full-resource subscription)."""

    status = 422


def invalid(expression: str | None, rule: str, code: str = "invalid") -> FhirError:
    return FhirError([Issue(code, expression, rule)])
