"""Publishing accepted events: acks=all, idempotent producer, answer only once Kafka has it.

A send either completes (the event is durably on Kafka) or fails within `timeout_ms`. aiokafka
never expires a batch whose partition leader is still known (a dead broker keeps its leadership
in the cached metadata), so on timeout the producer is aborted, its sender task cancelled: the
record cannot leave later, "nothing was written" (`KafkaUnavailable`, a 503 at the edge) is
truthful, and a new producer is made on the next request.
(A broker that wrote the record and died before acknowledging it is the one case left; the
Idempotency-Key makes the retry converge on the same event.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from parcours.bus.errors import KafkaUnavailable
from parcours.bus.kafkaio import KafkaAccess
from parcours.contract.codec import Codec
from parcours.contract.models import Event
from parcours.topology.catalogue import Catalogue


class Publisher:
    def __init__(self, kafka: KafkaAccess, catalogue: Catalogue, timeout_ms: int = 5000) -> None:
        self.kafka, self.catalogue, self.codec = kafka, catalogue, Codec()
        self.timeout_ms = timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                p = self.kafka.producer(request_timeout_ms=self.timeout_ms, linger_ms=5, retry_backoff_ms=100)
                try:
                    await asyncio.wait_for(p.start(), self.timeout_ms / 1000)
                except (TimeoutError, KafkaError, OSError) as exc:
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
            # asyncio.timeout, not wait_for: no task per request on the hot path
            async with asyncio.timeout(self.timeout_ms / 1000):
                future = await producer.send(topic, value, key=key, headers=headers)
            async with asyncio.timeout(self.timeout_ms / 1000):
                return await asyncio.shield(future)
        except (TimeoutError, KafkaError, OSError) as exc:
            await self._abort(producer)
            raise KafkaUnavailable(f"Kafka did not acknowledge the event within {self.timeout_ms} ms ({type(exc).__name__})") from exc

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        sender = getattr(producer, "_sender", None)  # aiokafka has no public way to drop queued records
        task = getattr(sender, "sender_task", None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(TimeoutError, KafkaError, OSError):
            await asyncio.wait_for(producer.client.close(), 2)
        # closed, as `stop` would mark it (`stop` itself would wait to flush the records dropped on
        # purpose here): else its finaliser reports an "Unclosed AIOKafkaProducer" at ERROR level
        # in the adapter's log after every such 503
        producer._closed = True  # noqa: SLF001 - see above

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            producer = await self._get()
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
            return True
        except (TimeoutError, KafkaUnavailable, KafkaError, OSError):
            return False

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
