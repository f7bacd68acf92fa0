"""The publisher's abort path (a send Kafka did not acknowledge in time), without a broker."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from parcours.bus.kafkaio import KafkaAccess
from parcours.bus.publisher import Publisher
from parcours.topology.catalogue import Catalogue


async def test_an_aborted_producer_is_dropped_without_an_unclosed_producer_report() -> None:
    """After a timeout the producer is thrown away with its queued records; its finaliser must not
    then report it as leaked (an ERROR line in the adapter's log after every 503)."""
    publisher = Publisher(KafkaAccess("127.0.0.1:9"), Catalogue.load(prefix="t"))
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    try:
        producer = publisher.kafka.producer()  # never started: nothing to connect to
        await publisher._abort(producer)  # noqa: SLF001 - the path under test
        del producer
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert not [r for r in reports if "Unclosed AIOKafkaProducer" in str(r.get("message"))]
