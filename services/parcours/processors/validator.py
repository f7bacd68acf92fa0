"""The ingress validator: partners on Kafka publish to `ingress.<slug>`; valid events move to the
canonical topics, invalid ones to the dead-letter topic with the reason, and the offsets are
committed only once every output of a batch is acknowledged (at-least-once; the processor
folds duplicates away by event id).

It applies the very rules of the HTTP edge (`parcours.publishing.rules`), with the publisher being
the ingress topic's owner, whatever the event's `source` says; a refusal's dead-letter reason is
the rule's own (`forbidden`, `invalid`, `not_found`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from parcours.bus.kafkaio import KafkaAccess
from parcours.contract.codec import Codec
from parcours.contract.errors import DecodeError
from parcours.contract.models import Event, ReferralSubmitted
from parcours.ops.metrics import ValidatorMetrics
from parcours.processors.deadletter import dead_letter_headers
from parcours.publishing.errors import NotVisible, PublishingError
from parcours.publishing.rules import check_stateful, check_stateless
from parcours.readmodel.store import EdgeStore
from parcours.topology.catalogue import Catalogue

log = logging.getLogger("parcours.validator")


class Validator:
    def __init__(self, catalogue: Catalogue, kafka: KafkaAccess, metrics: ValidatorMetrics, view_wait: float = 5.0,
                 store_path: Path | None = None) -> None:
        self.catalogue, self.kafka, self.metrics, self.view_wait = catalogue, kafka, metrics, view_wait
        self.codec = Codec()
        self.owners = {t.name: catalogue.registry.structures[t.owner] for t in catalogue.topics.values()
                       if t.role == "ingress" and t.owner}
        self.store = EdgeStore(kafka, catalogue, list(catalogue.registry.structures), path=store_path, inbox=False,
                               observatory=False, webhooks=False)
        self.store.on_discard = lambda reason: metrics.cache_discarded.labels("read_model", reason).inc()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self.store.start()
        consumer = AIOKafkaConsumer(
            *self.owners, **self.kafka.aiokafka(), group_id=self.catalogue.group_id("validator"),
            enable_auto_commit=False, auto_offset_reset="earliest",
        )
        producer = self.kafka.producer()
        await asyncio.gather(consumer.start(), producer.start())
        try:
            await self.store.caught_up.wait()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                if not batch:
                    continue
                pending = []
                for records in batch.values():
                    pending.extend([await self._route(producer, r) for r in records])
                await asyncio.gather(*pending)  # every output acknowledged...
                await consumer.commit()  # ...before the inputs are marked done
        finally:
            await asyncio.gather(consumer.stop(), producer.stop(), self.store.stop(), return_exceptions=True)

    async def _route(self, producer: AIOKafkaProducer, r: Any) -> Any:
        owner = self.owners[r.topic]
        try:
            event = self.codec.decode(r.value, r.headers, topic=r.topic, partition=r.partition, offset=r.offset)
        except DecodeError as exc:
            return await self._dead(producer, r, "undecodable", str(exc), "unknown", owner.kind)
        if r.key != event.key.encode():
            self.metrics.refused.labels(event.event_type, owner.kind, "key_mismatch", "kafka").inc()
            return await self._dead(producer, r, "key_mismatch", f"record key {r.key!r} differs from the event's key {event.key!r}",
                                    event.event_type, owner.kind)
        try:
            check_stateless(self.catalogue, owner, event)
            await self._check_case(owner, event)
        except PublishingError as exc:
            self.metrics.refused.labels(event.event_type, owner.kind, exc.reason, "kafka").inc()
            return await self._dead(producer, r, exc.reason, str(exc) + (f" ({exc.rule})" if exc.rule else ""), event.event_type, owner.kind)
        self.metrics.accepted.labels(event.event_type, owner.kind, "kafka").inc()
        topic = self.catalogue.for_event(event.event_type).name
        return await producer.send(topic, r.value, key=r.key, headers=list(r.headers or []))

    async def _check_case(self, owner: Any, event: Event) -> None:
        if isinstance(event, ReferralSubmitted):
            # a referral may open a case, but not slip into someone else's
            exists = self.store.case_exists(event.case_id)
            if exists and self.store.view(owner.slug, event.case_id) is None:
                raise NotVisible(f"no case {event.case_id} visible to {owner.slug}")
            return
        await check_stateful(self.store, owner, event, wait=self.view_wait)

    async def _dead(self, producer: AIOKafkaProducer, r: Any, reason: str, detail: str, event_type: str, kind: str) -> Any:
        self.metrics.dead_letters.labels("validator", reason).inc()
        log.warning("dead letter", extra={"reason": reason, "topic": r.topic, "partition": r.partition, "offset": r.offset})
        headers = dead_letter_headers(list(r.headers or []), reason=reason, detail=detail, service="validator",
                                      topic=r.topic, partition=r.partition, offset=r.offset)
        return await producer.send(self.catalogue.topic("deadletter").name, r.value, key=r.key, headers=headers)
