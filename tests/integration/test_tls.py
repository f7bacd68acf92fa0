"""The production shape once: the broker's client listener speaks SASL_SSL with a CA of its own;
a client that trusts the CA and holds a principal's secret works, a plaintext one cannot connect."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from parcours.bus.kafkaio import KafkaAccess
from parcours.devbroker.broker import EmbeddedBroker
from parcours.security.credentials import ADMIN
from parcours.settings import Settings
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue
from tests.stack import cluster_of


async def test_a_tls_broker_serves_authenticated_clients_that_trust_its_ca(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "kafka", Settings().cache_dir)
    info = await asyncio.to_thread(broker.start, tls=True)
    try:
        assert info.security_protocol == "SASL_SSL"
        where = cluster_of(broker, info)
        assert where.base.cafile == info.cafile
        cat = Catalogue.load(prefix=f"tls{uuid.uuid4().hex[:6]}")
        await admin.apply(cat, where.access(ADMIN), where.credentials)
        partner = where.access("dac-31")
        topic = cat.per_structure("ingress", "dac-31").name
        producer = AIOKafkaProducer(**partner.aiokafka())
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"over tls", key=b"case-tls")
        finally:
            await producer.stop()
        validator = where.access(cat.service_principal("validator"))
        consumer = AIOKafkaConsumer(topic, **validator.aiokafka(), group_id=cat.group_id("validator", "-tls"),
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        assert record.value == b"over tls"
        # the same secret without TLS, or TLS without the secret: no connection
        for who in (KafkaAccess(info.bootstrap).as_user("dac-31", partner.password or ""),
                    KafkaAccess(info.bootstrap, "SSL", cafile=info.cafile)):
            client = AIOKafkaProducer(**who.aiokafka(), request_timeout_ms=5000)
            with pytest.raises(KafkaConnectionError):
                await client.start()
            await client.stop()
    finally:
        await asyncio.to_thread(broker.stop)
