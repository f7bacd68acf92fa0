"""Every endpoint of every adapter against the real broker, including every refusal."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from parcours.bus.kafkaio import KafkaAccess
from parcours.contract.codec import Codec
from parcours.devbroker.broker import EmbeddedBroker, free_port
from parcours.security.credentials import ADMIN
from parcours.settings import Settings
from parcours.topology.catalogue import Catalogue
from tests.api import Api, referral_body
from tests.factories import ev
from tests.stack import HookServer, Stack, cluster_of, eventually


@pytest.fixture
async def api(stack: Stack):
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(stack, client)


async def _case_for(api: Api, sender: str = "dac-31", to: str = "crt-31-muret") -> tuple[str, str]:
    case, ref = await api.open_case(sender, to)
    await api.view_with(to, case, f"referral:{ref}")
    return case, ref


async def test_authentication_refusals(api: Api) -> None:
    url = api.stack.url("dac") + "/v1/cases"
    missing = await api.client.get(url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await api.client.get(url, headers={"Authorization": "Bearer dev-nobody"})
    assert wrong.status_code == 401
    assert wrong.json()["message"] == "unknown or revoked token"
    other_kind = await api.client.get(url, headers={"Authorization": "Bearer dev-crt-31-muret"})
    assert other_kind.status_code == 403
    assert other_kind.json()["rule"] == "one adapter per structure kind"


async def test_kind_rights_and_recipient_rules(api: Api) -> None:
    case, ref = await _case_for(api)
    cpts = await api.post("cpts-31-nord", f"/v1/cases/{case}/admission-decisions",
                          {"referral_id": ref, "decision": "admitted", "volet": 2}, expect=403)
    assert "AdmissionDecided may be published by ['crt']" in cpts.json()["rule"]
    crt_ref = await api.post("crt-31-muret", "/v1/referrals", referral_body("dac-31"), expect=403)
    assert crt_ref.json()["message"] == "a crt may not publish ReferralSubmitted"
    # the DAC sent the referral: it may withdraw it, not accept it
    sender = await api.post("dac-31", f"/v1/referrals/{ref}/status", {"status": "accepted"}, expect=403)
    assert sender.json()["rule"].startswith("referral status, admission and commission: recipient only")
    other_crt = await api.post("crt-31-nord", f"/v1/referrals/{ref}/status", {"status": "accepted"}, expect=404)
    assert other_crt.json()["error"] == "not_found"
    withdraw = await api.post("crt-31-muret", f"/v1/referrals/{ref}/status", {"status": "withdrawn"}, expect=403)
    assert withdraw.json()["rule"] == "withdrawn: sender only"
    await api.post("crt-31-muret", f"/v1/referrals/{ref}/status", {"status": "acknowledged"})
    rupture = await api.post("dac-31", "/v1/ruptures", {"territory": "75", "type": "no_gp", "description": "x"}, expect=403)
    assert rupture.json()["rule"] == "ruptures: own territory"


async def test_unknown_cases_are_404_for_reads_and_writes(api: Api) -> None:
    assert (await api.get("dac-31", "/v1/cases/case-nope")).status_code == 404
    writes: list[tuple[str, dict[str, Any]]] = [
        ("/v1/cases/case-nope/messages", {"body": "x"}),
        ("/v1/cases/case-nope/evaluations", {"type": "icope_step1", "results": {}}),
        ("/v1/cases/case-nope/consents", {"grantee": "crt", "categories": ["social"], "decision": "permit", "method": "oral"}),
    ]
    for path, body in writes:
        await api.post("dac-31", path, body, expect=404)
    await api.post("dac-31", "/v1/referrals/ref-nope/status", {"status": "accepted"}, expect=404)


async def test_malformed_bodies_name_each_field(api: Api) -> None:
    bad = await api.post("cpts-31-nord", "/v1/referrals", {
        "to_structure": "dac-31", "person": {"pseudonym": "Jeanne Martin", "birth_year": 1850, "postcode": "31"},
        "reasons": [], "urgency": "tomorrow", "summary": "", "source": "dac-31"}, expect=422)
    fields = {f["field"] for f in bad.json()["fields"]}
    assert fields == {"person.pseudonym", "person.birth_year", "person.postcode", "reasons", "urgency", "summary", "source"}
    unknown = await api.post("cpts-31-nord", "/v1/referrals", referral_body("dac-99"), expect=422)
    assert unknown.json()["fields"] == [{"field": "to_structure", "rule": "dac-99 is not a registered structure"}]
    case, ref = await _case_for(api)
    rule = await api.post("crt-31-muret", f"/v1/referrals/{ref}/status", {"status": "redirected"}, expect=422)
    assert rule.json()["fields"][0]["field"] == "redirect_to"
    gir = await api.post("dac-31", f"/v1/cases/{case}/evaluations", {"type": "aggir", "results": {}}, expect=422)
    assert gir.json()["fields"] == [{"field": "gir", "rule": "required for an aggir evaluation, and only then"}]


async def test_idempotency_key_yields_one_event(api: Api) -> None:
    case, _ = await _case_for(api)
    key = str(uuid.uuid4())
    first = (await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "Une seule fois."}, key=key)).json()
    again = (await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "Une seule fois."}, key=key)).json()
    assert first == again
    conflict = await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "Autre chose."}, key=key, expect=409)
    assert conflict.json()["error"] == "conflict"
    view = await api.view_with("dac-31", case, f"message:{first['message_id']}")
    assert [m["message_id"] for m in view["messages"]] == [first["message_id"]]


async def test_inbox_sequences_and_long_poll(api: Api) -> None:
    start = (await api.get("crt-31-nord", "/v1/inbox")).json()["next_after"]
    poll = asyncio.create_task(api.get("crt-31-nord", f"/v1/inbox?after={start}&wait=20"))
    await asyncio.sleep(0)  # the poll is parked; the referral below wakes it
    r = (await api.post("dac-31", "/v1/referrals", referral_body("crt-31-nord"))).json()
    woke = (await poll).json()["notifications"]
    assert woke
    assert woke[0]["item"] == f"referral:{r['referral_id']}"
    assert woke[0]["sequence"] > start
    await api.post("dac-31", f"/v1/cases/{r['case_id']}/consents",
                   {"grantee": "crt-31-nord", "categories": ["discussion"], "decision": "permit", "method": "digital"})
    await api.post("dac-31", f"/v1/cases/{r['case_id']}/messages", {"body": "Bonjour."})

    async def three() -> list:
        notes = (await api.get("crt-31-nord", f"/v1/inbox?after={start}")).json()["notifications"]
        return notes if len(notes) >= 3 else []
    notes = await eventually(three, 20, "three notifications")
    seqs = [n["sequence"] for n in notes]
    # increasing; transaction commit markers take offsets, so sequences may skip numbers
    assert seqs == sorted(set(seqs))
    assert seqs[0] > start
    page = (await api.get("crt-31-nord", f"/v1/inbox?after={seqs[0]}&limit=1")).json()
    assert [n["sequence"] for n in page["notifications"]] == [seqs[1]]
    assert page["next_after"] == seqs[1]
    bad = await api.get("crt-31-nord", "/v1/inbox?after=-1")
    assert bad.status_code == 422
    assert bad.json()["fields"][0]["field"] == "after"


async def test_observatory_counts_ruptures_for_dacs_only(api: Api) -> None:
    for kind in ("no_gp", "no_gp", "readmission"):
        await api.post("dac-31", "/v1/ruptures", {"territory": "31", "type": kind, "description": "Synthétique."})
    await api.post("cpts-31-sud", "/v1/ruptures", {"territory": "31", "type": "no_gp", "description": "Synthétique."})

    async def counted() -> dict:
        rows = (await api.get("dac-31", "/v1/observatory")).json()["ruptures"]
        totals = {r["type"]: r["count"] for r in rows}
        return totals if totals.get("no_gp", 0) >= 3 and totals.get("readmission", 0) >= 1 else {}
    totals = await eventually(counted, 20, "observatory counts")
    assert totals["no_gp"] == 3
    assert totals["readmission"] == 1
    forbidden = await api.get("crt-31-muret", "/v1/observatory")
    assert forbidden.status_code == 403
    assert "observatory readers ['dac']" in forbidden.json()["rule"]


async def test_health_metrics_and_openapi(api: Api) -> None:
    for kind in ("dac", "cpts", "crt"):
        base = api.stack.url(kind)
        assert (await api.client.get(base + "/healthz")).json() == {"status": "ok", "kind": kind}
        assert (await api.client.get(base + "/readyz")).status_code == 200
        spec = (await api.client.get(base + "/openapi.json")).json()
        assert "/v1/referrals" in spec["paths"]
        assert "/v1/inbox" in spec["paths"]
        assert (await api.client.get(base + "/docs")).status_code == 200
    metrics = (await api.client.get(api.stack.url("dac") + "/metrics")).text
    assert "parcours_events_accepted_total" in metrics
    assert "pseudonym" not in metrics


class _Receiver:
    """A real local HTTP endpoint that fails the first `fail_first` calls, then records."""

    def __init__(self, fail_first: int = 0, always_fail_item: str | None = None) -> None:
        self.fail_first, self.always_fail_item = fail_first, always_fail_item
        self.calls = 0
        self.received: list[tuple[bytes, str]] = []
        self.url = HookServer(self._answer).url

    def _answer(self, path: str, headers: Any, body: bytes) -> int:
        self.calls += 1
        failing = self.calls <= self.fail_first or json.loads(body)["item"] == self.always_fail_item
        if not failing:
            self.received.append((body, headers["X-Parcours-Signature"]))
        return 500 if failing else 204


async def test_webhooks_signed_retried_ordered_and_redelivered(api: Api) -> None:
    receiver = _Receiver(fail_first=2)
    reg = (await api.client.put(api.stack.url("crt") + "/v1/webhook", json={"url": receiver.url},
                                headers={"Authorization": "Bearer dev-crt-31-muret"})).json()
    secret = reg["secret"]
    # on the bus the signing secret is sealed: a reader of the webhooks topic never sees it
    from parcours.bus.kafkaio import read_compacted

    hooks = await read_compacted(api.stack.kafka, Catalogue.load(prefix=api.stack.prefix).topic("webhooks").name)
    registered = json.loads(hooks[b"endpoint/crt-31-muret"])
    assert registered["url"] == receiver.url
    assert registered["secret"].startswith("fernet:")
    assert secret not in hooks[b"endpoint/crt-31-muret"].decode()
    case, _ = await _case_for(api)
    await api.post("dac-31", f"/v1/cases/{case}/consents",
                   {"grantee": "crt-31-muret", "categories": ["discussion"], "decision": "permit", "method": "oral"})
    msgs = [(await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": f"Message {i}."})).json()["message_id"] for i in range(3)]

    async def all_in() -> bool:
        return len([b for b, _ in receiver.received if json.loads(b)["case_id"] == case]) >= 5
    await eventually(all_in, 40, "5 webhook deliveries")
    assert receiver.calls >= len(receiver.received) + 2  # the two first attempts failed and were retried
    mine = []
    for body, signature in receiver.received:
        assert signature == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        note = json.loads(body)
        if note["case_id"] == case:
            mine.append(note)
    seqs = [n["sequence"] for n in mine]
    assert seqs == sorted(seqs)  # in order
    assert [n["item"] for n in mine][-3:] == [f"message:{m}" for m in msgs]

    # a notification the endpoint always refuses ends as a dead letter, then is redelivered
    receiver.always_fail_item = "message:"  # matches nothing yet
    poison = (await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "Refusé."})).json()["message_id"]
    receiver.always_fail_item = f"message:{poison}"
    after = (await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "Suivant."})).json()["message_id"]

    async def next_delivered() -> bool:
        return any(json.loads(b)["item"] == f"message:{after}" for b, _ in receiver.received)
    await eventually(next_delivered, 40, "delivery after the dead-lettered one")
    assert not any(json.loads(b)["item"] == f"message:{poison}" for b, _ in receiver.received)
    receiver.always_fail_item = None
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "parcours.cli", "webhooks", "redeliver", "--structure", "crt-31-muret"],
                                  env=api.stack.env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "redelivered 1 notification(s)" in out.stdout
    assert any(json.loads(b)["item"] == f"message:{poison}" for b, _ in receiver.received)


async def test_ingress_path(api: Api) -> None:
    cat = Catalogue.load(prefix=api.stack.prefix)
    codec = Codec()
    case = f"case-ing-{uuid.uuid4().hex[:8]}"
    good = ev("ReferralSubmitted", case_id=case, source="cpts-31-nord", to_structure="dac-31", referral_id=f"ref-{case}")
    spoofed = ev("MessagePosted", case_id=case, source="dac-31")  # on the CPTS's ingress
    forbidden = ev("AdmissionDecided", case_id=case, source="cpts-31-nord", referral_id=f"ref-{case}")
    producer = AIOKafkaProducer(**api.stack.kafka.aiokafka(), acks="all")
    await producer.start()
    ingress = cat.per_structure("ingress", "cpts-31-nord").name
    try:
        for e in (good, spoofed, forbidden):
            enc = codec.encode(e)
            await producer.send_and_wait(ingress, enc.value, key=enc.key, headers=enc.headers)
        await producer.send_and_wait(ingress, b"not avro", key=case.encode())
    finally:
        await producer.stop()
    view = await api.view_with("dac-31", case, f"referral:ref-{case}")
    assert view["referrals"][0]["from"] == "cpts-31-nord"

    reasons = {h.get("ce_id", b"garbage").decode(): h["dl_reason"].decode() + " " + h["dl_detail"].decode()
               for _, h in await _dead_letters(api, cat, 3, lambda key, h: key == case.encode() and h.get("dl_service") == b"validator")}
    assert reasons[str(spoofed.event_id)].startswith("forbidden source dac-31 is not the publisher cpts-31-nord")
    assert reasons[str(forbidden.event_id)].startswith("forbidden a cpts may not publish AdmissionDecided")
    assert reasons["garbage"].startswith("undecodable")


async def test_kafka_down_gives_503_and_nothing_half_written(tmp_path: Path) -> None:
    """A broker of its own, stopped under a running adapter."""
    broker = EmbeddedBroker(tmp_path / "kafka", Settings().cache_dir)
    info = await asyncio.to_thread(broker.start)
    stack = Stack(cluster_of(broker, info), f"d{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "parcours.cli", "topics", "apply"], env=stack.env, check=True, capture_output=True)
        stack.ports["cpts"] = free_port()
        stack.spawn("adapter-cpts", "adapter", "cpts", "--port", str(stack.ports["cpts"]))
        async with httpx.AsyncClient(timeout=60) as client:
            async def ready() -> bool:
                return (await client.get(stack.url("cpts") + "/readyz")).status_code == 200
            await eventually(ready, 60, "cpts adapter ready")
            api = Api(stack, client)
            await api.post("cpts-31-nord", "/v1/referrals", referral_body("dac-31"))
            await asyncio.to_thread(broker.stop)
            down = await api.post("cpts-31-nord", "/v1/referrals", referral_body("dac-31", summary="Pendant la panne."), expect=503)
            assert down.json()["error"] == "kafka_unavailable"
            assert (await client.get(stack.url("cpts") + "/readyz")).status_code == 503
        stack.stop()
        again = await asyncio.to_thread(broker.start)
        counted = [r async for batch in _read(cluster_of(broker, again).access(ADMIN), f"{stack.prefix}.referrals") for r in batch]
        assert len(counted) == 1  # the refused event never reached Kafka
    finally:
        stack.stop()
        await asyncio.to_thread(broker.stop)


def _read(kafka: KafkaAccess, topic: str):
    from parcours.bus.kafkaio import read_to_end

    return read_to_end(kafka, [topic])


async def test_the_largest_events_the_edge_accepts_reach_the_views(api: Api) -> None:
    """Evaluations as large as the edge lets through, of characters that JSON escapes (twice their
    Avro size; control characters, escaped six-fold, are refused by the contract), twice in one
    case: each is either refused before the 202 (413: the body limit is the topic's record limit)
    or held by the views, and the processor never dead-letters or stops on them."""
    case, _ = await _case_for(api)
    value = '"' * 2000  # 2,000 bytes in Avro, 4,000 in JSON
    accepted, refused = [], 0
    for entries in (300, 260, 240, 200):  # from beyond the edge's ~1 MB body limit down to just under it
        for copy in ("a", "b"):
            body = {"type": "multidimensional", "category": "functional",
                    "results": {f"{copy}{i:04d}": value for i in range(entries)}}
            resp = await api.post("dac-31", f"/v1/cases/{case}/evaluations", body, expect=None)
            assert resp.status_code in (202, 413), resp.text
            if resp.status_code == 202:
                accepted.append((resp.json()["evaluation_id"], entries))
            else:
                refused += 1
                assert resp.json()["error"] == "payload_too_large"
    assert accepted, "the edge accepted none of the large evaluations"
    assert refused == 4  # 300 and 260 entries: over the limit
    view = await api.view_with("dac-31", case, f"evaluation:{accepted[-1][0]}", timeout=90)
    held = {e["evaluation_id"]: e for e in view["evaluations"]}
    for evaluation_id, entries in accepted:
        assert evaluation_id in held
        assert len(held[evaluation_id]["results"]) == entries
        assert set(held[evaluation_id]["results"].values()) == {value}
    api.stack.check_alive()



async def test_text_with_control_characters_is_refused_naming_the_field(api: Api) -> None:
    case, _ = await _case_for(api)
    resp = await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "before\u0000after"}, expect=422)
    assert resp.json()["fields"] == [{"field": "body", "rule": "control characters (NUL and other C0 but tab and newlines) are not allowed"}]
    ok = await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "deux lignes\n\tet une tabulation"})
    assert ok.json()["message_id"]


async def test_racing_idempotency_keys_on_two_instances_and_after_a_restart(api: Api) -> None:
    """The same key with two bodies, sent at once to two DAC adapters: one 202, one 409, and only
    the winner's message in the view; after a restart the key still stands for its body."""
    stack = api.stack
    second = stack.url(stack.start_adapter("dac", instance=1))

    async def second_ready() -> bool:
        return (await api.client.get(second + "/readyz")).status_code == 200
    try:
        await eventually(second_ready, 60, "second dac adapter ready")
        case, _ = await _case_for(api)
        path = f"/v1/cases/{case}/messages"
        headers = {"Authorization": "Bearer dev-dac-31"}
        outcomes = []
        for trial in range(5):
            key = f"race-{trial}-{uuid.uuid4().hex[:6]}"
            a, b = await asyncio.gather(
                api.client.post(stack.url("dac") + path, json={"body": f"A{trial}"}, headers=headers | {"Idempotency-Key": key}),
                api.client.post(second + path, json={"body": f"B{trial}"}, headers=headers | {"Idempotency-Key": key}))
            assert sorted([a.status_code, b.status_code]) == [202, 409], (a.text, b.text)
            winner = a if a.status_code == 202 else b
            outcomes.append((key, winner.json()["message_id"], "A" if winner is a else "B", trial))
        last = outcomes[-1][1]
        view = await api.view_with("dac-31", case, f"message:{last}")
        assert sorted(m["body"] for m in view["messages"]) == sorted(f"{side}{t}" for _, _, side, t in outcomes)

        # the second instance restarts: every key still stands for its first body
        stack.kill("adapter-dac-1")
        stack.spawn("adapter-dac-1", "adapter", "dac", "--port", str(stack.ports["dac-1"]), "--instance", "1")
        await eventually(second_ready, 60, "second dac adapter ready again")
        for key, message_id, side, trial in outcomes:
            same = await api.client.post(second + path, json={"body": f"{side}{trial}"}, headers=headers | {"Idempotency-Key": key})
            assert same.status_code == 202
            assert same.json()["message_id"] == message_id
            other = await api.client.post(second + path, json={"body": "autre"}, headers=headers | {"Idempotency-Key": key})
            assert other.status_code == 409
    finally:
        stack.kill("adapter-dac-1")


async def test_withdrawal_and_renewed_consent_are_audited_and_shown_to_the_author(api: Api) -> None:
    """The person withdraws, then renews, their consent: the CRT's view follows, the audit topic
    holds each disclosure and withdrawal with its basis, the author sees them through its
    disclosures, nobody else does, and `parcours audit case` prints them."""
    from parcours.bus.kafkaio import read_to_end

    case, ref = await _case_for(api)
    m = (await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "Point de situation."})).json()["message_id"]
    item = f"message:{m}"
    consents = []
    for decision in ("permit", "deny", "permit"):
        c = (await api.post("dac-31", f"/v1/cases/{case}/consents", {"grantee": "crt-31-muret", "categories": ["discussion"],
                                                                      "decision": decision, "method": "oral"})).json()
        consents.append(c["consent_id"])
        if decision == "permit":
            await api.view_with("crt-31-muret", case, item)
        else:
            await api.view_without("crt-31-muret", case, item)
    cat = Catalogue.load(prefix=api.stack.prefix)

    async def audited() -> list[dict[str, Any]]:
        records = [json.loads(r.value) async for batch in read_to_end(api.stack.kafka, [cat.topic("audit").name])
                   for r in batch if r.key == case.encode()]
        mine = [r for r in records if r.get("item") == item and r["structure"] == "crt-31-muret"]
        return mine if len(mine) >= 3 else []
    trail = await eventually(audited, 30, "three audit records for the CRT and the message")
    assert [(r["change"], r["basis"], r["ref"]) for r in trail] == [
        ("disclosed", "consent", consents[0]), ("withdrawn", "denied", consents[1]), ("disclosed", "consent", consents[2])]

    async def listed() -> dict[str, Any] | None:
        body = (await api.get("dac-31", f"/v1/cases/{case}/disclosures")).json()
        return body if len([d for d in body["disclosures"] if d["item"] == item]) >= 3 else None
    shown = await eventually(listed, 30, "the author's disclosures")
    assert {(d["structure"], d["item"], d["basis"]) for d in shown["disclosures"]} >= {
        ("crt-31-muret", f"referral:{ref}", "referral_party"), ("crt-31-muret", item, "consent")}
    theirs = (await api.get("crt-31-muret", f"/v1/cases/{case}/disclosures")).json()
    assert theirs["disclosures"] == []  # the CRT authored nothing here: it learns nothing of others' disclosures

    # a read of the view is recorded (who, which case, when; no content)
    assert (await api.get("dac-31", f"/v1/cases/{case}")).status_code == 200

    async def accessed() -> bool:
        changes = [json.loads(r.value).get("change") async for batch in read_to_end(api.stack.kafka, [cat.topic("audit").name])
                   for r in batch if r.key == case.encode()]
        return "accessed" in changes
    await eventually(accessed, 30, "an accessed record")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "parcours.cli", "audit", "case", case],
                                  env=api.stack.env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "withdrawn" in out.stdout
    assert "denied" in out.stdout
    assert "accessed" in out.stdout


async def test_records_the_processor_cannot_take_are_dead_lettered_and_it_goes_on(api: Api) -> None:
    """On a canonical topic (written by the admin: a partner cannot): a record without a key and a
    record that is not an event each become a dead letter with its reason; later events are processed."""
    cat = Catalogue.load(prefix=api.stack.prefix)
    case = f"case-dl-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(**api.stack.kafka.aiokafka(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(cat.for_event("MessagePosted").name, b"no key", key=None, headers=[("ce_id", case.encode())])
        await producer.send_and_wait(cat.for_event("MessagePosted").name, b"not avro", key=case.encode())
    finally:
        await producer.stop()
    await api.open_case("cpts-31-nord", "dac-31")  # awaits the new case in a view: processed after both

    found = await _dead_letters(api, cat, 2, lambda key, h: h.get("dl_service") == b"processor"
                                and (key == case.encode() or h.get("ce_id") == case.encode()))
    assert {value.decode(): h["dl_reason"].decode() for value, h in found} == {"no key": "key_missing", "not avro": "undecodable"}


async def _dead_letters(api: Api, cat: Catalogue, n: int, wanted: Any) -> list[tuple[bytes, dict[str, bytes]]]:
    """The first `n` dead letters (value, headers) whose key and headers are `wanted`."""
    consumer = AIOKafkaConsumer(cat.topic("deadletter").name, **api.stack.kafka.aiokafka(),
                                group_id=f"{api.stack.prefix}-dl-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[bytes, dict[str, bytes]]] = []
    try:
        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend((r.value or b"", h) for r in records if wanted(r.key, h := dict(r.headers)))
            return len(found) >= n
        await eventually(enough, 30, f"{n} dead letters")
    finally:
        await consumer.stop()
    return found
