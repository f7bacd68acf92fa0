"""FHIR R4 resources in, the contract's events out: each resource is checked as FHIR R4 (`r4`)
and read through its `fhir.resources` class, then mapped onto the very fields the JSON API takes, so the same
contract, rights and consent rules apply whichever door an event comes through.

What a resource must carry beyond FHIR's own rules (README, "FHIR R4 bridge") is checked here and
refused with an `Issue` naming the element (a FHIRPath) and the rule. Values the contract checks
(lengths, patterns, enumerations) are left to it: `Inbound.paths` turns the contract's field
names back into the elements they came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.subscription import Subscription
from fhir.resources.R4B.task import Task

from parcours.fhir import codes
from parcours.fhir import patient as fr_patient
from parcours.fhir.elements import (
    Issues,
    case_of,
    code_in,
    day,
    extension,
    instant,
    one_category,
    reference_id,
    structure_of,
    text_of,
    validate,
)


class Inbound(NamedTuple):
    """What a resource asks for: an event of `event_type` with `fields` (less what Parcours sets:
    event id, time, source and the new item's id)."""

    event_type: str
    fields: dict[str, Any]
    #: the case the resource names; None for a referral opening a case, or a Task (its referral's)
    case_id: str | None
    #: a Task's referral
    referral_id: str | None
    #: the structure the resource says it comes from (ServiceRequest.requester), if it says
    author: str | None
    #: contract field -> the FHIR element it came from (to name it when the contract refuses it)
    paths: Mapping[str, str]

    def expression(self, field: str) -> str:
        """The FHIR element of a contract field (`person.postcode` -> the Patient's postalCode)."""
        if field in self.paths:
            return self.paths[field]
        head, _, rest = field.partition(".")
        return f"{self.paths[head]}.{rest}" if head in self.paths and rest else field


def parse(resource_type: str, raw: Any) -> Inbound:
    """A posted resource as the event it asks for."""
    model, mapper = _MAPPERS[resource_type]
    resource = validate(resource_type, raw, model)
    issues = Issues()
    inbound = mapper(resource, issues)
    issues.raise_any()
    return inbound


# --- each resource --------------------------------------------------------------------------

_REFERRAL_PATHS = {
    "to_structure": "ServiceRequest.performer", "reasons": "ServiceRequest.reasonCode", "urgency": "ServiceRequest.priority",
    "summary": "ServiceRequest.note", "context": f"ServiceRequest.extension({codes.EXT_CONTEXT})",
    "person.pseudonym": "Patient.identifier", "person.birth_year": "Patient.birthDate",
    "person.postcode": "Patient.address.postalCode", "case_id": "ServiceRequest.supportingInfo",
    **fr_patient.PATHS}


def _service_request(sr: ServiceRequest, issues: Issues) -> Inbound:
    """A referral: to the `performer`, about the contained pseudonymous Patient `subject`."""
    if sr.status != "active":
        issues.add("ServiceRequest.status", "a referral is posted active")
    if sr.intent != "order":
        issues.add("ServiceRequest.intent", "a referral is an order")
    performers = [structure_of(p) for p in sr.performer or []]
    if len(performers) != 1 or performers[0] is None:
        issues.add("ServiceRequest.performer", f"exactly one Organization identified in {codes.STRUCTURE} (the recipient's slug)", "required")
    priority = sr.priority or "routine"
    person = _person(sr, issues)
    fields: dict[str, Any] = {
        "to_structure": performers[0] if len(performers) == 1 else None,
        "person": person,
        "reasons": [t for t in (text_of(r) for r in sr.reasonCode or []) if t],
        "urgency": codes.URGENCY_OF_PRIORITY.get(priority, priority),
        "summary": "\n\n".join(n.text for n in sr.note or [] if n.text) or None,
    }
    context = _context(sr, issues)
    if context is not None:
        fields["context"] = context
    case_id = case_of(sr.supportingInfo, "ServiceRequest.supportingInfo", issues, required=False)
    return Inbound("ReferralSubmitted", fields, case_id, None, structure_of(sr.requester), _REFERRAL_PATHS)


#: what a Patient may not carry here: everything but its id, pseudonym, birth year and postcode
_PATIENT_ELEMENTS = tuple(f for f in Patient.model_fields if not f.endswith("__ext") and f not in (
    "id", "identifier", "birthDate", "address", "resource_type", "fhir_comments"))


def _person(sr: ServiceRequest, issues: Issues) -> dict[str, Any] | None:
    """The contained Patient: a pseudonym, a birth year, a postcode, and nothing else that could
    identify the person (Parcours carries no names, no full birth dates, no national ids)."""
    local = (sr.subject.reference or "") if sr.subject else ""
    patient = next((c for c in sr.contained or [] if isinstance(c, Patient) and local == f"#{c.id}"), None)
    if patient is None:
        issues.add("ServiceRequest.subject", "a reference (#id) to a contained Patient: pseudonym, birth year, postcode", "required")
        return None
    if fr_patient.brings_identity(patient):
        return _identified_person(sr, patient, issues)
    pseudonyms = [i.value for i in patient.identifier or [] if i.system == codes.PSEUDONYM and i.value]
    if len(pseudonyms) != 1 or len(patient.identifier or []) != 1:
        issues.add("Patient.identifier", f"exactly one identifier, of system {codes.PSEUDONYM} (the pseudonym; no INS, no other id)")
    for element in _PATIENT_ELEMENTS:
        if getattr(patient, element, None):
            issues.add(f"Patient.{element}", "not carried: persons are pseudonymous on Parcours "
                                             "(a pseudonym, a birth year and a postcode only)", "security")
    for i, other in enumerate(sr.contained or []):
        if other is not patient:
            issues.add(f"ServiceRequest.contained[{i}]", "only the subject Patient may be contained", "security")
    birth = str(patient.birthDate) if patient.birthDate is not None else ""
    if not re.fullmatch(r"[0-9]{4}", birth):
        issues.add("Patient.birthDate", "the birth year only (YYYY): Parcours keeps no birth date", "required" if not birth else "invalid")
    addresses = patient.address or []
    if len(addresses) != 1 or not addresses[0].postalCode or any(
            getattr(addresses[0], f, None) for f in type(addresses[0]).model_fields if f not in ("postalCode", "fhir_comments")):
        issues.add("Patient.address", "exactly one address holding its postalCode only (no street, no city)")
    return {"pseudonym": pseudonyms[0] if pseudonyms else None,
            "birth_year": int(birth) if re.fullmatch(r"[0-9]{4}", birth) else None,
            "postcode": addresses[0].postalCode if addresses else None}


def _identified_person(sr: ServiceRequest, patient: Patient, issues: Issues) -> dict[str, Any]:
    """A contained FR Core Patient INS: the pseudonym, and the identity (`fhir.patient`); the
    birth year and postcode from its birth date and address."""
    pseudonyms = [i.value for i in patient.identifier or [] if i.system == codes.PSEUDONYM and i.value]
    others = [i for i in patient.identifier or [] if i.system != codes.PSEUDONYM and not (i.system or "").startswith("urn:oid:")]
    if len(pseudonyms) != 1 or others:
        issues.add("Patient.identifier", f"one identifier of system {codes.PSEUDONYM} (the pseudonym) and the INS slices only")
    for element in _PATIENT_ELEMENTS:
        if getattr(patient, element, None) and element not in fr_patient.IDENTITY_ELEMENTS:
            issues.add(f"Patient.{element}", "not carried: a FR Core Patient INS brings its identity, contact and pseudonym only", "security")
    known = {fr_patient.EXT_RELIABILITY, fr_patient.EXT_BIRTH_PLACE}
    for ext in patient.extension or []:
        if ext.url not in known:
            issues.add(f"Patient.extension({ext.url})", "not carried: the identity reliability and the birth place only", "security")
    for i, other in enumerate(sr.contained or []):
        if other is not patient:
            issues.add(f"ServiceRequest.contained[{i}]", "only the subject Patient may be contained", "security")
    addresses = patient.address or []
    if len(addresses) != 1 or not addresses[0].postalCode:
        issues.add("Patient.address", "exactly one address, with its postalCode", "required")
    birth = str(patient.birthDate) if patient.birthDate is not None else ""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", birth):
        issues.add("Patient.birthDate", "the full birth date (YYYY-MM-DD) of an identity", "required" if not birth else "invalid")
    return {"pseudonym": pseudonyms[0] if pseudonyms else None, "birth_year": int(birth[:4]) if birth[:4].isdigit() else None,
            "postcode": addresses[0].postalCode if addresses else None, "identity": fr_patient.identity_in(patient, issues)}


def _context(sr: ServiceRequest, issues: Issues) -> dict[str, Any] | None:
    ext = extension(sr, codes.EXT_CONTEXT)
    if ext is None:
        return None
    parts = {e.url: e for e in ext.extension or []}
    kind = parts.get("type")
    if kind is None or not kind.valueCode:
        issues.add(f"ServiceRequest.extension({codes.EXT_CONTEXT}).extension(type)", "the context's type (valueCode)", "required")
        return None
    when = parts.get("date")
    return {"type": kind.valueCode,
            "date": day(when.valueDate, f"ServiceRequest.extension({codes.EXT_CONTEXT}).extension(date)", issues) if when else None}


_STATUS_PATHS = {"referral_id": "Task.focus", "status": "Task.status", "reason": "Task.statusReason",
                 "redirect_to": "Task.owner", "decision": "Task.businessStatus",
                 "volet": f"Task.extension({codes.EXT_VOLET})", "start_date": "Task.executionPeriod.start",
                 "reasons": "Task.note", "alternative": f"Task.output({codes.ADMISSION_OUTPUT}#alternative).valueReference"}


def _task(task: Task, issues: Issues) -> Inbound:
    """A referral's new status, or (businessStatus of the admission system) a CRT's admission decision."""
    referral_id = reference_id(task.focus, "ServiceRequest")
    if referral_id is None:
        issues.add("Task.focus", "a reference to the referral: ServiceRequest/<referral_id>", "required")
    decision = code_in(task.businessStatus, codes.ADMISSION)
    if decision is not None:
        volet = extension(task, codes.EXT_VOLET)
        start = task.executionPeriod.start if task.executionPeriod else None
        fields: dict[str, Any] = {
            "referral_id": referral_id, "decision": decision, "volet": volet.valueInteger if volet else None,
            "start_date": day(start, "Task.executionPeriod.start", issues),
            "reasons": [n.text for n in task.note or [] if n.text] + ([text_of(task.statusReason)] if text_of(task.statusReason) else [])}
        alternative = next((structure_of(o.valueReference) for o in task.output or []
                            if code_in(o.type, codes.ADMISSION_OUTPUT) == "alternative"), None)
        if alternative is not None:  # a refusal's structure proposed instead (none: counted as without alternative)
            fields["alternative"] = alternative
        return Inbound("AdmissionDecided", fields, None, referral_id, None, _STATUS_PATHS)
    status = codes.STATUS_OF_TASK.get(str(task.status))
    if status is None:
        issues.add("Task.status", f"one of {', '.join(codes.STATUS_OF_TASK)} (a referral's status), or an admission "
                                  f"decision in businessStatus ({codes.ADMISSION})", "code-invalid")
    redirect_to = None
    if code_in(task.businessStatus, codes.REFERRAL_STATUS) == "redirected":
        if task.status != "rejected":
            issues.add("Task.status", "a redirection is rejected, with businessStatus redirected and the new recipient as owner")
        status, redirect_to = "redirected", structure_of(task.owner)
    fields = {"referral_id": referral_id, "status": status, "reason": text_of(task.statusReason), "redirect_to": redirect_to}
    return Inbound("ReferralStatusChanged", fields, None, referral_id, None, _STATUS_PATHS)


_CONSENT_PATHS = {"grantee": "Consent.provision.actor", "categories": "Consent.provision.class",
                  "decision": "Consent.provision.type", "valid_until": "Consent.provision.period.end",
                  "method": f"Consent.extension({codes.EXT_METHOD})", "case_id": "Consent.provision.data"}


def _consent(consent: Consent, issues: Issues) -> Inbound:
    """Sharing (permit) or refusing (deny) some categories of a case with a structure or a kind."""
    if consent.status != "active":
        issues.add("Consent.status", "a consent is recorded active (a withdrawal is a new Consent whose provision.type is deny)")
    if code_in(consent.scope, codes.CONSENT_SCOPE) != "patient-privacy":
        issues.add("Consent.scope", f"patient-privacy ({codes.CONSENT_SCOPE}): a consent to share information")
    prov = consent.provision
    if prov is None:
        issues.add("Consent.provision", "what is permitted or denied, to whom, for which case", "required")
        return Inbound("ConsentRecorded", {}, None, None, None, _CONSENT_PATHS)
    for element in ("provision", "action", "purpose", "securityLabel", "dataPeriod", "code"):
        if getattr(prov, element, None):
            issues.add(f"Consent.provision.{element}", "not supported: a Parcours consent is whole (grantee, categories, "
                                                       "end); record one Consent per rule", "not-supported")
    if prov.period is not None and prov.period.start is not None:
        issues.add("Consent.provision.period.start", "not supported: a consent holds from when it is recorded", "not-supported")
    grantees = [structure_of(a.reference, codes.STRUCTURE, codes.KIND) for a in prov.actor or []]
    if len(grantees) != 1 or grantees[0] is None:
        issues.add("Consent.provision.actor", f"exactly one actor, identified in {codes.STRUCTURE} (a slug) or {codes.KIND} (a kind)",
                   "required")
    method = extension(consent, codes.EXT_METHOD)
    fields = {
        "grantee": grantees[0] if len(grantees) == 1 else None,
        "categories": [c.code for c in prov.class_fhir or [] if c.system == codes.CATEGORY and c.code],
        "decision": prov.type,
        "valid_until": instant(prov.period.end if prov.period else None, "Consent.provision.period.end", issues),
        "method": method.valueCode if method else None,
    }
    case_id = case_of([d.reference for d in prov.data or []], "Consent.provision.data", issues)
    return Inbound("ConsentRecorded", fields, case_id, None, None, _CONSENT_PATHS)


_MESSAGE_PATHS = {"body": "Communication.payload.contentString", "reply_to": "Communication.inResponseTo",
                  "category": "Communication.category", "case_id": "Communication.about"}


def _communication(comm: Communication, issues: Issues) -> Inbound:
    """A message in a case's discussion: `about` the case, one text payload."""
    if comm.status not in ("completed", "in-progress"):
        issues.add("Communication.status", "completed or in-progress (a message sent)")
    texts = [p.contentString for p in comm.payload or [] if p.contentString]
    if len(texts) != 1 or len(comm.payload or []) != 1:
        issues.add("Communication.payload", "exactly one payload, a contentString", "required")
    replies = [reference_id(r, "Communication") for r in comm.inResponseTo or []]
    if len(replies) > 1 or None in replies:
        issues.add("Communication.inResponseTo", "at most one reference: Communication/<message_id>")
    fields: dict[str, Any] = {"body": texts[0] if texts else None, "reply_to": replies[0] if len(replies) == 1 else None}
    category = one_category(comm.category, "Communication.category", issues)
    if category is not None:
        fields["category"] = category
    case_id = case_of(comm.about, "Communication.about", issues)
    return Inbound("MessagePosted", fields, case_id, None, None, _MESSAGE_PATHS)


_EVALUATION_PATHS = {"type": "Observation.code", "gir": "Observation.value[x]", "results": "Observation.component",
                     "category": "Observation.category", "case_id": "Observation.focus"}


def _observation(obs: Observation, issues: Issues) -> Inbound:
    """An evaluation (AGGIR with its GIR, ICOPE step 1, multidimensional): its results as components."""
    if obs.status not in ("final", "amended", "corrected", "preliminary"):
        issues.add("Observation.status", "final, amended, corrected or preliminary (an evaluation made)")
    others = [f for f in Observation.model_fields if f.startswith("value") and not f.endswith("__ext")
              and f not in ("valueInteger", "valueCodeableConcept") and getattr(obs, f) is not None]
    if others:
        issues.add(f"Observation.{others[0]}", "the GIR only: valueInteger or valueCodeableConcept (results go in components)")
    kind = code_in(obs.code, codes.EVALUATION_TYPE)
    if kind is None:
        issues.add("Observation.code", f"the evaluation's type, a code of {codes.EVALUATION_TYPE}", "required")
    gir = obs.valueInteger
    if gir is None and obs.valueCodeableConcept is not None:
        gir = codes.GIR_OF_CODE.get(code_in(obs.valueCodeableConcept, codes.CISIS) or "")
        if gir is None:
            issues.add("Observation.valueCodeableConcept", f"a GIR of {codes.CISIS} ({', '.join(codes.GIR_OF_CODE)})")
    results: dict[str, Any] = {}
    for i, comp in enumerate(obs.component or []):
        name = text_of(comp.code)
        value = comp.valueString if comp.valueString is not None else comp.valueInteger
        if value is None and comp.valueCodeableConcept is not None:
            value = text_of(comp.valueCodeableConcept)
        if value is None and comp.dataAbsentReason is not None:
            value = ""  # an empty result (the JSON API takes "")
        if not name or value is None:
            issues.add(f"Observation.component[{i}]", "a named code and a value (string, integer or coded)")
        elif name in results:
            issues.add(f"Observation.component[{i}].code", f"one component per result ({name} twice)")
        else:
            results[name] = str(value)
    fields: dict[str, Any] = {"type": kind, "results": results, "gir": gir}
    category = one_category(obs.category, "Observation.category", issues)
    if category is not None:
        fields["category"] = category
    case_id = case_of(obs.focus, "Observation.focus", issues)
    return Inbound("EvaluationRecorded", fields, case_id, None, None, _EVALUATION_PATHS)


_MAPPERS: dict[str, tuple[Any, Callable[[Any, Issues], Inbound]]] = {
    "ServiceRequest": (ServiceRequest, _service_request),
    "Task": (Task, _task),
    "Consent": (Consent, _consent),
    "Communication": (Communication, _communication),
    "Observation": (Observation, _observation),
}
#: the resource types a partner may post, and the event each becomes
RESOURCE_EVENTS = {"ServiceRequest": "ReferralSubmitted", "Task": "ReferralStatusChanged or AdmissionDecided",
                   "Consent": "ConsentRecorded", "Communication": "MessagePosted", "Observation": "EvaluationRecorded"}


MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 1, 86400


class SubscriptionRequest(NamedTuple):
    """A rest-hook Subscription to the case-changes topic (Subscriptions backport)."""

    endpoint: str
    content: str  # id-only | empty
    heartbeat_s: int | None
    headers: list[tuple[str, str]]


def subscription(raw: Any) -> SubscriptionRequest:
    """A posted R4 Subscription in the backport's shape: criteria = the topic, a rest-hook channel,
    an `application/fhir+json` payload with `id-only` (or `empty`) content."""
    sub: Subscription = validate("Subscription", raw, Subscription)
    issues = Issues()
    if sub.criteria != codes.TOPIC:
        issues.add("Subscription.criteria", f"the topic Parcours publishes: {codes.TOPIC}")
    channel = sub.channel
    if channel.type != "rest-hook":
        issues.add("Subscription.channel.type", "rest-hook (the only channel Parcours delivers on)", "not-supported")
    if not channel.endpoint:
        issues.add("Subscription.channel.endpoint", "the URL notifications are POSTed to", "required")
    if channel.payload not in (None, "application/fhir+json"):
        issues.add("Subscription.channel.payload", "application/fhir+json", "not-supported")
    content_ext = next((e for e in (channel.payload__ext.extension if channel.payload__ext else None) or []
                        if e.url == codes.EXT_PAYLOAD_CONTENT), None)
    content = str(content_ext.valueCode) if content_ext is not None and content_ext.valueCode else "id-only"
    if content not in ("id-only", "empty"):
        issues.add(f"Subscription.channel.payload.extension({codes.EXT_PAYLOAD_CONTENT})",
                   "id-only or empty: a notification never carries content (read the case's Bundle, filtered by consent)",
                   "not-supported")
    heartbeat = extension(channel, codes.EXT_HEARTBEAT)
    headers = []
    for i, line in enumerate(channel.header or []):
        name, sep, value = str(line).partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9-]{1,100}", name.strip()) or not re.fullmatch(r"[\x20-\x7e]{0,4000}", value):
            issues.add(f"Subscription.channel.header[{i}]", "an HTTP header line: Name: value (printable ASCII)")
        else:
            headers.append((name.strip(), value.strip()))
    issues.raise_any()
    period = heartbeat.valueUnsignedInt if heartbeat is not None else None
    if period is not None and not MIN_HEARTBEAT_S <= period <= MAX_HEARTBEAT_S:
        issues.add(f"Subscription.channel.extension({codes.EXT_HEARTBEAT})", f"{MIN_HEARTBEAT_S} to {MAX_HEARTBEAT_S} seconds")
        issues.raise_any()
    return SubscriptionRequest(str(channel.endpoint), content, int(period) if period else None, headers)
