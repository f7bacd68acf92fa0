"""The bridge's own conformance resources, served under `/fhir/r4/` so that a validator (and a
partner) can check what the extensions and code systems of `codes` mean: a StructureDefinition
per extension, a CodeSystem and its all-codes ValueSet per code system. The codes come from the
contract's own enumerations, so the two cannot drift apart."""

from __future__ import annotations

from functools import cache
from typing import Any, get_args

from parcours.contract import models
from parcours.fhir import codes

VERSION = "1.0.0"
#: the resource types of the definitions, each served at `/fhir/r4/<type>/<id>`
PUBLISHED = ("StructureDefinition", "CodeSystem", "ValueSet")
_EXTENSION = "http://hl7.org/fhir/StructureDefinition/Extension"
_PUBLISHER = "Parcours"


def _literals(model: type[models.Event] | type[models.ReferralContext], field: str) -> tuple[str, ...]:
    return tuple(str(v) for v in get_args(model.model_fields[field].annotation))


#: id -> (canonical url, title, codes with their display)
_SYSTEMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "category": (codes.CATEGORY, "Categories of a case's information (what a consent shares)", get_args(models.Category)),
    "evaluation-type": (codes.EVALUATION_TYPE, "Types of evaluation", _literals(models.EvaluationRecorded, "type")),
    "admission-decision": (codes.ADMISSION, "A CRT's admission decisions", _literals(models.AdmissionDecided, "decision")),
    "admission-output": (codes.ADMISSION_OUTPUT, "What an admission decision's Task outputs", ("alternative",)),
    "referral-status": (codes.REFERRAL_STATUS, "A referral's statuses", _literals(models.ReferralStatusChanged, "status")),
    "rupture-type": (codes.RUPTURE_TYPE, "Care-pathway ruptures", _literals(models.RuptureReported, "type")),
    "consent-method": (codes.CONSENT_METHOD, "How a consent was collected", _literals(models.ConsentRecorded, "method")),
    "referral-context-type": (codes.CONTEXT_TYPE, "What a referral follows", _literals(models.ReferralContext, "type")),
}


def _value_set_url(system: str) -> str:
    return f"{system}:all"


@cache
def code_systems() -> tuple[dict[str, Any], ...]:
    return tuple({
        "resourceType": "CodeSystem", "id": f"parcours-{cid}", "url": url, "version": VERSION, "name": _name(cid), "title": title,
        "status": "active", "experimental": False, "publisher": _PUBLISHER, "description": title,
        "caseSensitive": True, "valueSet": _value_set_url(url), "content": "complete", "count": len(concepts),
        "concept": [{"code": c, "display": c.replace("_", " ")} for c in concepts],
    } for cid, (url, title, concepts) in _SYSTEMS.items())


@cache
def value_sets() -> tuple[dict[str, Any], ...]:
    return tuple({
        "resourceType": "ValueSet", "id": f"parcours-{cid}", "url": _value_set_url(url), "version": VERSION, "name": _name(cid),
        "title": f"{title} (all codes)", "status": "active", "experimental": False, "publisher": _PUBLISHER,
        "compose": {"include": [{"system": url}]},
    } for cid, (url, title, _concepts) in _SYSTEMS.items())


def _name(cid: str) -> str:
    return "Parcours" + "".join(p.capitalize() for p in cid.split("-"))


def _extension(sid: str, url: str, title: str, context: str, value: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition", "id": sid, "url": url, "version": VERSION, "name": _name(sid), "title": title,
        "status": "active", "experimental": False, "publisher": _PUBLISHER, "description": title, "fhirVersion": "4.0.1",
        "kind": "complex-type", "abstract": False, "context": [{"type": "element", "expression": context}], "type": "Extension",
        "baseDefinition": _EXTENSION, "derivation": "constraint",
        "differential": {"element": [{"id": "Extension", "path": "Extension", "short": title, "definition": title}, *value]},
    }


def _simple(sid: str, url: str, title: str, context: str, value_type: str, **value: Any) -> dict[str, Any]:
    return _extension(sid, url, title, context, [
        {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
        {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": value_type}], **value}])


def _required(system: str) -> dict[str, Any]:
    return {"binding": {"strength": "required", "valueSet": _value_set_url(system)}}


def _part(name: str, value_type: str, min_: int, **value: Any) -> list[dict[str, Any]]:
    at = f"Extension.extension:{name}"
    return [{"id": at, "path": "Extension.extension", "sliceName": name, "min": min_, "max": "1"},
            {"id": f"{at}.extension", "path": "Extension.extension.extension", "max": "0"},
            {"id": f"{at}.url", "path": "Extension.extension.url", "fixedUri": name},
            {"id": f"{at}.value[x]", "path": "Extension.extension.value[x]", "min": 1, "type": [{"code": value_type}], **value}]


@cache
def structure_definitions() -> tuple[dict[str, Any], ...]:
    context = _extension("referral-context", codes.EXT_CONTEXT, "What a referral follows (a hospital discharge…) and when", "ServiceRequest", [
        {"id": "Extension.extension", "path": "Extension.extension", "min": 1,
         "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"}},
        *_part("type", "code", 1, **_required(codes.CONTEXT_TYPE)), *_part("date", "date", 0),
        {"id": "Extension.url", "path": "Extension.url", "fixedUri": codes.EXT_CONTEXT},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "max": "0"}])
    return (
        context,
        _simple("consent-method", codes.EXT_METHOD, "How the consent was collected", "Consent", "code", **_required(codes.CONSENT_METHOD)),
        _simple("volet", codes.EXT_VOLET, "The CRT's offer (volet 1 or 2) an admission is to", "Task", "integer", minValueInteger=1, maxValueInteger=2),
        _simple("signing-secret", codes.EXT_SECRET, "The secret that signs the notifications (X-Parcours-Signature)", "Subscription", "string"),
    )


def all_definitions() -> tuple[dict[str, Any], ...]:
    """Everything served under `/fhir/r4/<type>/<id>`, read by the conformance tier's validator."""
    return (*structure_definitions(), *code_systems(), *value_sets())


def definition(resource_type: str, rid: str) -> dict[str, Any] | None:
    return next((d for d in all_definitions() if d["resourceType"] == resource_type and d["id"] == rid), None)
