"""The FHIR R4 bridge on the real stack: each resource type posted and seen in the views, a case
read back as a Bundle that obeys the consent rules, notifications delivered to a FHIR
Subscription's endpoint in the backport's shape, and refusals as OperationOutcome."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any

import httpx
import pytest

from parcours.fhir import codes
from tests.api import KIND_OF, Api
from tests.stack import HookServer, Stack, eventually
from tests.unit.test_fhir import RULES, communication, consent, observation, service_request, task

FHIR = "application/fhir+json"


@pytest.fixture
async def api(stack: Stack):
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(stack, client)


async def post(api: Api, slug: str, resource: dict[str, Any], expect: int = 202) -> httpx.Response:
    resp = await api.client.post(f"{api.stack.url(KIND_OF[slug])}/fhir/r4/{resource['resourceType']}", content=json.dumps(resource),
                                 headers={"Authorization": f"Bearer dev-{slug}", "content-type": FHIR})
    assert resp.status_code == expect, resp.text
    assert resp.headers["content-type"] == FHIR
    return resp


def issues(resp: httpx.Response) -> list[dict[str, Any]]:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    return list(body["issue"])


async def bundle(api: Api, slug: str, case_id: str) -> dict[str, list[dict[str, Any]]]:
    resp = await api.get(slug, f"/fhir/r4/EpisodeOfCare/{case_id}/$everything")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == FHIR
    out: dict[str, list[dict[str, Any]]] = {}
    for e in resp.json()["entry"]:
        out.setdefault(e["resource"]["resourceType"], []).append(e["resource"])
    return out


def on_case(case_id: str) -> dict[str, Any]:
    return {"reference": f"EpisodeOfCare/{case_id}"}


async def test_each_resource_type_reaches_the_views_and_the_bundle_obeys_consent(api: Api) -> None:
    # a DAC refers to a CRT with a ServiceRequest
    r = await post(api, "dac-31", service_request())
    location = r.headers["location"]
    assert "/fhir/r4/ServiceRequest/ref-" in location
    referral_id = location.rsplit("/", 1)[1]
    assert issues(r)[0]["severity"] == "information"
    case_id = r.headers["content-location"].split("/EpisodeOfCare/")[1].removesuffix("/$everything")
    await api.view_with("crt-31-muret", case_id, f"referral:{referral_id}")
    # the CRT acknowledges it and admits the person (Tasks), the DAC evaluates, shares discussions, writes
    ref = {"reference": f"ServiceRequest/{referral_id}"}
    await post(api, "crt-31-muret", task(focus=ref))
    await post(api, "crt-31-muret", task(focus=ref, status="completed", executionPeriod={"start": "2026-12-07"},
                                         businessStatus={"coding": [{"system": codes.ADMISSION, "code": "admitted"}]},
                                         extension=[{"url": codes.EXT_VOLET, "valueInteger": 2}]))
    await post(api, "dac-31", observation(focus=[on_case(case_id)], category=[{"coding": [{"system": codes.CATEGORY, "code": "medical"}]}]))
    c = await post(api, "dac-31", consent(provision={**consent()["provision"], "data": [{"meaning": "related", "reference": on_case(case_id)}]}))
    consent_id = c.headers["location"].rsplit("/", 1)[1]
    m = await post(api, "dac-31", communication(about=[on_case(case_id)], payload=[{"contentString": "Passage infirmier lundi."}]))
    message_id = m.headers["location"].rsplit("/", 1)[1]
    view = await api.view_with("crt-31-muret", case_id, f"message:{message_id}")
    assert view["referrals"][0]["status"] == "acknowledged"
    assert view["referrals"][0]["admission"]["decision"] == "admitted"
    assert f"consent:{consent_id}" in view["items"]

    # each structure's adapter applies the views on its own: each is awaited up to the last event
    await api.view_with("dac-31", case_id, f"message:{message_id}")
    await api.view_with("crt-31-nord", case_id, f"message:{message_id}")
    dac = await bundle(api, "dac-31", case_id)
    assert {k: len(v) for k, v in dac.items()} == {"EpisodeOfCare": 1, "ServiceRequest": 1, "Task": 2, "Observation": 1,
                                                    "Consent": 1, "Communication": 1}
    crt = await bundle(api, "crt-31-muret", case_id)
    assert "Observation" not in crt  # medical, never shared with the CRT
    assert crt["Communication"][0]["payload"] == [{"contentString": "Passage infirmier lundi."}]
    assert crt["ServiceRequest"][0]["priority"] == "urgent"
    assert {t["businessStatus"]["coding"][0]["code"] for t in crt["Task"]} == {"acknowledged", "admitted"}
    # another CRT, given discussions by the consent to every CRT, but no party to the referral:
    # the message and the consent, not the referral nor who the person is
    other_crt = await bundle(api, "crt-31-nord", case_id)
    assert set(other_crt) == {"EpisodeOfCare", "Communication", "Consent"}
    assert "identifier" not in other_crt["EpisodeOfCare"][0]["patient"]
    # a structure that sees nothing of the case gets 404, as an OperationOutcome
    other = await api.get("cpts-31-nord", f"/fhir/r4/EpisodeOfCare/{case_id}/$everything")
    assert other.status_code == 404
    assert issues(other)[0]["code"] == "not-found"


async def test_refusals_through_the_stack_are_operation_outcomes_naming_the_rule(api: Api) -> None:
    case_id, referral_id = await api.open_case("dac-31", "crt-31-muret")
    await api.view_with("crt-31-muret", case_id, f"referral:{referral_id}")
    # the contract's rules, named by the element they came from
    unknown = issues(await post(api, "dac-31", service_request(performer=[{"identifier": {"system": codes.STRUCTURE, "value": "dac-99"}}]), 422))
    assert unknown == [{"severity": "error", "code": "invalid", "expression": ["ServiceRequest.performer"],
                        "diagnostics": "dac-99 is not a registered structure"}]
    control = issues(await post(api, "dac-31", communication(about=[on_case(case_id)], payload=[{"contentString": "a\u0001b"}]), 422))
    assert control[0]["expression"] == ["Communication.payload.contentString"]
    # rights and recipients
    sender = issues(await post(api, "dac-31", task(focus={"reference": f"ServiceRequest/{referral_id}"}, status="accepted"), 403))
    assert "recipient only" in sender[0]["diagnostics"]
    assert issues(await post(api, "crt-31-nord", task(focus={"reference": f"ServiceRequest/{referral_id}"}), 404))[0]["code"] == "not-found"
    assert issues(await post(api, "dac-31", communication(about=[on_case("case-nope")]), 404))[0]["code"] == "not-found"
    requester = service_request(requester={"identifier": {"system": codes.STRUCTURE, "value": "cpts-31-nord"}})
    assert "not the authenticated dac-31" in issues(await post(api, "dac-31", requester, 403))[0]["diagnostics"]
    # a Subscription whose endpoint refuses the handshake is not registered
    refusing = HookServer(lambda path, headers, body: 500)
    try:
        sub = _subscription(refusing.url)
        refused = issues(await post(api, "crt-31-nord", sub, 422))
        assert "did not accept the handshake (HTTP 500)" in refused[0]["diagnostics"]
    finally:
        refusing.close()


async def test_one_operation_outcome_per_rule_of_the_bridge(api: Api) -> None:
    """Every rule of the unit tests' table, through the running adapters: a 422 whose issue names
    the element and the rule, and nothing published."""
    slugs = {"Task": "crt-31-muret"}
    before = {kind: await accepted_by_fhir(api, kind) for kind in ("dac", "crt")}
    for resource_type, raw, expression, code in RULES:
        found = issues(await post(api, slugs.get(resource_type, "dac-31"), raw, 422))
        assert {"code": code, "expression": expression} in [{"code": i["code"], "expression": i["expression"][0]} for i in found], (
            resource_type, expression, found)
    assert {kind: await accepted_by_fhir(api, kind) for kind in ("dac", "crt")} == before


async def accepted_by_fhir(api: Api, kind: str) -> float:
    """Events an adapter accepted through the FHIR routes (its metrics)."""
    text = (await api.client.get(api.stack.url(kind) + "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("parcours_events_accepted_total{") and 'channel="fhir"' in line)


def _subscription(url: str, heartbeat_s: int | None = None) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": url, "payload": FHIR, "header": ["Authorization: Bearer partner-secret"],
                               "_payload": {"extension": [{"url": codes.EXT_PAYLOAD_CONTENT, "valueCode": "id-only"}]}}
    if heartbeat_s:
        channel["extension"] = [{"url": codes.EXT_HEARTBEAT, "valueUnsignedInt": heartbeat_s}]
    return {"resourceType": "Subscription", "status": "requested", "reason": "suivi des cas", "criteria": codes.TOPIC, "channel": channel}


class _Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[dict[str, Any], Any, bytes]] = []
        self.server = HookServer(self._answer)

    def _answer(self, path: str, headers: Any, body: bytes) -> int:
        with self.lock:
            self.got.append((json.loads(body), headers, body))
        return 200

    def of_type(self, kind: str) -> list[tuple[dict[str, Any], Any, bytes]]:
        with self.lock:
            return [g for g in self.got if _status(g[0])["type"]["valueCode"] == kind]


def _status(bundle: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}


async def test_a_fhir_subscription_gets_a_handshake_heartbeats_and_id_only_notifications(api: Api) -> None:
    receiver = _Receiver()
    try:
        r = await post(api, "crt-31-muret", _subscription(receiver.server.url, heartbeat_s=1), 201)
        sub = r.json()
        assert sub["status"] == "active"
        assert r.headers["location"].endswith("/fhir/r4/Subscription/sub-crt-31-muret")
        secret = next(e["valueString"] for e in sub["extension"] if e["url"] == codes.EXT_SECRET)
        assert len(receiver.of_type("handshake")) == 1  # before the answer: the endpoint is known to work

        case_id, referral_id = await api.open_case("dac-31", "crt-31-muret")

        async def notified() -> list[Any] | None:
            mine = [g for g in receiver.of_type("event-notification")
                    if _event(g[0])["focus"]["valueReference"]["reference"].endswith(f"/EpisodeOfCare/{case_id}")]
            return mine or None
        first = (await eventually(notified, 40, "a notification of the new referral"))[0]
        bundle, headers, body = first
        assert headers["content-type"] == FHIR
        assert headers["Authorization"] == "Bearer partner-secret"  # the channel's header
        assert headers["X-Parcours-Signature"] == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert bundle["type"] == "history"
        assert referral_id not in body.decode()
        assert "P-3c9e41" not in body.decode()
        numbers = [int(_event(g[0])["event-number"]["valueString"]) for g in receiver.of_type("event-notification")]
        assert numbers == sorted(numbers)
        assert numbers[0] >= 1
        assert int(_status(bundle)["events-since-subscription-start"]["valueString"]) == int(_event(bundle)["event-number"]["valueString"])

        async def heartbeat() -> bool:
            return bool(receiver.of_type("heartbeat"))
        await eventually(heartbeat, 20, "a heartbeat once nothing changed for its period")
        assert "notification-event" not in _status(receiver.of_type("heartbeat")[0][0])
    finally:
        receiver.server.close()


def _event(bundle: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in _status(bundle)["notification-event"]["part"]}
