"""FHIR R4 (4.0.1) itself, before any rule of the bridge: the resource's structure checked against
the R4 definitions (`fhirkit`, generated from the official 4.0.1 specification: elements,
cardinalities, datatypes, resource types, so an R4B-only resource is not R4), then the R4
invariants that structure alone does not decide (written here from the specification, each named
by its key) and the required code bindings of the elements the posted resources carry.

`issues(raw)` says all that is wrong with a resource as `Issue`s (FHIRPath, rule); `checked(raw)`
is the outbound side: what Parcours writes, refused (ValueError) if it is not R4."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import fhirkit

from parcours.fhir.errors import Issue

FHIR_VERSION = fhirkit.FHIR_VERSION

#: required bindings (R4) of the coded elements the bridge's resources carry: path -> allowed codes
REQUIRED_CODES: dict[str, frozenset[str]] = {p: frozenset(c.split()) for p, c in {
    "ServiceRequest.status": "draft active on-hold revoked completed entered-in-error unknown",
    "ServiceRequest.intent": "proposal plan directive order original-order reflex-order filler-order instance-order option",
    "ServiceRequest.priority": "routine urgent asap stat",
    "Task.status": "draft requested received accepted rejected ready cancelled in-progress on-hold failed completed entered-in-error",
    "Task.intent": "unknown proposal plan order original-order reflex-order filler-order instance-order option",
    "Task.priority": "routine urgent asap stat",
    "Consent.status": "draft proposed active rejected inactive entered-in-error",
    "Consent.provision.type": "deny permit",
    "Consent.provision.data.meaning": "instance related dependents authoredby",
    "Communication.status": "preparation in-progress not-done on-hold stopped completed entered-in-error unknown",
    "Communication.priority": "routine urgent asap stat",
    "Observation.status": "registered preliminary final amended corrected cancelled entered-in-error unknown",
    "Subscription.status": "requested active error off",
    "Subscription.channel.type": "rest-hook websocket email sms message",
    "Patient.gender": "male female other unknown",
}.items()}

_CHOICE = re.compile(r"^value[A-Z]")


def issues(raw: dict[str, Any]) -> list[Issue]:
    """What FHIR R4 refuses in `raw`: its structure, then the invariants below."""
    found = [Issue(_code_of(i.message), i.path, f"FHIR R4: {i.message}") for i in fhirkit.validate(raw) if i.severity == "error"]
    if found:  # the invariants read a well-formed resource
        return found
    return _invariants(raw, str(raw["resourceType"]))


def _invariants(raw: dict[str, Any], path: str) -> list[Issue]:
    """The invariants of the resource at `path`, then those of the resources it holds (a
    Bundle's entries, a Parameters' resources), each at its own path."""
    rtype = str(raw["resourceType"])
    nested: list[tuple[str, dict[str, Any]]] = []
    elements = list(_walk(raw, path, nested))
    found = _domain_resource(raw, path, elements)
    found += _elements(elements)
    found += [i._replace(expression=(i.expression or rtype).replace(rtype, path, 1)) for i in _RESOURCE_RULES.get(rtype, _none)(raw)]
    found += _codes(elements, path, rtype)
    for i, c in enumerate(raw.get("contained") or []):
        where = f"{path}.contained[{i}]"
        found += _codes(list(_walk(c, where, [])), where, str(c["resourceType"]))
    for where, res in nested:
        found += _invariants(res, where)
    return found


def checked(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` (what Parcours writes) as it is, once FHIR R4 accepts it; ValueError otherwise."""
    wrong = issues(resource)
    if wrong:
        raise ValueError(f"not FHIR R4: {'; '.join(f'{i.expression}: {i.diagnostics}' for i in wrong[:5])}")
    return resource


def _code_of(message: str) -> str:
    if "unknown element" in message or "resource type" in message:
        return "structure"
    if "required element missing" in message:
        return "required"
    return "value"


def _none(raw: dict[str, Any]) -> list[Issue]:
    return []


# --- every resource -----------------------------------------------------------------------------

Elements = list[tuple[str, Any]]


def _domain_resource(raw: dict[str, Any], path: str, elements: Elements) -> list[Issue]:
    """dom-1..dom-5 on the contained resources; ref-1 on the local references."""
    out: list[Issue] = []
    contained = raw.get("contained") or []
    local_refs = {str(v) for p, v in elements if p.endswith(".reference") and isinstance(v, str) and v.startswith("#")}
    for i, c in enumerate(contained):
        where = f"{path}.contained[{i}]"
        if c.get("contained"):
            out.append(Issue("invalid", where, "dom-2: a contained resource SHALL NOT contain other resources"))
        if f"#{c.get('id')}" not in local_refs and "#" not in local_refs:
            out.append(Issue("invalid", where, "dom-3: a contained resource SHALL be referred to from elsewhere in the resource"))
        meta = c.get("meta") or {}
        if "versionId" in meta or "lastUpdated" in meta:
            out.append(Issue("invalid", f"{where}.meta", "dom-4: a contained resource SHALL NOT have a meta.versionId or a meta.lastUpdated"))
        if meta.get("security"):
            out.append(Issue("invalid", f"{where}.meta.security", "dom-5: a contained resource SHALL NOT have a security label"))
        if c.get("text"):
            out.append(Issue("invalid", f"{where}.text", "dom-1: a contained resource SHALL NOT contain any narrative"))
    ids = {f"#{c.get('id')}" for c in contained}
    for p, value in elements:
        if p.endswith(".reference") and isinstance(value, str) and value.startswith("#") and value != "#" and value not in ids:
            out.append(Issue("invalid", p, f"ref-1: {value} names no contained resource"))
    return out


def _elements(elements: Elements) -> list[Issue]:
    """ele-1 (an element has a value or children) and ext-1 (an extension has a value or
    extensions, not both), everywhere in the resource; per-1 (a period starts before it ends)."""
    out: list[Issue] = []
    for path, value in elements:
        if isinstance(value, dict):
            if not value:
                out.append(Issue("invalid", path, "ele-1: an element SHALL have a value or children"))
            if "url" in value and _is_extension(path):
                values = [k for k in value if _CHOICE.match(k)]
                if bool(values) == bool(value.get("extension")):
                    out.append(Issue("invalid", path, "ext-1: an extension SHALL have either a value[x] or extensions, not both, not neither"))
            start, end = value.get("start"), value.get("end")
            if isinstance(start, str) and isinstance(end, str) and path.split(".")[-1].split("[")[0] in _PERIODS and _later(start, end):
                out.append(Issue("invalid", path, "per-1: the start SHALL be before the end"))
    return out


_PERIODS = frozenset({"period", "executionPeriod", "effectivePeriod", "dataPeriod", "validityPeriod"})


def _is_extension(path: str) -> bool:
    last = path.rsplit(".", 1)[-1]
    return last.startswith(("extension[", "modifierExtension["))


def _later(start: str, end: str) -> bool:
    """Whether `start` is after `end` (same precision compared as text, FHIR dates being ISO)."""
    n = min(len(start), len(end), 19)
    return start[:n] > end[:n]


def _walk(value: Any, path: str, nested: list[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, Any]]:
    """Every element of the resource `value` with its path (`Consent.provision.actor[0].reference`),
    its contained resources included; the other resources it holds are put in `nested`."""
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "resourceType":
                continue
            if isinstance(child, dict) and "resourceType" in child:
                nested.append((f"{path}.{key}", child))
            elif key == "contained" and isinstance(child, list):  # contained: part of the resource
                for i, c in enumerate(child):
                    yield from _walk(c, f"{path}.contained[{i}]", nested)
            else:
                yield from _walk(child, f"{path}.{key}", nested)
        yield path, value
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _walk(child, f"{path}[{i}]", nested)
    else:
        yield path, value


def _codes(elements: Elements, path: str, rtype: str) -> list[Issue]:
    out: list[Issue] = []
    for p, value in elements:
        rest = p.removeprefix(path)
        allowed = None if ".contained[" in rest else REQUIRED_CODES.get(rtype + re.sub(r"\[\d+\]", "", rest))
        if allowed is not None and isinstance(value, str) and value not in allowed:
            out.append(Issue("code-invalid", p, f"FHIR R4: {value!r} is not in the required value set ({' | '.join(sorted(allowed))})"))
    return out


# --- each resource -----------------------------------------------------------------------------

def _observation(raw: dict[str, Any]) -> list[Issue]:
    out: list[Issue] = []
    if raw.get("dataAbsentReason") and any(_CHOICE.match(k) for k in raw):
        out.append(Issue("invalid", "Observation.dataAbsentReason", "obs-6: dataAbsentReason SHALL only be present if Observation.value[x] is not"))
    codes = {(c.get("system"), c.get("code")) for c in (raw.get("code") or {}).get("coding") or []}
    for i, comp in enumerate(raw.get("component") or []):
        where = f"Observation.component[{i}]"
        if any(_CHOICE.match(k) for k in comp) and codes & {(c.get("system"), c.get("code")) for c in (comp.get("code") or {}).get("coding") or []}:
            out.append(Issue("invalid", where, "obs-7: a component with the Observation's own code SHALL NOT have a value"))
    return out


def _consent(raw: dict[str, Any]) -> list[Issue]:
    """ppc-1. (ppc-2 to ppc-5, a patient for each scope, test the scope in a code system R4 wrote
    as 'something': as published they never fail, and HAPI agrees.)"""
    if not raw.get("policy") and not raw.get("policyRule"):
        return [Issue("required", "Consent.policyRule", "ppc-1: a Consent SHALL have a policy or a policyRule")]
    return []


def _service_request(raw: dict[str, Any]) -> list[Issue]:
    if raw.get("orderDetail") and not raw.get("code"):
        return [Issue("invalid", "ServiceRequest.orderDetail", "prr-1: orderDetail SHALL only be present if code is present")]
    return []


def _task(raw: dict[str, Any]) -> list[Issue]:
    authored, modified = raw.get("authoredOn"), raw.get("lastModified")
    if isinstance(authored, str) and isinstance(modified, str) and _later(authored, modified):
        return [Issue("invalid", "Task.lastModified", "inv-1: lastModified SHALL be on or after authoredOn")]
    return []


_RESOURCE_RULES = {"Observation": _observation, "Consent": _consent, "ServiceRequest": _service_request, "Task": _task}
