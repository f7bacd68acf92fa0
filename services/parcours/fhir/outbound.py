"""Parcours as FHIR R4: a structure's view of a case as a Bundle, refusals as OperationOutcome,
notifications in the shape of the Subscriptions backport (handshake, heartbeat, event).

Everything here is built from a view that the processor already filtered by the consent rules
(`casefile/view.py` is their specification): the Bundle holds exactly what the JSON view holds,
in FHIR's words, and nothing else. Each resource is checked as FHIR R4 (4.0.1, `r4.checked`)
before it leaves.
"""

from __future__ import annotations

import html
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from parcours.fhir import codes, definitions, r4
from parcours.fhir.errors import Issue
from parcours.fhir.patient import patient_out

MEDIA_TYPE = "application/fhir+json"
log = logging.getLogger("parcours.fhir")


def outcome(issues: Iterable[Issue]) -> bytes:
    """An OperationOutcome, as bytes ready to send."""
    return _json(resource({"resourceType": "OperationOutcome", "issue": [
        {"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics,
         **({"expression": [i.expression]} if i.expression else {})} for i in issues]}))


def accepted(event_type: str, event_id: str, ids: dict[str, str]) -> bytes:
    """The answer to an accepted resource (202): what became of it, as an informational outcome."""
    said = ", ".join(f"{k} {v}" for k, v in ids.items())
    return outcome([Issue("informational", None, f"accepted as {event_type} {event_id} ({said}); "
                                                   "it shows in the views once processed", severity="information")])


# --- references --------------------------------------------------------------------------------

def ref(resource_type: str, our_id: str) -> dict[str, Any]:
    """A Reference to a Parcours item: literal when FHIR's id syntax holds the id, else by identifier."""
    if codes.fhir_id(our_id):
        return {"reference": f"{resource_type}/{our_id}"}
    return {"type": resource_type, "identifier": {"system": codes.ID_SYSTEM[resource_type], "value": our_id}}


def org(slug: str | None) -> dict[str, Any] | None:
    if not slug:
        return None
    return {"type": "Organization", "identifier": {"system": codes.STRUCTURE, "value": slug}}


def _grantee(grantee: str) -> dict[str, Any]:
    system = codes.KIND if grantee in ("dac", "cpts", "crt") else codes.STRUCTURE
    return {"type": "Organization", "identifier": {"system": system, "value": grantee}}


def _ids(resource_type: str, our_id: str) -> dict[str, Any]:
    """`id` (when FHIR allows it) and the Parcours identifier, which always holds the id."""
    out: dict[str, Any] = {"identifier": [{"system": codes.ID_SYSTEM[resource_type], "value": our_id}]}
    fid = codes.fhir_id(our_id)
    if fid:
        out["id"] = fid
    return out


def _category(code: str) -> dict[str, Any]:
    return {"coding": [{"system": codes.CATEGORY, "code": code}]}


def _note(text: str | None) -> list[dict[str, Any]] | None:
    return [{"text": text}] if text else None


# --- a case as a Bundle -----------------------------------------------------------------------

def case_bundle(view: dict[str, Any], base: str) -> bytes:
    """A structure's view of a case as a `searchset` Bundle: the case (EpisodeOfCare), its
    referrals (ServiceRequest, their statuses and admission decisions as Tasks), evaluations
    (Observation), messages (Communication), consents (Consent) and ruptures (Flag)."""
    case_id = view["case_id"]
    patient = _patient_ref(view)
    builds: list[tuple[str, Any]] = [("case", lambda: _episode(view, patient))]
    for r in view["referrals"]:
        if r.get("from") is not None:
            builds.append((f"referral:{r['referral_id']}", lambda r=r: _service_request(r, case_id)))
        builds += [(f"status:{s['event_id']}", lambda s=s, r=r: _status_task(r["referral_id"], s)) for s in r["status_history"]]
        builds += [(f"admission:{a['event_id']}", lambda a=a, r=r: _admission_task(r["referral_id"], a)) for a in r["admission_history"]]
    builds += [(f"evaluation:{e['evaluation_id']}", lambda e=e: _observation(e, case_id, patient)) for e in view["evaluations"]]
    builds += [(f"message:{m['message_id']}", lambda m=m: _communication(m, case_id, patient)) for m in view["messages"]]
    builds += [(f"consent:{c['consent_id']}", lambda c=c: _consent(c, case_id, patient)) for c in view["consents"]]
    builds += [(f"rupture:{r['rupture_id']}", lambda r=r: _flag(r, patient)) for r in view["ruptures"]]
    entries: list[dict[str, Any]] = []
    for item, build in builds:
        try:
            res = build()
        except ValueError as exc:  # an item FHIR cannot express (a bug here): said, not hidden, not fatal
            log.error("item not expressible in FHIR", extra={"item_kind": item.split(":", 1)[0], "error": type(exc).__name__})
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "search": {"mode": "outcome"}, "resource": resource(
                {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "exception",
                                                                 "diagnostics": f"{item} could not be expressed in FHIR; read it on /v1/cases"}]})})
            continue
        if "id" in res:
            full = f"{base}/{res['resourceType']}/{res['id']}"
        else:  # a searchset's resources have ids: the uuid of its fullUrl (the Parcours id is its identifier)
            full = entry_url(case_id, item)
            res = {"resourceType": res["resourceType"], "id": full.removeprefix("urn:uuid:"), **res}
        entries.append({"fullUrl": full, "resource": res, "search": {"mode": "match" if item == "case" else "include"}})
    bundle = resource({"resourceType": "Bundle", "type": "searchset", "total": 1, "timestamp": _now(),
                       "meta": {"lastUpdated": view["updated_at"]}, "entry": entries,
                       "link": [{"relation": "self", "url": f"{base}/EpisodeOfCare/{quote(case_id, safe='')}/$everything"}]})
    return _json(bundle)


#: the namespace of the entries' urn:uuid fullUrls (an item whose id FHIR's id syntax cannot hold)
_ENTRY_NS = uuid.UUID("b8f3c1d2-6a4e-5f70-9c2b-1d3e5f7a9b0c")


def entry_url(case_id: str, item: str) -> str:
    """The fullUrl of an item FHIR cannot name by id: the same for the same item of the same case
    in every Bundle, and another in every other case."""
    return f"urn:uuid:{uuid.uuid5(_ENTRY_NS, case_id + chr(10) + item)}"


def episode(view: dict[str, Any]) -> bytes:
    """The case alone (`GET /fhir/r4/EpisodeOfCare/<case>`): what a notification's focus names."""
    return _json(_episode(view, _patient_ref(view)))


def _patient_ref(view: dict[str, Any]) -> dict[str, Any]:
    """The person by pseudonym when a referral the structure sees names it; otherwise a display."""
    for r in view["referrals"]:
        person = r.get("person")
        if person:
            return {"type": "Patient", "identifier": {"system": codes.PSEUDONYM, "value": person["pseudonym"]}}
    return {"display": _HIDDEN}


#: the person of a case whose referral the reader does not see: named by nothing
_HIDDEN = "the person of the case (not disclosed to this structure)"

def _episode(view: dict[str, Any], patient: dict[str, Any]) -> dict[str, Any]:
    return resource({
        "resourceType": "EpisodeOfCare", **_ids("EpisodeOfCare", view["case_id"]), "status": "active", "patient": patient,
        "meta": {"versionId": str(view["version"]), "lastUpdated": view["updated_at"]}})


def _service_request(r: dict[str, Any], case_id: str) -> dict[str, Any]:
    person = r["person"]
    context = r.get("context")
    ext = [{"url": codes.EXT_CONTEXT, "extension": [{"url": "type", "valueCode": context["type"]}] + (
        [{"url": "date", "valueDate": context["date"]}] if context.get("date") else [])}] if context else None
    return resource({
        "resourceType": "ServiceRequest", **_ids("ServiceRequest", r["referral_id"]),
        "status": codes.REQUEST_OF_STATUS.get(r.get("status"), "active"), "intent": "order",
        "priority": codes.PRIORITY_OF_URGENCY[r["urgency"]],
        "contained": [patient_out(person)],
        "subject": {"reference": "#person"}, "requester": org(r["from"]), "performer": [org(r["to"])],
        "reasonCode": [{"text": t} for t in r["reasons"]], "note": _note(r["summary"]), "authoredOn": r["at"],
        "supportingInfo": [ref("EpisodeOfCare", case_id)], "extension": ext})


def _status_task(referral_id: str, s: dict[str, Any]) -> dict[str, Any]:
    business = {"coding": [{"system": codes.REFERRAL_STATUS, "code": s["status"]}]}
    return resource({
        "resourceType": "Task", **_ids("Task", s["event_id"]), "status": codes.TASK_OF_STATUS[s["status"]],
        "businessStatus": business, "intent": "order", "focus": ref("ServiceRequest", referral_id),
        "statusReason": {"text": s["reason"]} if s.get("reason") else None, "authoredOn": s["at"],
        "requester": org(s["by"]), "owner": org(s.get("redirect_to"))})


def _admission_task(referral_id: str, a: dict[str, Any]) -> dict[str, Any]:
    return resource({
        "resourceType": "Task", **_ids("Task", a["event_id"]), "status": "completed", "intent": "order",
        "businessStatus": {"coding": [{"system": codes.ADMISSION, "code": a["decision"]}]},
        "focus": ref("ServiceRequest", referral_id), "authoredOn": a["at"], "owner": org(a["by"]),
        "executionPeriod": {"start": a["start_date"]} if a.get("start_date") else None,
        "note": [{"text": t} for t in a["reasons"]] or None,
        "output": [{"type": {"coding": [{"system": codes.ADMISSION_OUTPUT, "code": "alternative"}]},
                    "valueReference": org(a["alternative"])}] if a.get("alternative") else None,
        "extension": [{"url": codes.EXT_VOLET, "valueInteger": a["volet"]}]})


#: the consent's grantee: who may read what it permits (HL7 v3 ParticipationType, in FHIR's SecurityRoleType)
_GRANTEE_ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP",
                             "display": "information recipient"}]}
#: an evaluation's result left empty (the JSON API takes ""): present in the grid, its value not known
_EMPTY_RESULT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown", "display": "Unknown"}],
                 "text": "empty"}
#: an evaluation is an assessment instrument (FHIR's observation-category), besides its Parcours category
_SURVEY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey", "display": "Survey"}


def _observation(e: dict[str, Any], case_id: str, patient: dict[str, Any]) -> dict[str, Any]:
    gir = e.get("gir")
    value = {"valueCodeableConcept": {"coding": [{"system": codes.CISIS, "code": codes.GIR_CODE[gir], "display": f"GIR {gir}"}]}} if gir else {}
    return resource({
        "resourceType": "Observation", **_ids("Observation", e["evaluation_id"]), "status": "final",
        "category": [_category(e["category"]), {"coding": [_SURVEY]}], "code": {"coding": [{"system": codes.EVALUATION_TYPE, "code": e["type"]}]},
        "subject": patient if "identifier" in patient else None, "focus": [ref("EpisodeOfCare", case_id)],
        "effectiveDateTime": e["at"], "performer": [org(e["by"])], **value,
        "component": [{"code": {"text": k}, **({"valueString": v} if v else {"dataAbsentReason": _EMPTY_RESULT})}
                      for k, v in e["results"].items()] or None})


def _communication(m: dict[str, Any], case_id: str, patient: dict[str, Any]) -> dict[str, Any]:
    return resource({
        "resourceType": "Communication", **_ids("Communication", m["message_id"]), "status": "completed",
        "category": [_category(m["category"])], "subject": patient if "identifier" in patient else None,
        "about": [ref("EpisodeOfCare", case_id)], "sent": m["at"], "sender": org(m["by"]),
        "inResponseTo": [ref("Communication", m["reply_to"])] if m.get("reply_to") else None,
        "payload": [{"contentString": m["body"]}]})


def _consent(c: dict[str, Any], case_id: str, patient: dict[str, Any]) -> dict[str, Any]:
    return resource({
        "resourceType": "Consent", **_ids("Consent", c["consent_id"]), "status": "active" if c.get("active", True) else "inactive",
        "scope": {"coding": [{"system": codes.CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}]}],
        "patient": patient,
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTIN" if c["decision"] == "permit" else "OPTOUT"}]},
        "dateTime": c["at"], "performer": [org(c["by"])],
        "extension": [{"url": codes.EXT_METHOD, "valueCode": c["method"]}],
        "provision": {"type": c["decision"], "actor": [{"role": _GRANTEE_ROLE, "reference": _grantee(c["grantee"])}],
                      "class": [{"system": codes.CATEGORY, "code": k} for k in c["categories"]],
                      "period": {"end": c["valid_until"]} if c.get("valid_until") else None,
                      "data": [{"meaning": "related", "reference": ref("EpisodeOfCare", case_id)}]}})


def _flag(r: dict[str, Any], patient: dict[str, Any]) -> dict[str, Any]:
    return resource({
        "resourceType": "Flag", **_ids("Flag", r["rupture_id"]), "status": "active",
        "category": [{"text": "care-pathway rupture"}], "code": {"coding": [{"system": codes.RUPTURE_TYPE, "code": r["type"]}],
                                                                 "text": r["description"]},
        "subject": patient if "identifier" in patient else {"type": "Location", "display": f"territory {r['territory']}"},
        "period": {"start": r["at"]}, "author": org(r["by"])})


# --- what the server does ----------------------------------------------------------------------

def capability_statement(kind: str, base: str, version: str) -> bytes:
    """The CapabilityStatement of one adapter's FHIR entry point (`GET /fhir/r4/metadata`)."""
    posted = [{"type": t, "interaction": [{"code": "create"}]}
              for t in ("ServiceRequest", "Task", "Consent", "Communication", "Observation", "Subscription")]
    # $everything on EpisodeOfCare is standard from R5 on; in R4 it is this server's own operation
    episode = {"type": "EpisodeOfCare", "interaction": [{"code": "read"}],
               "operation": [{"name": "everything", "definition": "urn:parcours:OperationDefinition:EpisodeOfCare-everything"}]}
    published = [{"type": t, "interaction": [{"code": "read"}], "documentation": "Parcours' own: " + ", ".join(
        f"{d['url']} ({d['id']})" for d in definitions.all_definitions() if d["resourceType"] == t)}
        for t in definitions.PUBLISHED]
    statement = resource({
        "resourceType": "CapabilityStatement", "status": "active", "date": _now(), "kind": "instance",
        "name": f"Parcours{kind.upper()}Adapter", "title": f"Parcours {kind.upper()} adapter, FHIR R4 bridge",
        "software": {"name": "Parcours", "version": version}, "implementation": {"description": f"Parcours {kind.upper()} adapter", "url": base},
        "fhirVersion": "4.0.1", "format": [MEDIA_TYPE, "json"],
        "rest": [{"mode": "server", "security": {"description": "Authorization: Bearer <the structure's token>"},
                  "resource": [*posted, episode, *published]}]})
    return _json(statement)


# --- notifications (Subscriptions backport, id-only) ---------------------------------------

def subscription_answer(sub_id: str, base: str, endpoint: str, content: str, heartbeat_s: int | None, secret: str) -> bytes:
    """The Subscription as registered (active), with the signing secret of the notifications."""
    payload_ext = {"extension": [{"url": codes.EXT_PAYLOAD_CONTENT, "valueCode": content}]}
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "payload": MEDIA_TYPE, "_payload": payload_ext}
    if heartbeat_s:
        channel["extension"] = [{"url": codes.EXT_HEARTBEAT, "valueUnsignedInt": heartbeat_s}]
    sub = resource({
        "resourceType": "Subscription", "id": sub_id, "status": "active", "criteria": codes.TOPIC,
        "reason": "Parcours case changes visible to the subscriber", "channel": channel,
        "meta": {"profile": [codes.BACKPORT + "backport-subscription"]},
        "extension": [{"url": codes.EXT_SECRET, "valueString": secret}]})
    return _json(sub)


def notification(kind: str, subscription: str, base: str, since_start: int, note: dict[str, Any] | None = None,
                 content: str = "id-only") -> bytes:
    """A backport notification Bundle: `handshake`, `heartbeat` or `event-notification` (then
    `note` is the Parcours notification, its event number counted from the subscription's start)."""
    sub_url = f"{base}/Subscription/{subscription}"
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": sub_url}},
        {"name": "topic", "valueCanonical": codes.TOPIC},
        {"name": "status", "valueCode": "requested" if kind == "handshake" else "active"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(since_start)},
    ]
    entries: list[dict[str, Any]] = []
    if note is not None:
        event: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(since_start)}]
        if content == "id-only":
            focus = _focus(note, base)
            event.append({"name": "focus", "valueReference": {"reference": focus}})
            entries.append({"fullUrl": focus, "request": {"method": "PUT", "url": focus.removeprefix(base + "/")},
                            "response": {"status": "200"}})
        params.append({"name": "notification-event", "part": event})
    status = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource(
        {"resourceType": "Parameters", "meta": {"profile": [codes.STATUS_PROFILE]}, "parameter": params}),
        "request": {"method": "GET", "url": f"Subscription/{subscription}/$status"}, "response": {"status": "200"}}
    bundle = resource({"resourceType": "Bundle", "type": "history", "timestamp": _now(),
                                    "meta": {"profile": [codes.NOTIFICATION_PROFILE]}, "entry": [status, *entries]})
    return _json(bundle)


def _focus(note: dict[str, Any], base: str) -> str:
    """What changed: the case (`EpisodeOfCare/<case_id>`; its Bundle is `.../$everything`). A
    notification names items, and the item may just have left the view (a redaction): the case
    is what to read. (A case id FHIR's id syntax cannot hold is written as it is: the server
    resolves it.)"""
    return f"{base}/EpisodeOfCare/{note['case_id']}"


def resource(raw: dict[str, Any]) -> dict[str, Any]:
    """A resource Parcours writes: its absent elements (None, empty) left out, a minimal generated
    narrative, checked as FHIR R4 (ValueError if it is not: a bug, reported where it was to go)."""
    out: dict[str, Any] = _pruned(raw)
    if out["resourceType"] not in _NOT_DOMAIN and "text" not in out:
        out = {"resourceType": out["resourceType"], **({"id": out["id"]} if "id" in out else {}), "text": _narrative(out), **out}
    return r4.checked(out)


_NOT_DOMAIN = frozenset({"Bundle", "Parameters", "Binary"})


def _narrative(raw: dict[str, Any]) -> dict[str, str]:
    """What the resource is, in a line or two of XHTML, from its own elements only (a narrative
    says nothing the resource does not)."""
    ident = raw.get("id") or next((i["value"] for i in raw.get("identifier") or [] if i.get("value")), None)
    lines = [" ".join(str(x) for x in (raw["resourceType"], ident) if x)]
    lines += [f"{key}: {raw[key]}" for key in ("title", "status", "intent", "priority", "criteria", "url") if isinstance(raw.get(key), str)]
    for key in ("code", "businessStatus"):
        coded = [c["code"] for c in (raw.get(key) or {}).get("coding") or [] if c.get("code")]
        if coded:
            lines.append(f"{key}: {', '.join(coded)}")
    lines += [f"{i['severity']}: {i.get('diagnostics') or i['code']}" for i in raw.get("issue") or []]
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None and v not in ([], {})}
    if isinstance(value, list):
        return [v for v in (_pruned(x) for x in value) if v is not None and v != {}]
    return value


def _json(raw: dict[str, Any]) -> bytes:
    return orjson.dumps(raw)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
