"""Accepting an event, the same behaviours (tests/doors.py) over the three doors on the real broker:
the JSON and FHIR routes of the running adapters, and the Kafka ingress (a record on the
publisher's `ingress.<slug>`, followed to its canonical topic or to the dead letters)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from parcours.contract.codec import Codec
from parcours.topology.catalogue import Catalogue
from tests.api import KIND_OF, Api
from tests.doors import BEHAVIOURS, IDS, RECIPIENT, SENDER, Attempt, Behaviour, Door, World, auth, fhir_resource, http_outcome, ingress_event, json_request
from tests.stack import Stack, eventually


@pytest.fixture(scope="module")
async def world(stack: Stack) -> World:
    """One case for every behaviour: what they do to it leaves the others' outcomes as they are."""
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(stack, client)
        case_id, referral_id = await api.open_case(SENDER, RECIPIENT)
        await api.view_with(RECIPIENT, case_id, f"referral:{referral_id}")
    return World(case_id, referral_id)


class HttpDoor:
    def __init__(self, stack: Stack, client: httpx.AsyncClient, fhir: bool) -> None:
        self.stack, self.client, self.fhir = stack, client, fhir

    async def submit(self, attempt: Attempt) -> str:
        base = self.stack.url(KIND_OF[attempt.publisher])
        if self.fhir:
            resource_type, resource = fhir_resource(attempt)
            resp = await self.client.post(f"{base}/fhir/r4/{resource_type}", json=resource, headers=auth(attempt.publisher, fhir=True))
        else:
            path, body = json_request(attempt)
            resp = await self.client.post(base + path, json=body, headers=auth(attempt.publisher))
        return http_outcome(resp)


class IngressDoor:
    """A partner's record on its ingress topic; its fate: on the event's canonical topic, or a dead letter."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.cat = stack, Catalogue.load(prefix=stack.prefix)

    async def submit(self, attempt: Attempt) -> str:
        event = ingress_event(attempt)
        enc = Codec().encode(event)
        canonical, dead = self.cat.for_event(event.event_type).name, self.cat.topic("deadletter").name
        consumer = AIOKafkaConsumer(canonical, dead, **self.stack.kafka.aiokafka(), auto_offset_reset="earliest",
                                    group_id=f"{self.stack.prefix}-doors-{uuid.uuid4().hex[:6]}")
        producer = AIOKafkaProducer(**self.stack.kafka.aiokafka(), acks="all")
        await consumer.start()
        await producer.start()
        try:
            await producer.send_and_wait(self.cat.per_structure("ingress", attempt.publisher).name, enc.value, key=enc.key, headers=enc.headers)
            fate: list[str] = []

            async def landed() -> bool:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        headers = dict(r.headers)
                        if headers.get("ce_id") == str(event.event_id).encode():
                            fate.append("accepted" if r.topic == canonical else headers["dl_reason"].decode())
                return bool(fate)

            await eventually(landed, 60, f"{attempt.event_type} of {attempt.publisher} forwarded or dead-lettered")
        finally:
            await producer.stop()
            await consumer.stop()
        return fate[0]


@pytest.mark.parametrize("door", ["json", "fhir", "kafka"])
@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=IDS)
async def test_every_door_accepts_and_refuses_alike(stack: Stack, world: World, door: str, behaviour: Behaviour) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        doors: dict[str, Door] = {"json": HttpDoor(stack, client, fhir=False), "fhir": HttpDoor(stack, client, fhir=True), "kafka": IngressDoor(stack)}
        assert await doors[door].submit(behaviour.attempt(world)) == behaviour.outcome
