"""Accepting an event, the same behaviours (tests/doors.py) over the three doors, in memory: the
JSON and FHIR routes on an adapter whose read model, publisher and outlet are fakes (no lifespan,
no Kafka client), the Kafka ingress door (`Validator.route`) on a fake producer."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import httpx
import pytest
from pydantic import SecretStr

from parcours.adapters.http.app import create_app
from parcours.bootstrap import build_adapter
from parcours.bus.kafkaio import KafkaAccess
from parcours.contract.codec import Codec
from parcours.contract.models import Event
from parcours.ops.metrics import ValidatorMetrics
from parcours.processors.validator import Validator
from parcours.publishing.accept import Acceptance
from parcours.security.sealing import Sealer
from parcours.topology.catalogue import Catalogue
from tests.doors import (
    BEHAVIOURS,
    IDS,
    RECIPIENT,
    SENDER,
    Attempt,
    Behaviour,
    Door,
    World,
    auth,
    fhir_resource,
    http_outcome,
    ingress_event,
    json_request,
)

T = TypeVar("T")
CAT = Catalogue.load()
NOWHERE = KafkaAccess("127.0.0.1:9")  # nothing listens: a door that reached Kafka would fail
WORLD = World("case-a", "ref-a")


class Views:
    """The read model of the world: the case, seen by its referral's two parties."""

    def __init__(self, world: World) -> None:
        self.parties = {world.case_id: {SENDER, RECIPIENT}}
        self.referrals = {world.referral_id: (world.case_id, {"referral_id": world.referral_id, "from": SENDER, "to": RECIPIENT,
                                                               "status": "submitted", "status_history": [], "admission_history": []})}

    def view(self, slug: str, case_id: str) -> dict[str, Any] | None:
        return {"case_id": case_id, "items": {}, "referrals": []} if self.has_case(slug, case_id) else None

    def has_case(self, slug: str, case_id: str) -> bool:
        return slug in self.parties.get(case_id, ())

    def case_exists(self, case_id: str) -> bool:
        return case_id in self.parties

    def referral(self, slug: str, referral_id: str) -> tuple[str, dict[str, Any]] | None:
        found = self.referrals.get(referral_id)
        return found if found is not None and self.has_case(slug, found[0]) else None

    async def until(self, probe: Callable[[], T | None], wait: float) -> T | None:
        return probe()  # the world does not change while a door waits


class Published:
    """The HTTP doors' publisher: what was published, nothing sent."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event, topic: str | None = None) -> None:
        self.events.append(event)


class HttpDoor:
    """The JSON (or FHIR) routes of the publisher's kind's adapter, on the fakes."""

    def __init__(self, fhir: bool) -> None:
        self.fhir = fhir

    async def submit(self, attempt: Attempt) -> str:
        kind = CAT.registry.structures[attempt.publisher].kind
        built = build_adapter(kind, CAT, NOWHERE, Sealer(SecretStr("k" * 40)))
        views, published = Views(WORLD), Published()
        adapter = dataclasses.replace(built, store=cast(Any, views), publisher=cast(Any, published),
                                      acceptance=Acceptance(CAT, views, built.metrics.accepted))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(adapter)), base_url="http://edge") as client:
            if self.fhir:
                resource_type, resource = fhir_resource(attempt)
                resp = await client.post(f"/fhir/r4/{resource_type}", json=resource, headers=auth(attempt.publisher, fhir=True))
            else:
                path, body = json_request(attempt)
                resp = await client.post(path, json=body, headers=auth(attempt.publisher))
        outcome = http_outcome(resp)
        assert (outcome == "accepted") == (len(published.events) == 1), "an accepted event is published once, a refused one never"
        return outcome


class Producer:
    """The validator's producer: what it sent, each send's delivery already done."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, bytes]]] = []

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: Any = None) -> asyncio.Future[None]:
        self.sent.append((topic, dict(headers or [])))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class IngressDoor:
    """The validator's route for one record on the publisher's `ingress.<slug>` topic."""

    async def submit(self, attempt: Attempt) -> str:
        views, metrics = Views(WORLD), ValidatorMetrics()
        validator = Validator(CAT, NOWHERE, metrics, cast(Any, views), Acceptance(CAT, views, metrics.accepted))
        event, producer = ingress_event(attempt), Producer()
        enc = Codec().encode(event)
        record = SimpleNamespace(topic=CAT.per_structure("ingress", attempt.publisher).name, partition=0, offset=0,
                                 key=enc.key, value=enc.value, headers=enc.headers)
        await validator.route(producer, record)
        [(topic, headers)] = producer.sent
        if topic == CAT.for_event(event.event_type).name:
            return "accepted"
        assert topic == CAT.topic("deadletter").name
        return headers["dl_reason"].decode()


DOORS: dict[str, Door] = {"json": HttpDoor(fhir=False), "fhir": HttpDoor(fhir=True), "kafka": IngressDoor()}


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=IDS)
async def test_every_door_accepts_and_refuses_alike(door: str, behaviour: Behaviour) -> None:
    assert await DOORS[door].submit(behaviour.attempt(WORLD)) == behaviour.outcome
