"""Reading the elements of a FHIR R4 resource: validating it as FHIR R4 (`r4`: the 4.0.1
structure and invariants), reading it through its `fhir.resources` class (R4B, which for the
resources posted here has R4's elements: R4 has refused whatever it does not hold), gathering the
issues found (`Issues`), and the references, codings, extensions and dates the mappers of
`inbound` read."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from parcours.fhir import codes, r4
from parcours.fhir.errors import FhirError, FhirUnreadable, Issue


class Issues:
    """Issues gathered while a resource is read, raised together."""

    def __init__(self) -> None:
        self.found: list[Issue] = []

    def add(self, expression: str, rule: str, code: str = "invalid") -> None:
        self.found.append(Issue(code, expression, rule))

    def raise_any(self) -> None:
        if self.found:
            raise FhirError(self.found)


def validate(resource_type: str, raw: Any, model: Any) -> Any:
    """`raw` as the `model` of `resource_type`, or FhirUnreadable/FhirError naming each element."""
    if not isinstance(raw, dict):
        raise FhirUnreadable([Issue("structure", None, f"the body must be a FHIR {resource_type} (a JSON object)")])
    if raw.get("resourceType") != resource_type:
        raise FhirUnreadable([Issue("structure", "resourceType", f"resourceType must be {resource_type} on this endpoint")])
    try:
        wrong = r4.issues(raw)
    except (ValueError, RecursionError):  # fhirkit: nested deeper than any FHIR resource is
        raise FhirUnreadable([Issue("too-costly", resource_type, "nested too deep")]) from None
    if wrong:
        raise FhirError(wrong)
    try:
        resource = model.model_validate(raw)
    except ValidationError as exc:
        raise FhirError([issue_of(resource_type, e) for e in exc.errors()]) from None
    except RecursionError:
        raise FhirUnreadable([Issue("too-costly", resource_type, "nested too deep")]) from None
    except Exception as exc:  # noqa: BLE001 - fhir.resources raises plain errors (KeyError for an unknown contained type)
        raise FhirError([Issue("invalid", resource_type, f"not a valid {resource_type} ({type(exc).__name__})")]) from None
    if resource.modifierExtension:  # FHIR: a modifier the receiver does not know must be refused
        raise FhirError([Issue("not-supported", f"{resource_type}.modifierExtension", "no modifier extension is understood here")])
    return resource


def issue_of(resource_type: str, err: Any) -> Issue:
    path = resource_type
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    path = path.replace(".class_fhir", ".class").replace(".for_fhir", ".for")
    kind = err["type"]
    if "missing" in kind:
        return Issue("required", path, "required")
    if kind == "extra_forbidden":
        return Issue("structure", path, "not an element of this resource")
    return Issue("value", path, str(err["msg"]).removeprefix("Value error, ")[:500])


def reference_id(ref: Any, resource_type: str) -> str | None:
    """The Parcours id a Reference points to: `<Type>/<id>` (relative or absolute) or an
    identifier of the type's Parcours id system."""
    if ref is None:
        return None
    if ref.reference:
        m = re.match(rf"^(?:.*/)?{resource_type}/([^/]+)$", ref.reference)
        return m[1] if m else None
    ident = ref.identifier
    if ident is not None and ident.system == codes.ID_SYSTEM.get(resource_type) and ident.value:
        return str(ident.value)
    return None


def structure_of(ref: Any, *systems: str) -> str | None:
    """The slug (or kind) a Reference names by identifier."""
    ident = getattr(ref, "identifier", None)
    if ident is not None and ident.system in (systems or (codes.STRUCTURE,)) and ident.value:
        return str(ident.value)
    return None


def code_in(concepts: Any, system: str) -> str | None:
    """The first code of `system` in a CodeableConcept or a list of them."""
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        for coding in (getattr(concept, "coding", None) or []):
            if coding.system == system and coding.code:
                return str(coding.code)
    return None


def extension(resource: Any, url: str) -> Any:
    return next((e for e in (resource.extension or []) if e.url == url), None)


def instant(value: Any, where: str, issues: Issues) -> str | None:
    """A FHIR dateTime as an ISO instant with its time zone; a date alone or a partial date
    ("2031") says no instant, and is refused rather than guessed."""
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat()
    issues.add(where, "a dateTime with its time and time zone (e.g. 2027-01-31T23:59:59+01:00)")
    return None


def day(value: Any, where: str, issues: Issues) -> str | None:
    """A FHIR date or dateTime as a day (YYYY-MM-DD); a partial date is refused."""
    if value is None:
        return None
    if isinstance(value, (date, datetime)):
        return (value.date() if isinstance(value, datetime) else value).isoformat()
    issues.add(where, "a full date (YYYY-MM-DD)")
    return None


def one_category(concepts: Any, where: str, issues: Issues) -> str | None:
    """The item's category: at most one code of the category system (an item has one category)."""
    found = [c.code for concept in concepts or [] for c in concept.coding or [] if c.system == codes.CATEGORY and c.code]
    if len(found) > 1:
        issues.add(where, f"at most one code of {codes.CATEGORY}: an item has one category")
    return str(found[0]) if found else None


def text_of(concept: Any) -> str | None:
    if concept is None:
        return None
    if concept.text:
        return str(concept.text)
    coding = next(iter(concept.coding or []), None)
    return None if coding is None else (coding.display or coding.code)


def case_of(refs: list[Any] | None, where: str, issues: Issues, *, required: bool = True) -> str | None:
    found = [c for c in (reference_id(r, "EpisodeOfCare") for r in refs or []) if c]
    if len(found) > 1:
        issues.add(where, "names one case (EpisodeOfCare/<case_id>), not several")
    if not found and required:
        issues.add(where, "a reference to the case: EpisodeOfCare/<case_id>", "required")
    return found[0] if found else None
