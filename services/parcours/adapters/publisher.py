"""Publishing accepted events: acks=all, idempotent producer, answer only once Kafka has it.

A send either completes (the event is durably on Kafka) or fails within aiokafka's own
delivery timeout, after which the record is dropped from the buffer: a 503 is then truthful,
and nothing half-written appears later.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from parcours.adapters.errors import KafkaUnavailable
from parcours.contract.codec import Codec
from parcours.contract.models import Event
from parcours.topology.catalogue import Catalogue


class Publisher:
    def __init__(self, bootstrap: str, catalogue: Catalogue, timeout_ms: int = 5000) -> None:
        self.bootstrap, self.catalogue, self.codec = bootstrap, catalogue, Codec()
        self.timeout_ms = timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                p = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                    request_timeout_ms=self.timeout_ms, linger_ms=2, retry_backoff_ms=100,
                )
                try:
                    await asyncio.wait_for(p.start(), self.timeout_ms / 1000)
                except (KafkaError, OSError, asyncio.TimeoutError) as exc:
                    await p.stop()
                    raise KafkaUnavailable(f"Kafka is unreachable: {type(exc).__name__}") from exc
                self._producer = p
            return self._producer

    async def publish(self, event: Event, topic: str | None = None) -> Any:
        enc = self.codec.encode(event)
        return await self.send(topic or self.catalogue.for_event(event.event_type).name, enc.key, enc.value, enc.headers)

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Any:
        producer = await self._get()
        try:
            future = await producer.send(topic, value, key=key, headers=headers)
            return await future
        except (KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"Kafka did not acknowledge the event: {type(exc).__name__}") from exc

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            producer = await self._get()
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
            return True
        except (KafkaUnavailable, KafkaError, OSError, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
