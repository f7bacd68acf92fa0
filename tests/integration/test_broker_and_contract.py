"""Foundation on the real broker: topics apply idempotently, every event type round-trips."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from parcours.contract.codec import Codec
from parcours.contract.models import Event
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue
from tests.factories import one_of_each


async def test_apply_is_idempotent_and_repairs_config_drift(kafka_bootstrap: str, prefix: str) -> None:
    cat = Catalogue.load(prefix=prefix)
    planned = await admin.plan(cat, kafka_bootstrap)
    assert {c.action for c in planned} == {"create"}
    assert len(planned) == len(cat.topics)
    done = await admin.apply(cat, kafka_bootstrap)
    assert len(done) == len(cat.topics)
    assert await admin.apply(cat, kafka_bootstrap) == []  # second apply: nothing to do

    # someone changes a topic by hand: plan sees it, apply puts it back
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        name = f"{prefix}.messages"
        resp = await client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": "1000"})])
        assert [r["error_code"] for x in resp for r in x.to_object()["resources"]] == [0], resp
    finally:
        await client.close()
    drift = await _eventually_planned(cat, kafka_bootstrap)
    assert [(c.action, c.topic) for c in drift] == [("set-config", name)]
    await admin.apply(cat, kafka_bootstrap)
    assert await admin.plan(cat, kafka_bootstrap) == []


async def _eventually_planned(cat: Catalogue, bootstrap: str) -> list[admin.Change]:
    """KRaft propagates config changes to the broker's cache asynchronously: await them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not (changes := await admin.plan(cat, bootstrap)) and loop.time() < deadline:  # noqa: ASYNC110 - polls the broker, which signals nothing
        await asyncio.sleep(0.1)
    return changes


async def test_adding_partitions_is_planned_and_applied(kafka_bootstrap: str, prefix: str) -> None:
    cat = Catalogue.load(prefix=prefix)
    await admin.apply(cat, kafka_bootstrap)
    grown = Catalogue.load(prefix=prefix)
    spec = grown.topics[f"{prefix}.deadletter"]
    from dataclasses import replace

    grown.topics[spec.name] = replace(spec, partitions=5)
    assert [c.action for c in await admin.plan(grown, kafka_bootstrap)] == ["add-partitions"]
    await admin.apply(grown, kafka_bootstrap)
    assert await admin.plan(grown, kafka_bootstrap) == []
    shrunk = Catalogue.load(prefix=prefix)  # back to 3: Kafka cannot shrink, so it is drift
    assert [c.action for c in await admin.plan(shrunk, kafka_bootstrap)] == ["drift"]


async def test_every_event_type_round_trips_through_the_broker(kafka_bootstrap: str, prefix: str) -> None:
    cat = Catalogue.load(prefix=prefix)
    await admin.apply(cat, kafka_bootstrap)
    codec = Codec()
    events = one_of_each(case_id=f"case-{uuid.uuid4().hex[:6]}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for e in events:
            enc = codec.encode(e)
            await producer.send_and_wait(cat.for_event(e.event_type).name, enc.value, key=enc.key, headers=enc.headers)
    finally:
        await producer.stop()

    topics = sorted({cat.for_event(e.event_type).name for e in events})
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=kafka_bootstrap, group_id=f"{prefix}-rt", auto_offset_reset="earliest"
    )
    await consumer.start()
    got: dict[uuid.UUID, Event] = {}
    try:
        while len(got) < len(events):
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "no record arrived within 10 s"
            for tp, records in batch.items():
                for r in records:
                    event = codec.decode(r.value, r.headers, topic=tp.topic, partition=tp.partition, offset=r.offset)
                    assert dict(r.headers)["ce_id"] == str(event.event_id).encode()
                    assert r.key == event.key.encode()
                    got[event.event_id] = event
    finally:
        await consumer.stop()
    assert sorted(got.values(), key=lambda e: e.event_type) == sorted(events, key=lambda e: e.event_type)
