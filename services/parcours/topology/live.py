"""The structure registry as data: a compacted topic (`structures`, one record per structure,
`status: removed` once it left), seeded from topics/structures.yaml, read by every service at
start and followed while it runs (`RegistryFollower`), so a structure that joins can sign in
and one that leaves is refused within seconds, without a restart.

`apply` is what `parcours topics apply` runs: the catalogue's topics first (the registry topic
among them), the seed's structures the topic lacks, then the topics, principals and ACLs of the
registry as the topic holds it. `change` is what `parcours structures` runs: one record written,
then the same `apply`, and for a structure that left its Kafka credential deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from parcours.bus.kafkaio import KafkaAccess, Pulse, keep_tailing, partition_counts, read_compacted, reader, release
from parcours.security.credentials import CredentialStore
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Registry

log = logging.getLogger("parcours.registry")


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True).encode()


async def read_registry(kafka: KafkaAccess, catalogue: Catalogue) -> Registry | None:
    """The registry as its topic holds it now; None when the topic holds none (not seeded)."""
    records = await read_compacted(kafka, catalogue.topic("structures").name)
    if not records:
        return None
    return Registry.from_records({k.decode(): json.loads(v) for k, v in records.items()})


async def write_records(kafka: KafkaAccess, catalogue: Catalogue, records: dict[str, dict[str, Any]]) -> None:
    """Records (slug -> record) onto the registry topic, acknowledged by every in-sync replica."""
    producer = kafka.producer()
    await producer.start()
    try:
        topic = catalogue.topic("structures").name
        sent = [await producer.send(topic, _encode(r), key=slug.encode()) for slug, r in records.items()]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def live_catalogue(kafka: KafkaAccess, catalogue: Catalogue) -> Catalogue:
    """The catalogue of the registry the topic holds (the seed's when the topic holds none yet)."""
    registry = await read_registry(kafka, catalogue)
    return catalogue if registry is None else catalogue.with_registry(registry)


async def apply(catalogue: Catalogue, kafka: KafkaAccess, credentials: CredentialStore | None) -> tuple[Catalogue, list[admin.Planned]]:
    """Topics, the registry seeded with what it lacks of `catalogue`'s, then the live registry's
    topics, principals and ACLs. Returns the live catalogue and what was done."""
    done: list[admin.Planned] = list(await admin.apply_topics(catalogue, kafka))
    live = await read_registry(kafka, catalogue)
    known = set(live.known()) if live is not None else set()
    missing = {slug: r for slug, r in catalogue.registry.records().items() if slug not in known}
    if missing:
        await write_records(kafka, catalogue, missing)
    current = await live_catalogue(kafka, catalogue)
    done += await admin.apply(current, kafka, credentials)
    return current, done


async def change(catalogue: Catalogue, kafka: KafkaAccess, credentials: CredentialStore | None,
                 edit: Callable[[Registry], Registry]) -> tuple[Registry, list[admin.Planned]]:
    """One change of the registry (`edit` of the live one), written, then applied to the cluster;
    a structure that left loses its Kafka credential."""
    from parcours.security.cluster import delete_users

    live = await read_registry(kafka, catalogue)
    before = live or catalogue.registry
    after = edit(before)
    # a topic not seeded yet gets the whole registry, not the changed record alone
    changed = {slug: r for slug, r in after.records().items() if live is None or before.records().get(slug) != r}
    gone = [slug for slug in after.retired if slug in before.structures]
    # one that joins: its topics and rights exist before any service learns of it; one that
    # leaves: the services drop it before its rights go (their readers never hit a refusal)
    if changed and gone:
        await write_records(kafka, catalogue, changed)
    done = list(await admin.apply(catalogue.with_registry(after), kafka, credentials))
    if changed and not gone:
        await write_records(kafka, catalogue, changed)
    if gone and kafka.sasl:
        await delete_users(kafka, gone)
    return after, done


async def reconcile(catalogue: Catalogue, kafka: KafkaAccess, credentials: CredentialStore | None) -> None:
    """For ever: each change of the registry topic (the adapters' operator API writes it) applied
    to the cluster: topics, principals and ACLs, and the credential of a structure that left."""
    from parcours.security.cluster import delete_users

    seen = catalogue.registry

    async def applied(registry: Registry) -> None:
        nonlocal seen
        done = await admin.apply(catalogue.with_registry(registry), kafka, credentials)
        gone = [slug for slug in registry.retired if slug in seen.structures]
        if gone and kafka.sasl:
            await delete_users(kafka, gone)
        seen = registry
        log.info("registry applied", extra={"changes": len(done), "left": len(gone)})

    follower = RegistryFollower(kafka, catalogue, applied)
    follower.start()
    try:
        await asyncio.Event().wait()
    finally:
        await follower.stop()


class RegistryFollower:
    """Follows the registry topic; `on_change(registry)` after each batch that changed it."""

    def __init__(self, kafka: KafkaAccess, catalogue: Catalogue, on_change: Callable[[Registry], Any]) -> None:
        self.kafka, self.topic, self.on_change = kafka, catalogue.topic("structures").name, on_change
        self.current = catalogue.registry.records()
        #: notified once each change was handed to `on_change`
        self.applied = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def reached(self, records: dict[str, dict[str, Any]], timeout: float) -> bool:
        """Whether the registry followed holds `records` (waiting up to `timeout` s for it)."""
        async with self.applied:
            try:
                await asyncio.wait_for(self.applied.wait_for(lambda: self.current == records), timeout)
            except TimeoutError:
                return False
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(keep_tailing(self._tail, "registry"), name="registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _tail(self, pulse: Pulse) -> None:
        pulse.at("metadata")
        if not (await partition_counts(self.kafka, [self.topic])).get(self.topic):
            await asyncio.sleep(1)  # not there yet: `topics apply` creates it
            return
        part = TopicPartition(self.topic, 0)
        consumer = reader(self.kafka)
        await consumer.start()
        try:
            consumer.assign([part])
            await consumer.seek_to_beginning(part)
            records: dict[str, dict[str, Any]] = {}
            end = (await consumer.end_offsets([part]))[part]
            while True:
                pulse.at("fetch")
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                for r in batch.get(part, []):
                    if r.key is not None and r.value is not None:
                        records[r.key.decode()] = json.loads(r.value)
                if await consumer.position(part) >= end and records and records != self.current:
                    await self._changed(dict(records))

        finally:
            await release(consumer)

    async def _changed(self, records: dict[str, dict[str, Any]]) -> None:
        try:
            registry = Registry.from_records(records)
        except ValueError as exc:  # a record no reader can use: keep the last good registry
            log.error("registry record refused", extra={"error": str(exc)})
            return
        self.current = records
        log.info("registry changed", extra={"structures": len(registry.structures), "retired": len(registry.retired)})
        result = self.on_change(registry)
        if asyncio.iscoroutine(result):
            await result
        async with self.applied:
            self.applied.notify_all()


def follow_on_a_thread(kafka: KafkaAccess, catalogue: Catalogue, learn: Callable[[Catalogue], None]) -> threading.Thread:
    """For a service whose engine runs threads (the processor): the registry followed on a thread
    of its own; `catalogue` adopts each new registry and `learn` gets it."""
    def joined_or_left(registry: Registry) -> None:
        catalogue.adopt(catalogue.with_registry(registry))
        learn(catalogue)

    async def run() -> None:
        RegistryFollower(kafka, catalogue, joined_or_left).start()
        await asyncio.Event().wait()  # as long as the process

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="registry", daemon=True)
    thread.start()
    return thread
