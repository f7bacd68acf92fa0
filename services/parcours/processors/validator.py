"""The ingress validator: partners on Kafka publish to `ingress.<slug>`; valid events move to the
canonical topics, invalid ones to the dead-letter topic with the reason, and the offsets are
committed only once every output of a batch is acknowledged (at-least-once; the processor
folds duplicates away by event id).

It is a door of the one use case the HTTP edge also calls (`parcours.publishing.accept`), with the
publisher being the ingress topic's owner, whatever the event's `source` says; a refusal's
dead-letter reason is the rule's own (`forbidden`, `invalid`, `not_found`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer

from parcours.bus.kafkaio import KafkaAccess
from parcours.contract.codec import Codec
from parcours.contract.errors import DecodeError
from parcours.contract.models import Event, ReferralSubmitted
from parcours.ops.metrics import ValidatorMetrics
from parcours.processors.deadletter import dead_letter_headers
from parcours.publishing.accept import Acceptance
from parcours.publishing.errors import PublishingError
from parcours.publishing.rules import ReferralCase
from parcours.readmodel.store import EdgeStore
from parcours.topology.catalogue import Catalogue
from parcours.topology.live import RegistryFollower
from parcours.topology.registry import Registry, Structure

log = logging.getLogger("parcours.validator")


#: how long an ingress event waits for a view the processor may not have written yet
VIEW_WAIT_S = 5.0
#: an ingress event carries its own `case_id`: a referral's case is the publisher's choice, new or its own
REFERRAL_CASE: ReferralCase = "publisher"


class Validator:
    """The Kafka ingress door: decodes each record of the `ingress.<slug>` topics, hands the event
    to the use case (`publishing.accept`) with the topic's owner as its publisher, and forwards it
    as written, or dead-letters it with the refusal's reason."""

    def __init__(self, catalogue: Catalogue, kafka: KafkaAccess, metrics: ValidatorMetrics, store: EdgeStore,
                 acceptance: Acceptance) -> None:
        self.catalogue, self.kafka, self.metrics, self.store, self.acceptance = catalogue, kafka, metrics, store, acceptance
        self.codec = Codec()
        self.owners = ingress_owners(catalogue)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self.store.start()
        consumer = AIOKafkaConsumer(
            *self.owners, **self.kafka.aiokafka(), group_id=self.catalogue.group_id("validator"),
            enable_auto_commit=False, auto_offset_reset="earliest",
        )
        producer = self.kafka.producer()
        await asyncio.gather(consumer.start(), producer.start())

        def joined_or_left(registry: Registry) -> None:
            self.catalogue.adopt(self.catalogue.with_registry(registry))
            self.owners = ingress_owners(self.catalogue)
            consumer.subscribe(list(self.owners))  # a rebalance: the group's committed offsets go on
            self.store.follow(list(registry.structures))

        follower = RegistryFollower(self.kafka, self.catalogue, joined_or_left)
        follower.start()
        try:
            await self.store.caught_up.wait()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                if not batch:
                    continue
                pending = []
                for records in batch.values():
                    pending.extend([await self.route(producer, r) for r in records])
                await asyncio.gather(*pending)  # every output acknowledged...
                await consumer.commit()  # ...before the inputs are marked done
        finally:
            await follower.stop()
            await asyncio.gather(consumer.stop(), producer.stop(), self.store.stop(), return_exceptions=True)

    async def route(self, producer: Any, r: Any) -> Any:
        """One ingress record to its canonical topic or to the dead letters: the send's delivery future."""
        owner = self.owners.get(r.topic)
        if owner is None:  # fetched before its structure left: it publishes nothing more
            return await self._dead(producer, r, "forbidden", "the ingress topic's structure left the registry", "unknown", "unknown")
        try:
            event = self.codec.decode(r.value, r.headers, topic=r.topic, partition=r.partition, offset=r.offset)
        except DecodeError as exc:
            return await self._dead(producer, r, "undecodable", str(exc), "unknown", owner.kind)
        if r.key != event.key.encode():
            self.metrics.refused.labels(event.event_type, owner.kind, "key_mismatch", "kafka").inc()
            return await self._dead(producer, r, "key_mismatch", f"record key {r.key!r} differs from the event's key {event.key!r}",
                                    event.event_type, owner.kind)
        if isinstance(event, ReferralSubmitted) and (event.person.identity_sealed or event.person.person_key):
            self.metrics.refused.labels(event.event_type, owner.kind, "invalid", "kafka").inc()
            return await self._dead(producer, r, "invalid", "person: a partner writes the identity in clear on its ingress topic; "
                                    "identity_sealed and person_key are made by Parcours", event.event_type, owner.kind)
        forward = Forward(producer, self.catalogue, r, event, self.codec)
        try:
            await self.acceptance.accept(owner, event, forward, door="kafka", referral_case=REFERRAL_CASE)
        except PublishingError as exc:
            self.metrics.refused.labels(event.event_type, owner.kind, exc.reason, "kafka").inc()
            return await self._dead(producer, r, exc.reason, str(exc) + (f" ({exc.rule})" if exc.rule else ""), event.event_type, owner.kind)
        return forward.sent

    async def _dead(self, producer: Any, r: Any, reason: str, detail: str, event_type: str, kind: str) -> Any:
        self.metrics.dead_letters.labels("validator", reason).inc()
        log.warning("dead letter", extra={"reason": reason, "topic": r.topic, "partition": r.partition, "offset": r.offset})
        headers = dead_letter_headers(list(r.headers or []), reason=reason, detail=detail, service="validator",
                                      topic=r.topic, partition=r.partition, offset=r.offset)
        return await producer.send(self.catalogue.topic("deadletter").name, r.value, key=r.key, headers=headers)


def ingress_owners(catalogue: Catalogue) -> dict[str, Structure]:
    """Each ingress topic's name -> the structure that owns it (the publisher of what it carries)."""
    known = catalogue.registry.structures  # a structure that left writes nothing more
    return {t.name: known[t.owner] for t in catalogue.topics.values() if t.role == "ingress" and t.owner in known}


class Forward:
    """The ingress's outlet: the partner's record, as written (its schema and headers), onto the
    event's canonical topic, unless the use case changed the event (an identity sealed): then the
    event as the codec writes it; `sent` is the send's delivery future, awaited with the batch's."""

    def __init__(self, producer: Any, catalogue: Catalogue, record: Any, decoded: Event, codec: Codec) -> None:
        self.producer, self.catalogue, self.record, self.decoded, self.codec = producer, catalogue, record, decoded, codec
        self.sent: Any = None

    async def publish(self, event: Event) -> object:
        r = self.record
        topic = self.catalogue.for_event(event.event_type).name
        if event is self.decoded:
            self.sent = await self.producer.send(topic, r.value, key=r.key, headers=list(r.headers or []))
        else:
            enc = self.codec.encode(event)
            self.sent = await self.producer.send(topic, enc.value, key=enc.key, headers=enc.headers)
        return self.sent
