"""The person's identity on the real broker, one stack for the module: the reference story with
INS-qualified identities (HTTP and the Kafka ingress), shown to the referral's parties and to no
one else, matched across two structures by the person key, never in clear on any topic, and
erased by destroying the person's data key (after which neither a rebuild nor a restart of every
service shows it again)."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from parcours.bus.kafkaio import read_to_end
from parcours.contract.codec import Codec
from parcours.contract.models import build_event
from parcours.devtools.persons import synthetic_identity
from parcours.fhir import codes
from parcours.fhir.patient import PROFILE_INS, patient_out
from parcours.topology.catalogue import Catalogue
from tests.api import Api, referral_body
from tests.stack import Stack, eventually

ALICE = synthetic_identity(11)  # referred by the northern CPTS, then by the DAC, then by the southern CPTS
BOB = synthetic_identity(12)  # written by the southern CPTS on its ingress topic
CAROL = synthetic_identity(13)  # posted as a FHIR ServiceRequest's contained FR Core Patient INS


def _person(identity: dict[str, Any], pseudonym: str) -> dict[str, Any]:
    return {"pseudonym": pseudonym, "birth_year": int(identity["birth_date"][:4]), "postcode": "31200", "identity": identity}


def _traits(identity: dict[str, Any]) -> list[bytes]:
    """What must never be found in clear: names, INS matricule, phone, birth date, street."""
    contact = identity["contact"]
    return [s.encode() for s in (identity["birth_family_name"], identity["birth_given_names"], identity["ins"]["matricule"],
                                 contact["phone"], identity["birth_date"], contact["address"]["lines"][0])]


async def _every_record(stack: Stack, *, ingress: bool = False) -> list[tuple[str, bytes]]:
    """(topic, bytes) of every key, value and header of every topic of the stack's prefix but the
    partners' ingress topics (the one place a partner writes an identity in clear: short retention),
    or of those only (`ingress`)."""
    admin = AIOKafkaAdminClient(**stack.kafka.aiokafka())
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if stack.prefix in t and (".ingress." in t) == ingress]
    finally:
        await admin.close()
    out: list[tuple[str, bytes]] = []
    async for batch in read_to_end(stack.kafka, topics):
        for r in batch:
            out += [(r.topic, r.key or b""), (r.topic, r.value or b"")] + [(r.topic, k.encode() + v) for k, v in r.headers]
    return out


def _leaks(blobs: list[tuple[str, bytes]], traits: list[bytes]) -> list[tuple[str, bytes]]:
    return [(topic, t) for topic, blob in blobs for t in traits if t in blob]


def _files_holding(folder: Path, traits: list[bytes]) -> list[str]:
    return [f"{p}: {t!r}" for p in folder.rglob("*") if p.is_file() for t in traits if t in p.read_bytes()]


async def _identity_of(api: Api, slug: str, case: str, referral: str) -> Any:
    view = await api.view_with(slug, case, f"referral:{referral}")
    (ref,) = [r for r in view["referrals"] if r["referral_id"] == referral]
    return ref["person"].get("identity")


async def _ingress_referral(stack: Stack, publisher: str, to: str, identity: dict[str, Any]) -> tuple[str, str]:
    """A partner's referral with an identity in clear, on its ingress topic (Avro, CloudEvents)."""
    case, referral = f"case-{uuid.uuid4().hex[:8]}", f"ref-{uuid.uuid4().hex[:8]}"
    event = build_event("ReferralSubmitted", {
        "event_id": str(uuid.uuid4()), "case_id": case, "occurred_at": datetime.now(UTC),
        "source": publisher, "referral_id": referral, "to_structure": to, "person": _person(identity, "S-ingress-1"),
        "reasons": ["isolement"], "urgency": "soon", "summary": "Situation synthétique par Kafka."})
    enc = Codec().encode(event)
    producer = AIOKafkaProducer(**stack.kafka.aiokafka(), acks="all")
    await producer.start()
    try:
        topic = Catalogue.load(prefix=stack.prefix).per_structure("ingress", publisher).name
        await producer.send_and_wait(topic, enc.value, key=enc.key, headers=enc.headers)
    finally:
        await producer.stop()
    return case, referral


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parcours.cli", *args], env=stack.env, capture_output=True, text=True, check=False)


async def test_identity_shown_to_parties_matched_by_ins_never_in_clear_and_erased(stack: Stack) -> None:
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(stack, client)
        # the reference story, with Alice's INS-qualified identity
        r1 = (await api.post("cpts-31-nord", "/v1/referrals", referral_body("dac-31", person=_person(ALICE, "P-nord-11")))).json()
        case, ref1 = r1["case_id"], r1["referral_id"]
        await api.view_with("dac-31", case, f"referral:{ref1}")
        await api.post("dac-31", f"/v1/referrals/{ref1}/status", {"status": "accepted"})
        await api.post("dac-31", f"/v1/cases/{case}/consents", {
            "grantee": "crt-31-muret", "categories": ["functional", "social", "discussion"], "decision": "permit", "method": "oral"})
        ref2 = (await api.post("dac-31", "/v1/referrals", referral_body(
            "crt-31-muret", case_id=case, person=_person(ALICE, "D-0011")))).json()["referral_id"]
        await api.view_with("crt-31-muret", case, f"referral:{ref2}")
        await api.post("crt-31-muret", f"/v1/cases/{case}/messages", {"body": "Visite d'évaluation jeudi."})
        # Bob, written on Kafka by the southern CPTS: the validator seals his identity
        bob_case, bob_ref = await _ingress_referral(stack, "cpts-31-sud", "dac-31", BOB)

        # the parties of each referral see the identity it carried, in clear
        for slug, ref in (("dac-31", ref1), ("cpts-31-nord", ref1), ("dac-31", ref2), ("crt-31-muret", ref2)):
            shown = await _identity_of(api, slug, case, ref)
            assert shown["ins"] == ALICE["ins"], (slug, ref, shown)
            assert shown["contact"]["phone"] == ALICE["contact"]["phone"]
        assert (await _identity_of(api, "dac-31", bob_case, bob_ref))["birth_family_name"] == BOB["birth_family_name"]
        # the northern CPTS is no party of the DAC's referral to the CRT: it sees neither it nor its identity
        cpts_view = await api.view("cpts-31-nord", case)
        assert cpts_view is not None
        assert [r["referral_id"] for r in cpts_view["referrals"]] == [ref1]
        # a non-party sees neither the case nor an identity
        for outsider in ("crt-31-nord", "cpts-31-sud"):
            assert (await api.get(outsider, f"/v1/cases/{case}")).status_code == 404
        # each disclosure of the identity is in its author's right-of-access list
        async def disclosed() -> list[dict[str, Any]] | None:
            records = (await api.get("cpts-31-nord", f"/v1/cases/{case}/disclosures")).json()["disclosures"]
            found = [d for d in records if d["change"] == "identity_disclosed" and d["structure"] == "dac-31"]
            return found or None
        (first, *_) = await eventually(disclosed, 30, "the DAC's reading of Alice's identity in the CPTS's disclosures")
        assert first["item"] == f"referral:{ref1}"
        assert first["basis"] == "referral_party"

        # one person, one follow-up: the southern CPTS refers Alice (same INS, its own pseudonym); the
        # DAC, which follows her in the first case, is told so
        r3 = (await api.post("cpts-31-sud", "/v1/referrals", referral_body("dac-31", person=_person(ALICE, "S-sud-77")))).json()

        async def followed() -> list[str] | None:
            view = await api.view("dac-31", r3["case_id"])
            refs = [r for r in (view or {}).get("referrals", []) if r["referral_id"] == r3["referral_id"]]
            return refs[0].get("follow_up", {}).get("followed_by") if refs else None
        assert await eventually(followed, 30, "the INS match in the follow-up index") == ["dac-31"]

        # FR Core Patient INS in (a FHIR ServiceRequest) and out (`$everything`, to its recipient)
        carol_case = await _fhir_in_and_out(stack, api)

        # never in clear: every key, value and header of every topic (ingress excepted), every metric
        traits = _traits(ALICE) + _traits(BOB) + _traits(CAROL)
        records = await _every_record(stack)
        read = {topic.removeprefix(f"{stack.prefix}.") for topic, _ in records}
        assert {"referrals", "views.dac-31", "views.crt-31-muret", "inbox.dac-31", "audit", "case-state", "followups",
                "identity-keys", "person-activity"} <= read, read
        assert _leaks(records, traits) == []
        # (the scan finds a trait where there is one: Bob's, in clear on the southern CPTS's ingress topic)
        # (Avro writes the birth date as a number of days: every other trait is there as text)
        assert {t for _, t in _leaks(await _every_record(stack, ingress=True), traits)} == set(_traits(BOB)) - {BOB["birth_date"].encode()}
        for name, port in stack.ports.items():
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).content
            assert [t for t in traits if t in metrics] == [], name

        await _erase_and_check(stack, api, traits, (case, ref1, ref2), r3, (bob_case, bob_ref))
        assert carol_case  # Carol's identity, sealed under her own key, is not the erased person's


async def _fhir_in_and_out(stack: Stack, api: Api) -> str:
    """The northern CPTS posts a ServiceRequest about Carol, a contained FR Core Patient INS; the
    DAC reads the case's `$everything`: the same Patient, its INS slice and names."""
    person = {"pseudonym": "P-fhir-31", "birth_year": int(CAROL["birth_date"][:4]), "postcode": "31000", "identity": CAROL}
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "routine",
          "contained": [patient_out(person) | {"id": "p"}], "subject": {"reference": "#p"},
          "performer": [{"identifier": {"system": codes.STRUCTURE, "value": "dac-31"}}],
          "reasonCode": [{"text": "isolement"}], "note": [{"text": "Situation synthétique par FHIR."}]}
    resp = await api.client.post(f"{stack.url('cpts')}/fhir/r4/ServiceRequest", content=json.dumps(sr),
                                 headers={"Authorization": "Bearer dev-cpts-31-nord", "content-type": "application/fhir+json"})
    assert resp.status_code == 202, resp.text
    case = resp.headers["content-location"].split("/EpisodeOfCare/")[1].removesuffix("/$everything")
    referral = resp.headers["location"].rsplit("/", 1)[1]
    await api.view_with("dac-31", case, f"referral:{referral}")
    got = await api.get("dac-31", f"/fhir/r4/EpisodeOfCare/{case}/$everything")
    assert got.status_code == 200, got.text
    (request,) = [e["resource"] for e in got.json()["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    (patient,) = request["contained"]
    assert patient["meta"]["profile"] == [PROFILE_INS]
    assert {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": CAROL["ins"]["matricule"]}.items() <= next(
        i for i in patient["identifier"] if i["system"].startswith("urn:oid:")).items()
    assert patient["name"][0]["family"] == CAROL["birth_family_name"]
    return case


async def _erase_and_check(stack: Stack, api: Api, traits: list[bytes], alice: tuple[str, str, str], again: dict[str, str],
                           bob: tuple[str, str]) -> None:
    """Erase Alice by her first case; nothing of her identity comes back, Bob's stays."""
    case, ref1, ref2 = alice
    r3, (bob_case, bob_ref) = again, bob
    # erasure: the operator destroys Alice's data key
    async def erased() -> subprocess.CompletedProcess[str] | None:
        done = await asyncio.to_thread(_cli, stack, "persons", "erase", "--case", case)
        return done if done.returncode == 0 else None
    done = await eventually(erased, 30, "parcours persons erase")
    assert "destroyed" in done.stdout

    async def shows_erased(slug: str, c: str, ref: str) -> bool | None:
        return await _identity_of(api, slug, c, ref) == "erased" or None
    for slug, c, ref in (("dac-31", case, ref1), ("cpts-31-nord", case, ref1), ("crt-31-muret", case, ref2),
                         ("dac-31", r3["case_id"], r3["referral_id"])):
        await eventually(functools.partial(shows_erased, slug, c, ref), 30, f"{slug}: identity erased in {c}")
    # the rest of the case stays, and Bob is untouched
    view = await api.view("crt-31-muret", case)
    assert view is not None
    assert len(view["messages"]) == 1
    assert (await _identity_of(api, "dac-31", bob_case, bob_ref))["birth_family_name"] == BOB["birth_family_name"]

    # a rebuild of the views and a restart of every service bring nothing back
    rebuilt = await asyncio.to_thread(_cli, stack, "views", "rebuild", "--write")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    stack.stop()
    stack.start()
    await stack.ready()
    for slug, c, ref in (("dac-31", case, ref1), ("crt-31-muret", case, ref2), ("dac-31", r3["case_id"], r3["referral_id"])):
        assert await _identity_of(api, slug, c, ref) == "erased"
    assert _leaks(await _every_record(stack), traits) == []
    # nor do the services' local files (logs, read models, processor state) hold a trait in clear
    assert _files_holding(stack.logdir, traits) == []
    # Alice's wrapped data keys are tombstones on their topic
    keys_topic = Catalogue.load(prefix=stack.prefix).topic("identity-keys").name
    latest: dict[bytes, bytes | None] = {}
    async for batch in read_to_end(stack.kafka, [keys_topic]):
        latest |= {r.key: r.value for r in batch}
    assert sorted(v is None for v in latest.values()) == [False, False, True]  # Bob's and Carol's keys live, Alice's is destroyed
    assert all(json.loads(v)["person"].startswith("ins:") for v in latest.values() if v is not None)
