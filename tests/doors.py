"""The behaviour of accepting an event, written once and run over every door: the JSON routes, the
FHIR routes and the Kafka ingress (`publishing.accept` behind each). A door turns an `Attempt` into
what it takes (a request, a resource, a record) and says what became of it: `accepted`, or the
refusal's reason (`forbidden`, `invalid`, `not_found`), as a status or a dead letter's reason.

tests/unit/test_doors.py runs the behaviours on in-memory fakes, tests/integration/test_doors.py
on the real broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from parcours.contract.models import Event, build_event
from parcours.fhir import codes

SENDER, RECIPIENT = "dac-31", "crt-31-muret"  # the world's case: a referral from the DAC to the CRT
OUTSIDER, OTHER_CPTS = "cpts-31-nord", "cpts-31-sud"  # they see nothing of it
PERSON = {"pseudonym": "P-3c9e41", "birth_year": 1937, "postcode": "31600"}
#: an HTTP refusal's status -> the reason a dead letter would carry
REASON_OF_STATUS = {403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid"}


@dataclass(frozen=True)
class World:
    """What each behaviour starts from: a case SENDER opened with a referral to RECIPIENT."""

    case_id: str
    referral_id: str


@dataclass(frozen=True)
class Attempt:
    """A structure asks for an event: its type and the fields the JSON API takes (a referral's
    `case_id`: None for a new case)."""

    publisher: str
    event_type: str
    fields: dict[str, Any] = field(default_factory=dict)
    case_id: str | None = None


@dataclass(frozen=True)
class Behaviour:
    name: str
    attempt: Callable[[World], Attempt]
    outcome: str  # "accepted", or the refusal's reason


def referral(to: str = RECIPIENT, **kw: Any) -> dict[str, Any]:
    return {"to_structure": to, "person": PERSON, "reasons": ["retour à domicile"], "urgency": "soon",
            "summary": "Situation synthétique de test.", **kw}


BEHAVIOURS = [
    Behaviour("a referral opens a new case", lambda w: Attempt(SENDER, "ReferralSubmitted", referral()), "accepted"),
    Behaviour("a referral goes into a case its publisher sees",
              lambda w: Attempt(SENDER, "ReferralSubmitted", referral("crt-31-nord"), w.case_id), "accepted"),
    Behaviour("a referral never slips into someone else's case",
              lambda w: Attempt(OUTSIDER, "ReferralSubmitted", referral("dac-31"), w.case_id), "not_found"),
    Behaviour("a referral to an unknown structure", lambda w: Attempt(SENDER, "ReferralSubmitted", referral("dac-99")), "invalid"),
    Behaviour("the recipient writes into the case", lambda w: Attempt(RECIPIENT, "MessagePosted", {"body": "Visite jeudi."}, w.case_id),
              "accepted"),
    Behaviour("a structure that sees nothing of the case may not write into it",
              lambda w: Attempt(OTHER_CPTS, "MessagePosted", {"body": "Bonjour."}, w.case_id), "not_found"),
    Behaviour("the recipient accepts the referral",
              lambda w: Attempt(RECIPIENT, "ReferralStatusChanged", {"referral_id": w.referral_id, "status": "accepted"}, w.case_id),
              "accepted"),
    Behaviour("only the recipient accepts a referral",
              lambda w: Attempt(SENDER, "ReferralStatusChanged", {"referral_id": w.referral_id, "status": "accepted"}, w.case_id),
              "forbidden"),
    Behaviour("a kind publishes only what the catalogue lets it",
              lambda w: Attempt(OUTSIDER, "AdmissionDecided", {"referral_id": w.referral_id, "decision": "admitted", "volet": 2,
                                                               "start_date": "2026-11-06"}, w.case_id), "forbidden"),
]
IDS = [b.name for b in BEHAVIOURS]


class Door(Protocol):
    async def submit(self, attempt: Attempt) -> str:
        """`accepted`, or the reason of the refusal."""


# --- what each door takes ----------------------------------------------------------------------

def json_request(a: Attempt) -> tuple[str, dict[str, Any]]:
    """The JSON API's path and body for an attempt."""
    if a.event_type == "ReferralSubmitted":
        return "/v1/referrals", {**a.fields, **({"case_id": a.case_id} if a.case_id else {})}
    if a.event_type == "ReferralStatusChanged":
        return f"/v1/referrals/{a.fields['referral_id']}/status", {k: v for k, v in a.fields.items() if k != "referral_id"}
    path = {"MessagePosted": "messages", "AdmissionDecided": "admission-decisions"}[a.event_type]
    return f"/v1/cases/{a.case_id}/{path}", a.fields


def fhir_resource(a: Attempt) -> tuple[str, dict[str, Any]]:
    """The FHIR resource type and resource for an attempt."""
    f, case = a.fields, {"reference": f"EpisodeOfCare/{a.case_id}"}
    if a.event_type == "ReferralSubmitted":
        return "ServiceRequest", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
            "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"system": codes.PSEUDONYM, "value": PERSON["pseudonym"]}],
                           "birthDate": str(PERSON["birth_year"]), "address": [{"postalCode": PERSON["postcode"]}]}],
            "subject": {"reference": "#p"}, "performer": [{"identifier": {"system": codes.STRUCTURE, "value": f["to_structure"]}}],
            "reasonCode": [{"text": r} for r in f["reasons"]], "note": [{"text": f["summary"]}],
            **({"supportingInfo": [case]} if a.case_id else {})}
    if a.event_type == "MessagePosted":
        return "Communication", {"resourceType": "Communication", "status": "completed", "about": [case],
                                 "payload": [{"contentString": f["body"]}]}
    task: dict[str, Any] = {"resourceType": "Task", "intent": "order", "focus": {"reference": f"ServiceRequest/{f['referral_id']}"}}
    if a.event_type == "AdmissionDecided":
        return "Task", {**task, "status": "completed", "executionPeriod": {"start": f["start_date"]},
                        "businessStatus": {"coding": [{"system": codes.ADMISSION, "code": f["decision"]}]},
                        "extension": [{"url": codes.EXT_VOLET, "valueInteger": f["volet"]}]}
    return "Task", {**task, "status": f["status"]}


def ingress_event(a: Attempt) -> Event:
    """The event a Kafka partner writes for an attempt (it chooses every id, a new case's too)."""
    short = uuid.uuid4().hex[:16]
    ids = {"ReferralSubmitted": {"referral_id": f"ref-{short}"}, "MessagePosted": {"message_id": f"msg-{short}"}}.get(a.event_type, {})
    return build_event(a.event_type, {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "source": a.publisher,
                                      "case_id": a.case_id or f"case-{short}", **ids, **a.fields})


def http_outcome(resp: httpx.Response) -> str:
    if resp.status_code == 202:
        return "accepted"
    return REASON_OF_STATUS.get(resp.status_code, f"status {resp.status_code}: {resp.text}")


def auth(slug: str, fhir: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer dev-{slug}"} | ({"content-type": "application/fhir+json"} if fhir else {})
