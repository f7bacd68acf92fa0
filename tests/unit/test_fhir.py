"""The FHIR R4 bridge without Kafka: each resource onto its event, each refusal naming its element
and rule as an OperationOutcome, a view as a Bundle (what the consent rules let through, no more),
and notifications in the Subscriptions backport's shape."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from parcours.adapters.http.app import create_app
from parcours.bootstrap import build_adapter
from parcours.bus.kafkaio import KafkaAccess
from parcours.casefile.policy import Policy, Viewer
from parcours.casefile.state import fold_all
from parcours.casefile.view import project
from parcours.contract.models import build_event
from parcours.fhir import codes, inbound, outbound, r4
from parcours.fhir.errors import FhirError
from parcours.security.sealing import Sealer
from parcours.topology.catalogue import Catalogue
from tests.factories import T0, ev

NOW = T0 + timedelta(days=1)
POLICY = Policy({"cpts": frozenset({"social", "medical", "functional"})})
CASE = {"reference": "EpisodeOfCare/case-1"}


def _given(resource: dict[str, Any]) -> dict[str, Any]:
    """A sample with the elements set to None left out (FHIR JSON has no null)."""
    return {k: v for k, v in resource.items() if v is not None}


def service_request(**kw: Any) -> dict[str, Any]:
    return _given({"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
            "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"system": codes.PSEUDONYM, "value": "P-3c9e41"}],
                           "birthDate": "1937", "address": [{"postalCode": "31600"}]}],
            "subject": {"reference": "#p"}, "performer": [{"identifier": {"system": codes.STRUCTURE, "value": "crt-31-muret"}}],
            "reasonCode": [{"text": "retour à domicile"}], "note": [{"text": "Sortie d'hospitalisation."}], **kw})


def task(**kw: Any) -> dict[str, Any]:
    return _given({"resourceType": "Task", "status": "received", "intent": "order", "focus": {"reference": "ServiceRequest/ref-1"}, **kw})


def consent(**kw: Any) -> dict[str, Any]:
    provision = {"type": "permit", "actor": [{"role": {"text": "grantee"}, "reference": {"identifier": {"system": codes.KIND, "value": "crt"}}}],
                 "class": [{"system": codes.CATEGORY, "code": "discussion"}], "data": [{"meaning": "related", "reference": CASE}]}
    return _given({"resourceType": "Consent", "status": "active", "scope": {"coding": [{"system": codes.CONSENT_SCOPE, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "extension": [{"url": codes.EXT_METHOD, "valueCode": "oral"}], "provision": provision, **kw})


def communication(**kw: Any) -> dict[str, Any]:
    return _given({"resourceType": "Communication", "status": "completed", "about": [CASE], "payload": [{"contentString": "Bonjour."}], **kw})


def observation(**kw: Any) -> dict[str, Any]:
    return _given({"resourceType": "Observation", "status": "final", "focus": [CASE],
            "code": {"coding": [{"system": codes.EVALUATION_TYPE, "code": "aggir"}]}, "valueInteger": 3,
            "component": [{"code": {"text": "transferts"}, "valueString": "B"}], **kw})


# --- resources in ------------------------------------------------------------------------------

def test_a_service_request_is_a_referral_of_a_pseudonymous_person() -> None:
    got = inbound.parse("ServiceRequest", service_request(supportingInfo=[CASE]))
    assert got.event_type == "ReferralSubmitted"
    assert got.case_id == "case-1"
    assert got.fields == {"to_structure": "crt-31-muret", "person": {"pseudonym": "P-3c9e41", "birth_year": 1937, "postcode": "31600"},
                          "reasons": ["retour à domicile"], "urgency": "soon", "summary": "Sortie d'hospitalisation."}


@pytest.mark.parametrize(("priority", "urgency"), [("routine", "routine"), ("urgent", "soon"), ("asap", "urgent"), ("stat", "urgent")])
def test_priority_maps_onto_urgency(priority: str, urgency: str) -> None:
    assert inbound.parse("ServiceRequest", service_request(priority=priority)).fields["urgency"] == urgency


def test_tasks_are_statuses_redirections_and_admission_decisions() -> None:
    assert inbound.parse("Task", task(statusReason={"text": "reçu"})).fields == {
        "referral_id": "ref-1", "status": "acknowledged", "reason": "reçu", "redirect_to": None}
    redirect = inbound.parse("Task", task(status="rejected", owner={"identifier": {"system": codes.STRUCTURE, "value": "crt-31-nord"}},
                                          businessStatus={"coding": [{"system": codes.REFERRAL_STATUS, "code": "redirected"}]}))
    assert (redirect.fields["status"], redirect.fields["redirect_to"]) == ("redirected", "crt-31-nord")
    admission = inbound.parse("Task", task(status="completed", executionPeriod={"start": "2026-12-01"},
                                           businessStatus={"coding": [{"system": codes.ADMISSION, "code": "refused"}]},
                                           extension=[{"url": codes.EXT_VOLET, "valueInteger": 2}], note=[{"text": "hors secteur"}]))
    assert admission.event_type == "AdmissionDecided"
    assert admission.fields == {"referral_id": "ref-1", "decision": "refused", "volet": 2, "start_date": "2026-12-01",
                                "reasons": ["hors secteur"]}
    alternative = {"type": {"coding": [{"system": codes.ADMISSION_OUTPUT, "code": "alternative"}]},
                   "valueReference": {"identifier": {"system": codes.STRUCTURE, "value": "crt-31-nord"}}}
    proposed = inbound.parse("Task", task(status="completed", output=[alternative], note=[{"text": "hors secteur"}],
                                          businessStatus={"coding": [{"system": codes.ADMISSION, "code": "refused"}]},
                                          extension=[{"url": codes.EXT_VOLET, "valueInteger": 2}]))
    assert proposed.fields["alternative"] == "crt-31-nord"  # a refusal with an alternative: no rupture counted


def test_a_refusals_alternative_goes_out_as_the_tasks_output() -> None:
    from parcours.fhir.outbound import _admission_task

    entry = {"event_id": "e-1", "decision": "refused", "volet": 2, "start_date": None, "reasons": ["hors secteur"],
             "alternative": "crt-31-nord", "by": "crt-31-muret", "at": "2026-11-30T10:00:00Z"}
    out = _admission_task("ref-1", entry)
    assert out["output"] == [{"type": {"coding": [{"system": codes.ADMISSION_OUTPUT, "code": "alternative"}]},
                              "valueReference": {"type": "Organization", "identifier": {"system": codes.STRUCTURE, "value": "crt-31-nord"}}}]
    assert "output" not in _admission_task("ref-1", {**entry, "alternative": None})


def test_consent_communication_and_observation() -> None:
    c = inbound.parse("Consent", consent())
    assert (c.event_type, c.case_id) == ("ConsentRecorded", "case-1")
    assert c.fields == {"grantee": "crt", "categories": ["discussion"], "decision": "permit", "valid_until": None, "method": "oral"}
    m = inbound.parse("Communication", communication(inResponseTo=[{"reference": "Communication/msg-0"}]))
    assert m.fields == {"body": "Bonjour.", "reply_to": "msg-0"}
    o = inbound.parse("Observation", observation())
    assert o.fields == {"type": "aggir", "results": {"transferts": "B"}, "gir": 3}
    coded = observation(valueInteger=None, valueCodeableConcept={"coding": [{"system": codes.CISIS, "code": "MED-344"}]})
    assert inbound.parse("Observation", coded).fields["gir"] == 6


def _issues(resource_type: str, raw: dict[str, Any]) -> list[tuple[str, str | None]]:
    with pytest.raises(FhirError) as caught:
        inbound.parse(resource_type, raw)
    return [(i.code, i.expression) for i in caught.value.issues]


def _patient(**kw: Any) -> dict[str, Any]:
    sr = service_request()
    sr["contained"][0].update(kw)
    return sr


#: one resource per rule of the bridge: (type, resource, the element named, the issue's code)
RULES: list[tuple[str, dict[str, Any], str, str]] = [
    ("ServiceRequest", service_request(status="draft"), "ServiceRequest.status", "invalid"),
    ("ServiceRequest", service_request(intent="proposal"), "ServiceRequest.intent", "invalid"),
    ("ServiceRequest", service_request(performer=None), "ServiceRequest.performer", "required"),
    ("ServiceRequest", service_request(subject={"reference": "Patient/123"}, contained=None), "ServiceRequest.subject", "required"),
    ("ServiceRequest", _patient(name=[{"family": "Martin"}]), "Patient.name", "security"),
    ("ServiceRequest", _patient(birthDate="1937-03-02"), "Patient.birthDate", "invalid"),
    ("ServiceRequest", _patient(identifier=[{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1370299999999"}]), "Patient.identifier", "invalid"),
    ("ServiceRequest", _patient(address=[{"postalCode": "31600", "line": ["3 rue des Lilas"]}]), "Patient.address", "invalid"),
    ("ServiceRequest", service_request(bogus=1), "ServiceRequest.bogus", "structure"),
    ("Task", task(focus=None), "Task.focus", "required"),
    ("Task", task(status="in-progress"), "Task.status", "code-invalid"),
    ("Task", task(businessStatus={"coding": [{"system": codes.REFERRAL_STATUS, "code": "redirected"}]}), "Task.status", "invalid"),
    ("Consent", consent(status="proposed"), "Consent.status", "invalid"),
    ("Consent", consent(scope={"coding": [{"system": codes.CONSENT_SCOPE, "code": "research"}]}), "Consent.scope", "invalid"),
    ("Consent", consent(provision={"type": "permit", "data": [{"meaning": "related", "reference": CASE}]}), "Consent.provision.actor", "required"),
    ("Consent", consent(provision={"type": "permit", "actor": [{"role": {"text": "g"}, "reference": {"identifier": {"system": codes.KIND, "value": "crt"}}}]}),
     "Consent.provision.data", "required"),
    ("Communication", communication(about=None), "Communication.about", "required"),
    ("Communication", communication(payload=[{"contentString": "a"}, {"contentString": "b"}]), "Communication.payload", "required"),
    ("Communication", communication(inResponseTo=[{"reference": "Patient/1"}]), "Communication.inResponseTo", "invalid"),
    ("Observation", observation(code={"text": "grille"}), "Observation.code", "required"),
    ("Observation", observation(valueInteger=None, valueCodeableConcept={"coding": [{"system": codes.CISIS, "code": "MED-1"}]}),
     "Observation.valueCodeableConcept", "invalid"),
    ("Observation", observation(component=[{"code": {"text": "a"}}]), "Observation.component[0]", "invalid"),
    # what would be lost or misread rather than refused
    ("Consent", consent(provision={**consent()["provision"], "period": {"end": "2031"}}), "Consent.provision.period.end", "invalid"),
    ("Consent", consent(provision={**consent()["provision"], "period": {"end": "2031-01-01"}}), "Consent.provision.period.end", "invalid"),
    ("Consent", consent(provision={**consent()["provision"], "provision": [{"type": "deny", "class": [{"system": codes.CATEGORY, "code": "discussion"}]}]}),
     "Consent.provision.provision", "not-supported"),
    ("Consent", consent(provision={**consent()["provision"], "period": {"start": "2030-01-01T00:00:00Z"}}), "Consent.provision.period.start", "not-supported"),
    ("Communication", communication(modifierExtension=[{"url": "urn:x", "valueBoolean": True}]), "Communication.modifierExtension", "not-supported"),
    ("Communication", communication(status="entered-in-error"), "Communication.status", "invalid"),
    ("Communication", communication(category=[{"coding": [{"system": codes.CATEGORY, "code": "administrative"},
                                                          {"system": codes.CATEGORY, "code": "medical"}]}]), "Communication.category", "invalid"),
    ("Observation", observation(valueInteger=None, valueString="GIR 3"), "Observation.valueString", "invalid"),
    ("ServiceRequest", _patient(gender="female"), "Patient.gender", "security"),
    ("ServiceRequest", service_request(contained=[*service_request()["contained"], {"resourceType": "RelatedPerson", "id": "r",
                                                                                    "patient": {"reference": "#p"}, "name": [{"family": "Martin"}]}],
                                      supportingInfo=[{"reference": "#r"}]),
     "ServiceRequest.contained[1]", "security"),
    ("Task", task(status="completed", executionPeriod={"start": "2026"}, extension=[{"url": codes.EXT_VOLET, "valueInteger": 2}],
                  businessStatus={"coding": [{"system": codes.ADMISSION, "code": "admitted"}]}), "Task.executionPeriod.start", "invalid"),
]


_SUBSCRIPTION_STATUS = {"resourceType": "SubscriptionStatus", "id": "s", "status": "active", "type": "event-notification",
                        "topic": codes.TOPIC}
_MASKED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "MASKED"}
_DATA_ABSENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "asked-declined"}]}

#: what FHIR R4 itself refuses, before any rule of the bridge (its structure, its invariants, its required codes)
R4_RULES: list[tuple[str, dict[str, Any], str, str]] = [
    # an R4B-only resource, contained
    ("ServiceRequest", service_request(contained=[*service_request()["contained"], _SUBSCRIPTION_STATUS], supportingInfo=[{"reference": "#s"}]),
     "ServiceRequest.contained[1]", "structure"),
    ("Observation", observation(dataAbsentReason=_DATA_ABSENT), "Observation.dataAbsentReason", "invalid"),  # obs-6
    ("Communication", communication(extension=[{"url": "urn:x", "valueString": "v", "extension": [{"url": "a", "valueString": "b"}]}]),
     "Communication.extension[0]", "invalid"),  # ext-1
    ("Communication", communication(extension=[{"url": "urn:x"}]), "Communication.extension[0]", "invalid"),  # ext-1
    ("ServiceRequest", service_request(contained=[*service_request()["contained"], {"resourceType": "Organization", "id": "o", "name": "x"}]),
     "ServiceRequest.contained[1]", "invalid"),  # dom-3
    ("Consent", consent(policyRule=None), "Consent.policyRule", "required"),  # ppc-1
    ("Consent", consent(patient={"reference": "#p"}, contained=[{"resourceType": "Patient", "id": "p", "meta": {"security": [_MASKED]}}]),
     "Consent.contained[0].meta.security", "invalid"),  # dom-5
    ("Communication", communication(subject={"reference": "#nobody"}), "Communication.subject.reference", "invalid"),  # ref-1
    ("Communication", communication(about=[{}]), "Communication.about[0]", "invalid"),  # ele-1
    ("Communication", communication(priority="soon"), "Communication.priority", "code-invalid"),
    ("Communication", communication(payload=[]), "Communication.payload", "value"),  # no empty array in FHIR JSON
    ("Communication", communication(sent="2026-11-02T10:00:00"), "Communication.sent", "value"),  # a time needs its zone
    ("Consent", consent(provision={**consent()["provision"], "period": {"start": "2031-01-01", "end": "2030-01-01"}}),
     "Consent.provision.period", "invalid"),  # per-1
    ("Task", task(authoredOn="2026-11-02", lastModified="2026-11-01"), "Task.lastModified", "invalid"),  # inv-1
    ("Observation", observation(valueInteger=None, valueDecimal=3.5), "Observation.valueDecimal", "structure"),  # not an R4 value[x]
]


@pytest.mark.parametrize(("resource_type", "raw", "expression", "code"), R4_RULES)
def test_what_fhir_r4_refuses_is_refused_naming_the_element(resource_type: str, raw: dict[str, Any], expression: str, code: str) -> None:
    assert (code, expression) in _issues(resource_type, raw)


@pytest.mark.parametrize(("resource_type", "raw", "expression", "code"), RULES)
def test_each_rule_is_refused_naming_the_element(resource_type: str, raw: dict[str, Any], expression: str, code: str) -> None:
    assert (code, expression) in _issues(resource_type, raw)


def test_a_consent_end_is_an_instant_with_its_zone() -> None:
    got = inbound.parse("Consent", consent(provision={**consent()["provision"], "period": {"end": "2031-01-01T00:00:00+01:00"}}))
    assert got.fields["valid_until"] == "2031-01-01T00:00:00+01:00"


def test_odd_but_parseable_input_is_refused_never_a_crash() -> None:
    unknown_contained = service_request(contained=[{"resourceType": "Foo", "id": "x"}])
    with pytest.raises(FhirError):
        inbound.parse("ServiceRequest", unknown_contained)
    deep: dict[str, Any] = {"url": "urn:x", "valueString": "v"}
    for _ in range(400):
        deep = {"url": "urn:x", "extension": [deep]}
    with pytest.raises(FhirError):
        inbound.parse("Communication", communication(extension=[deep]))
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "r", "criteria": codes.TOPIC,
           "channel": {"type": "rest-hook", "endpoint": "https://p.example/h", "header": ["Authorization: Bearer é"]}}
    with pytest.raises(FhirError) as caught:
        inbound.subscription(sub)
    assert caught.value.issues[0].expression == "Subscription.channel.header[0]"


def test_what_the_contract_refuses_is_named_by_its_element() -> None:
    parsed = inbound.parse("ServiceRequest", _patient(address=[{"postalCode": "3160"}]))
    assert parsed.expression("person.postcode") == "Patient.address.postalCode"
    assert parsed.expression("reasons.0") == "ServiceRequest.reasonCode.0"
    assert parsed.expression("unmapped") == "unmapped"


def test_another_resource_type_or_not_an_object_is_unreadable() -> None:
    unreadable: list[Any] = [[], "x", {"resourceType": "Patient"}]
    for raw in unreadable:
        with pytest.raises(FhirError) as caught:
            inbound.parse("Consent", raw)
        assert caught.value.status == 400


# --- a view out, and back in -------------------------------------------------------------------

def _case_events() -> list[Any]:
    return [
        ev("ReferralSubmitted", at=0),
        ev("ReferralStatusChanged", source="crt-31-muret", at=1),
        ev("AdmissionDecided", source="crt-31-muret", at=2),
        ev("EvaluationRecorded", category="medical", evaluation_id="eval-med", at=3),
        ev("ConsentRecorded", categories=["discussion"], grantee="crt", at=4),
        ev("MessagePosted", at=5, reply_to="msg-0"),
        ev("RuptureReported", at=6),
    ]


def _bundle(events: list[Any], viewer: Viewer, case_id: str = "case-1") -> dict[str, Any]:
    view = project(fold_all(case_id, events), viewer, POLICY, NOW)
    assert view is not None
    raw = outbound.case_bundle(view, "https://edge/fhir/r4")
    out: dict[str, Any] = json.loads(raw)
    assert r4.issues(out) == []  # a valid R4 Bundle
    return out


def _resources(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for e in bundle["entry"]:
        by.setdefault(e["resource"]["resourceType"], []).append(e["resource"])
    return by


def test_the_bundle_holds_what_the_view_holds_and_reads_back_as_the_same_events() -> None:
    events = _case_events()
    res = _resources(_bundle(events, Viewer("dac-31", "dac")))
    assert {k: len(v) for k, v in res.items()} == {"EpisodeOfCare": 1, "ServiceRequest": 1, "Task": 2, "Observation": 1,
                                                    "Consent": 1, "Communication": 1, "Flag": 1}
    back = {"ServiceRequest": res["ServiceRequest"][0], "Observation": res["Observation"][0], "Consent": res["Consent"][0],
            "Communication": res["Communication"][0]}
    originals = {e.event_type: e for e in events}
    for resource_type, resource in back.items():
        parsed = inbound.parse(resource_type, resource)
        original = originals[parsed.event_type]
        item = {original.item_field: original.item_id}
        rebuilt = build_event(parsed.event_type, {**parsed.fields, **item, "case_id": "case-1", "event_id": original.event_id,
                                                  "occurred_at": original.occurred_at, "source": original.source})
        assert rebuilt == original, resource_type
    for t in res["Task"]:
        parsed = inbound.parse("Task", t)
        original = originals[parsed.event_type]
        rebuilt = build_event(parsed.event_type, {**parsed.fields, "case_id": "case-1", "event_id": original.event_id,
                                                  "occurred_at": original.occurred_at, "source": original.source})
        assert rebuilt == original


def test_an_empty_result_and_a_hidden_person_still_make_a_valid_bundle() -> None:
    """An empty result (the JSON API takes it) is a component without value; a consent whose
    reader may not know the person names it by a display alone, as the case does (no contained
    stand-in: a contained resource may not carry the security label that would say so, dom-5)."""
    events = [ev("EvaluationRecorded", results={"adl": ""}, category="discussion", at=1),
              ev("ConsentRecorded", categories=["discussion"], grantee="cpts-31-nord", at=0)]
    res = _resources(_bundle(events, Viewer("cpts-31-nord", "cpts")))
    component = res["Observation"][0]["component"][0]
    assert "valueString" not in component
    assert inbound.parse("Observation", {**res["Observation"][0], "focus": [CASE]}).fields["results"] == {"adl": ""}
    masked = res["Consent"][0]
    assert masked["patient"] == res["EpisodeOfCare"][0]["patient"]
    assert "identifier" not in masked["patient"]
    assert "contained" not in masked
    assert masked["policyRule"]["coding"][0]["code"] == "OPTIN"


def test_the_bundle_obeys_the_consent_rules() -> None:
    """The CRT, recipient of the referral, was given discussions by consent: it sees the referral,
    its status and decision, the consent and the message, not the DAC's medical evaluation nor
    the rupture."""
    res = _resources(_bundle(_case_events(), Viewer("crt-31-muret", "crt")))
    assert "Observation" not in res
    assert "Flag" not in res
    assert [c["payload"][0]["contentString"] for c in res["Communication"]] == ["Visite à domicile prévue jeudi."]
    assert "eval-med" not in json.dumps(res)


def test_a_person_the_structure_may_not_see_is_not_named() -> None:
    events = [ev("MessagePosted", at=5), ev("ConsentRecorded", categories=["discussion"], grantee="cpts-31-nord", at=4)]
    res = _resources(_bundle(events, Viewer("cpts-31-nord", "cpts")))
    assert "identifier" not in res["EpisodeOfCare"][0]["patient"]
    assert "P-7f3a9c" not in json.dumps(res)


# --- notifications -----------------------------------------------------------------------------

def test_notifications_are_backport_bundles_with_ids_only() -> None:
    note = {"notification_id": "case-1:message:msg-1:item_visible:3", "type": "item_visible", "case_id": "case-1",
            "item": "message:msg-1", "view_version": 3, "sequence": 12}
    raw = outbound.notification("event-notification", "sub-crt-31-muret", "https://edge/fhir/r4", 4, note)
    bundle = json.loads(raw)
    assert r4.issues(bundle) == []
    assert bundle["type"] == "history"
    assert bundle["meta"]["profile"] == [codes.NOTIFICATION_PROFILE]
    status = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert status["type"]["valueCode"] == "event-notification"
    assert status["events-since-subscription-start"]["valueString"] == "4"
    event = {p["name"]: p for p in status["notification-event"]["part"]}
    assert event["event-number"]["valueString"] == "4"
    assert event["focus"]["valueReference"]["reference"] == "https://edge/fhir/r4/EpisodeOfCare/case-1"
    assert "msg-1" not in json.dumps(bundle["entry"][1:])  # id-only: the case to read, nothing of the item
    handshake = json.loads(outbound.notification("handshake", "sub-x", "https://edge/fhir/r4", 0))
    assert [p["name"] for p in handshake["entry"][0]["resource"]["parameter"]] == [
        "subscription", "topic", "status", "type", "events-since-subscription-start"]
    assert len(handshake["entry"]) == 1


SUBSCRIPTION: dict[str, Any] = {
    "resourceType": "Subscription", "status": "requested", "reason": "r", "criteria": codes.TOPIC,
    "channel": {"type": "rest-hook", "endpoint": "https://partner.example/hook", "payload": "application/fhir+json",
                "header": ["Authorization: Bearer abc"], "extension": [{"url": codes.EXT_HEARTBEAT, "valueUnsignedInt": 30}]}}


def test_a_subscription_is_a_rest_hook_on_the_topic_with_id_only_or_empty_content() -> None:
    sub = copy.deepcopy(SUBSCRIPTION)
    got = inbound.subscription(sub)
    assert got == inbound.SubscriptionRequest("https://partner.example/hook", "id-only", 30, [("Authorization", "Bearer abc")])
    full = copy.deepcopy(sub)
    full["channel"]["_payload"] = {"extension": [{"url": codes.EXT_PAYLOAD_CONTENT, "valueCode": "full-resource"}]}
    with pytest.raises(FhirError) as caught:
        inbound.subscription(full)
    assert caught.value.issues[0].code == "not-supported"
    with pytest.raises(FhirError):
        inbound.subscription({**sub, "criteria": "Communication?status=completed"})


# --- over HTTP, without Kafka ------------------------------------------------------------------

def _client(kind: str) -> httpx.AsyncClient:
    adapter = build_adapter(kind, Catalogue.load(), KafkaAccess("127.0.0.1:9"), Sealer(SecretStr("k" * 40)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(adapter)), base_url="http://edge")


def _outcome(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.headers["content-type"] == "application/fhir+json"
    body = resp.json()
    assert (body["resourceType"], r4.issues(body)) == ("OperationOutcome", [])
    issues: list[dict[str, Any]] = body["issue"]
    return issues


async def test_every_refusal_on_the_fhir_routes_is_an_operation_outcome() -> None:
    auth = {"Authorization": "Bearer dev-dac-31", "content-type": "application/fhir+json"}
    async with _client("dac") as c:
        r = await c.post("/fhir/r4/Communication", json=communication())
        assert r.status_code == 401
        assert _outcome(r)[0]["code"] == "login"
        r = await c.post("/fhir/r4/Communication", headers={**auth, "Authorization": "Bearer dev-crt-31-muret"}, json=communication())
        assert (r.status_code, _outcome(r)[0]["code"]) == (403, "forbidden")
        r = await c.post("/fhir/r4/Communication", headers=auth, content=b"{not json")
        assert (r.status_code, _outcome(r)[0]["code"]) == (400, "structure")
        r = await c.post("/fhir/r4/Communication", headers=auth, content=b"[" * 100_000)
        assert r.status_code == 400
        _outcome(r)
        r = await c.post("/fhir/r4/Communication", headers=auth, json=consent())
        assert (r.status_code, _outcome(r)[0]["expression"]) == (400, ["resourceType"])
        r = await c.post("/fhir/r4/Communication", headers=auth, json=communication(about=None))
        assert r.status_code == 422
        assert _outcome(r)[0]["expression"] == ["Communication.about"]
        r = await c.get("/fhir/r4/EpisodeOfCare/bad id/$everything", headers=auth)
        assert r.status_code == 422
        _outcome(r)
        r = await c.get("/fhir/r4/Patient/1", headers=auth)
        assert (r.status_code, _outcome(r)[0]["code"]) == (404, "not-found")
    async with _client("cpts") as c:  # a Task's event type is known from its body: refused as soon as it is read
        admission = task(status="completed", businessStatus={"coding": [{"system": codes.ADMISSION, "code": "admitted"}]},
                         extension=[{"url": codes.EXT_VOLET, "valueInteger": 2}])
        r = await c.post("/fhir/r4/Task", headers={**auth, "Authorization": "Bearer dev-cpts-31-nord"}, json=admission)
        assert r.status_code == 403
        assert "AdmissionDecided may be published by ['crt']" in _outcome(r)[0]["diagnostics"]
    async with _client("crt") as c:  # the kind's rights, before the body is read
        r = await c.post("/fhir/r4/ServiceRequest", headers={**auth, "Authorization": "Bearer dev-crt-31-muret"}, content=b"x")
        assert r.status_code == 403
        assert "ReferralSubmitted may be published by" in _outcome(r)[0]["diagnostics"]


async def test_the_capability_statement_lists_what_the_bridge_does() -> None:
    async with _client("crt") as c:
        r = await c.get("/fhir/r4/metadata")  # no token: like the API's other descriptions
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/fhir+json"
    rest = r.json()["rest"][0]
    assert {res["type"] for res in rest["resource"]} == {"ServiceRequest", "Task", "Consent", "Communication", "Observation",
                                                         "Subscription", "EpisodeOfCare", "StructureDefinition", "CodeSystem", "ValueSet"}
    assert codes.EXT_METHOD in json.dumps(rest)
    assert r.json()["fhirVersion"] == "4.0.1"


async def test_the_projects_own_definitions_are_served_without_a_token() -> None:
    async with _client("crt") as c:
        listed = (await c.get("/fhir/r4/metadata")).json()["rest"][0]["resource"]
        for res in listed:
            if res["type"] in ("StructureDefinition", "CodeSystem", "ValueSet"):
                for rid in [part.split("(")[1].rstrip(")") for part in res["documentation"].split(": ", 1)[1].split(", ")]:
                    r = await c.get(f"/fhir/r4/{res['type']}/{rid}")
                    assert r.status_code == 200, (res["type"], rid)
                    assert (r.json()["resourceType"], r.json()["id"], r4.issues(r.json())) == (res["type"], rid, [])
        sd = (await c.get("/fhir/r4/StructureDefinition/consent-method")).json()
        assert sd["url"] == codes.EXT_METHOD
        cs = (await c.get("/fhir/r4/CodeSystem/parcours-consent-method")).json()
        assert [x["code"] for x in cs["concept"]] == ["oral", "written", "digital"]
        r = await c.get("/fhir/r4/CodeSystem/nope")
        assert (r.status_code, _outcome(r)[0]["code"]) == (404, "not-found")


def test_a_searchset_names_itself_and_gives_every_entry_a_stable_id() -> None:
    """Ids outside FHIR's id syntax: the entry's id and fullUrl are a UUID of the case and the item,
    the same in every read, another in another case; every resource has its narrative."""
    events = [ev("ReferralSubmitted", case_id="case_x:1", referral_id="ref_x:1", at=0),
              ev("MessagePosted", case_id="case_x:1", message_id="msg_x:1", at=1)]
    first = _bundle(events, Viewer("dac-31", "dac"), "case_x:1")
    again = _bundle(events, Viewer("dac-31", "dac"), "case_x:1")
    other = _bundle([e.model_copy(update={"case_id": "case_x:2"}) for e in events], Viewer("dac-31", "dac"), "case_x:2")
    assert first["link"] == [{"relation": "self", "url": "https://edge/fhir/r4/EpisodeOfCare/case_x%3A1/$everything"}]
    urls = [e["fullUrl"] for e in first["entry"]]
    assert all(u.startswith("urn:uuid:") for u in urls)
    assert [e["resource"]["id"] for e in first["entry"]] == [u.removeprefix("urn:uuid:") for u in urls]
    assert urls == [e["fullUrl"] for e in again["entry"]]
    assert not set(urls) & {e["fullUrl"] for e in other["entry"]}
    assert all(e["resource"]["text"]["status"] == "generated" for e in first["entry"])


async def test_the_fhir_routes_are_in_the_openapi_document() -> None:
    async with _client("dac") as c:
        doc = (await c.get("/openapi.json")).json()
    for path in ("ServiceRequest", "Task", "Consent", "Communication", "Observation", "Subscription"):
        responses = doc["paths"][f"/fhir/r4/{path}"]["post"]["responses"]
        assert "application/fhir+json" in responses["422"]["content"]
    assert "/fhir/r4/EpisodeOfCare/{case_id}/$everything" in doc["paths"]


async def test_what_fhir_r4_refuses_is_a_422_operation_outcome_naming_the_element() -> None:
    """The five inputs that are not R4 (an R4B-only contained SubscriptionStatus, obs-6, ext-1,
    dom-3, ppc-1), refused over HTTP before any rule of the bridge."""
    auth = {"Authorization": "Bearer dev-dac-31", "content-type": "application/fhir+json"}
    async with _client("dac") as c:
        for resource_type, raw, expression, _code in R4_RULES[:7]:
            r = await c.post(f"/fhir/r4/{resource_type}", headers=auth, json=raw)
            assert r.status_code == 422, (expression, r.text)
            assert [expression] in [i.get("expression") for i in _outcome(r)], r.text
