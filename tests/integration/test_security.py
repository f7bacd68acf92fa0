"""Kafka checks who is speaking: each principal reaches what the catalogue gives it, nothing else.

Every check is made on the real broker with the principal's own credentials (from the cluster's
credential store, as `topics apply` generated them). A read is proven by consuming a record the
administrator wrote; a refusal by the broker's own authorization error, never by a timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, ResourcePatternType, ResourceType

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess
from parcours.security.credentials import ADMIN
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue
from tests.stack import eventually

DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic denied", KafkaError.GROUP_AUTHORIZATION_FAILED: "group denied"}


@pytest.fixture
async def applied(kafka_cluster: Cluster, prefix: str) -> Catalogue:
    cat = Catalogue.load(prefix=prefix)
    await admin.apply(cat, kafka_cluster.access(ADMIN), kafka_cluster.credentials)
    return cat


async def _write(kafka: KafkaAccess, topic: str, value: bytes = b"probe") -> bool:
    producer = AIOKafkaProducer(**kafka.aiokafka(), request_timeout_ms=10000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"case-probe")
    except TopicAuthorizationFailedError:
        return False
    finally:
        await producer.stop()
    return True


def _read(kafka: KafkaAccess, topic: str, group: str, timeout: float = 30.0) -> str:
    """"read" once the record written by the administrator arrives, else the broker's refusal:
    "topic denied" or "group denied". A subscription, because librdkafka reports a refused topic
    to a subscriber only (an assignment just stays empty)."""
    consumer = Consumer({**kafka.librdkafka(), "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                return "read"
            if err.code() in DENIED:
                return DENIED[err.code()]
            if err.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's own constant
                raise AssertionError(f"unexpected error reading {topic}: {err}")
        raise AssertionError(f"neither a record nor a refusal on {topic} within {timeout}s")
    finally:
        consumer.close()


async def _readable(kafka_cluster: Cluster, principal: str, topic: str, group: str | None = None) -> bool:
    """Whether `principal` may read `topic` (through a consumer group it may use, unless `group`)."""
    assert await _write(kafka_cluster.access(ADMIN), topic)  # something to read
    prefix = topic.split(".", maxsplit=1)[0]
    group = group or f"{prefix}-{principal.removeprefix('svc-')}-probe-{uuid.uuid4().hex[:6]}"
    outcome = await asyncio.to_thread(_read, kafka_cluster.access(principal), topic, group)
    if outcome == "group denied":
        raise AssertionError(f"{principal} may not use group {group}")
    return outcome == "read"


async def test_a_partner_reaches_its_own_topics_and_nothing_else(kafka_cluster: Cluster, applied: Catalogue) -> None:
    cat, me = applied, "cpts-31-nord"
    partner = kafka_cluster.access(me)
    assert await _write(partner, cat.per_structure("ingress", me).name)
    assert await _readable(kafka_cluster, me, cat.per_structure("views", me).name)
    assert await _readable(kafka_cluster, me, cat.per_structure("inbox", me).name)

    assert not await _readable(kafka_cluster, me, cat.per_structure("inbox", "cpts-31-sud").name)
    assert not await _readable(kafka_cluster, me, cat.per_structure("views", "dac-31").name)
    assert not await _readable(kafka_cluster, me, cat.topic("case-state").name)
    assert not await _readable(kafka_cluster, me, cat.topic("deadletter").name)
    assert not await _write(partner, cat.per_structure("ingress", "dac-31").name)
    assert not await _write(partner, cat.topic("case-state").name)
    for t in cat.canonical():
        assert not await _write(partner, t.name), t.name
        assert not await _readable(kafka_cluster, me, t.name), t.name
    # another structure's consumer group is not its to use
    outcome = await asyncio.to_thread(_read, partner, cat.per_structure("inbox", me).name, f"{cat.prefix}-dac-31-sync")
    assert outcome == "group denied"


async def test_each_service_can_do_its_job_and_no_more(kafka_cluster: Cluster, applied: Catalogue) -> None:
    cat = applied
    svc = {name: cat.service_principal(name) for name in ("processor", "validator", "ops")}
    adapter = {k: cat.service_principal("adapter", k) for k in ("dac", "cpts", "crt")}
    # the job
    assert await _write(kafka_cluster.access(adapter["crt"]), cat.topic("admissions").name)
    assert await _readable(kafka_cluster, adapter["dac"], cat.per_structure("views", "dac-31").name)
    assert await _write(kafka_cluster.access(svc["validator"]), cat.topic("referrals").name)
    assert await _readable(kafka_cluster, svc["validator"], cat.per_structure("ingress", "dac-31").name)
    assert await _write(kafka_cluster.access(svc["processor"]), cat.per_structure("views", "crt-31-nord").name)
    assert await _readable(kafka_cluster, svc["ops"], cat.topic("deadletter").name)
    # no more: one refusal per service
    # a CPTS gives opinions to a CRT's commission (admissions topic); it records no evaluation
    assert not await _write(kafka_cluster.access(adapter["cpts"]), cat.topic("evaluations").name)
    assert not await _readable(kafka_cluster, adapter["dac"], cat.per_structure("views", "cpts-31-nord").name)
    assert not await _readable(kafka_cluster, adapter["crt"], cat.topic("observatory").name)
    assert not await _write(kafka_cluster.access(svc["processor"]), cat.per_structure("ingress", "dac-31").name)
    assert not await _write(kafka_cluster.access(svc["validator"]), cat.per_structure("views", "dac-31").name)
    assert not await _readable(kafka_cluster, svc["ops"], cat.per_structure("views", "dac-31").name)


async def test_anonymous_and_wrong_password_clients_cannot_connect(kafka_cluster: Cluster) -> None:
    for who in (KafkaAccess(kafka_cluster.base.bootstrap), kafka_cluster.base.as_user("cpts-31-nord", "not-the-secret")):
        producer = AIOKafkaProducer(**who.aiokafka(), request_timeout_ms=5000)
        with pytest.raises(KafkaConnectionError):
            await producer.start()
        await producer.stop()


async def test_apply_removes_a_stale_acl_of_its_prefix_and_leaves_other_prefixes_alone(kafka_cluster: Cluster,
                                                                                      applied: Catalogue) -> None:
    cat, kafka = applied, kafka_cluster.access(ADMIN)
    client = AdminClient(kafka.librdkafka())
    mine = AclBinding(ResourceType.TOPIC, cat.topic("referrals").name, ResourcePatternType.LITERAL, "User:cpts-31-nord",
                      "*", AclOperation.READ, AclPermissionType.ALLOW)
    other = AclBinding(ResourceType.TOPIC, f"x{cat.prefix}.referrals", ResourcePatternType.LITERAL, "User:cpts-31-nord",
                       "*", AclOperation.READ, AclPermissionType.ALLOW)
    for f in client.create_acls([mine, other]).values():
        f.result(timeout=15)

    async def planned_removal() -> list[admin.Planned] | None:
        """The broker's authorizer applies the new rules from the metadata log a moment later."""
        planned = await admin.plan(cat, kafka, kafka_cluster.credentials)
        return planned or None
    planned = await eventually(planned_removal, 30, "the stale ACL seen by the broker")
    assert [(c.action, str(c.acl)) for c in planned if hasattr(c, "acl")] == [
        ("remove-acl", f"User:cpts-31-nord READ topic:{cat.topic('referrals').name}")]
    await admin.apply(cat, kafka, kafka_cluster.credentials)
    assert await admin.plan(cat, kafka, kafka_cluster.credentials) == []
    other_filter = AclBindingFilter(other.restype, other.name, other.resource_pattern_type, other.principal, other.host,
                                    other.operation, other.permission_type)
    left = client.describe_acls(other_filter).result(timeout=15)  # another prefix's rule is not ours to remove
    assert len(left) == 1
    for f in client.delete_acls([other_filter]).values():
        f.result(timeout=15)
