"""Foundation on the real broker: topics apply idempotently, every event type round-trips."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess
from parcours.contract.codec import Codec
from parcours.contract.models import Event
from parcours.security.cluster import SecurityChange
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue
from tests.factories import one_of_each


async def test_apply_is_idempotent_and_repairs_config_drift(kafka_cluster: Cluster, kafka: KafkaAccess, prefix: str) -> None:
    cat = Catalogue.load(prefix=prefix)
    planned = await admin.plan(cat, kafka, kafka_cluster.credentials)
    assert [c for c in planned if c.action == "create"] == [c for c in planned if isinstance(c, admin.Change)]
    assert len([c for c in planned if c.action == "create"]) == len(cat.topics)
    assert {c.acl for c in planned if isinstance(c, SecurityChange) and c.action == "add-acl"} == set(cat.acls())
    done = await admin.apply(cat, kafka, kafka_cluster.credentials)
    assert len([c for c in done if c.action in ("create", "add-acl")]) == len(cat.topics) + len(cat.acls())
    assert await admin.apply(cat, kafka, kafka_cluster.credentials) == []  # second apply: nothing to do, ACLs included

    # someone changes a topic by hand: plan sees it, apply puts it back
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    client = AIOKafkaAdminClient(**kafka.aiokafka())
    await client.start()
    try:
        name = f"{prefix}.messages"
        resp = await client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": "1000"})])
        assert [r["error_code"] for x in resp for r in x.to_object()["resources"]] == [0], resp
    finally:
        await client.close()
    drift = await _eventually_planned(cat, kafka)
    assert [(c.action, c.subject) for c in drift] == [("set-config", name)]
    await admin.apply(cat, kafka)
    assert await admin.plan(cat, kafka) == []


async def _eventually_planned(cat: Catalogue, kafka: KafkaAccess) -> list[admin.Planned]:
    """KRaft propagates config changes to the broker's cache asynchronously: await them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not (changes := await admin.plan(cat, kafka)) and loop.time() < deadline:  # noqa: ASYNC110 - polls the broker, which signals nothing
        await asyncio.sleep(0.1)
    return changes


async def test_adding_partitions_is_planned_and_applied(kafka: KafkaAccess, prefix: str) -> None:
    cat = Catalogue.load(prefix=prefix)
    await admin.apply(cat, kafka)
    grown = Catalogue.load(prefix=prefix)
    spec = grown.topics[f"{prefix}.deadletter"]
    from dataclasses import replace

    grown.topics[spec.name] = replace(spec, partitions=5)
    assert [c.action for c in await admin.plan(grown, kafka)] == ["add-partitions"]
    await admin.apply(grown, kafka)
    assert await admin.plan(grown, kafka) == []
    shrunk = Catalogue.load(prefix=prefix)  # back to 3: Kafka cannot shrink, so it is drift
    assert [c.action for c in await admin.plan(shrunk, kafka)] == ["drift"]


async def test_every_event_type_round_trips_through_the_broker(kafka: KafkaAccess, prefix: str) -> None:
    cat = Catalogue.load(prefix=prefix)
    await admin.apply(cat, kafka)
    codec = Codec()
    events = one_of_each(case_id=f"case-{uuid.uuid4().hex[:6]}")
    producer = AIOKafkaProducer(**kafka.aiokafka(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for e in events:
            enc = codec.encode(e)
            await producer.send_and_wait(cat.for_event(e.event_type).name, enc.value, key=enc.key, headers=enc.headers)
    finally:
        await producer.stop()

    topics = sorted({cat.for_event(e.event_type).name for e in events})
    consumer = AIOKafkaConsumer(
        *topics, **kafka.aiokafka(), group_id=f"{prefix}-rt", auto_offset_reset="earliest"
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


async def test_reads_made_one_after_the_other_stop_at_one_moment(kafka: KafkaAccess, prefix: str) -> None:
    """`views rebuild` reads one topic after the other, rule-changing topics first, all up to the end
    offsets of its start (taken once, by the process that shares the partitions out to its workers):
    a record written meanwhile (a message after a withdrawal it did not read) is not read either."""
    from parcours.bus.kafkaio import end_offsets, read_to_end
    from parcours.processors.rebuild import _in_reading_order

    cat = Catalogue.load(prefix=prefix)
    await admin.apply(cat, kafka)
    messages, consents = cat.for_event("MessagePosted").name, cat.for_event("ConsentRecorded").name
    producer = AIOKafkaProducer(**kafka.aiokafka(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(messages, b"m%d" % i, key=b"case-1")
            await producer.send_and_wait(consents, b"c%d" % i, key=b"case-1")
        ends = await end_offsets(kafka, [messages, consents])
        for i in range(3, 5):
            await producer.send_and_wait(messages, b"m%d" % i, key=b"case-1")
        read = [r.value async for batch in read_to_end(kafka, [messages], until=ends) for r in batch]
        assert read == [b"m0", b"m1", b"m2"]
        assert len([r async for batch in read_to_end(kafka, [messages]) for r in batch]) == 5
        in_order = [r.value async for batch in _in_reading_order(cat, kafka, [messages, consents], None, ends) for r in batch]
        assert in_order == [b"c0", b"c1", b"c2", b"m0", b"m1", b"m2"]
    finally:
        await producer.stop()
