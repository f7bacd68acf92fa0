"""What an adapter reads from Kafka and serves: its structures' case views, inboxes, the rupture
observatory and webhook registrations. One consumer tails those topics from the beginning
(views and registrations are compacted; inboxes are the structures' notification logs).

Views arrive as one record per item on `views.<slug>` (key `<case_id>/<item>`) and are assembled
on read with the case file's own `assemble`.

Inbox sequences are Kafka offsets + 1 on the single-partition `inbox.<slug>` topic: increasing,
per structure, stable across restarts. The processor writes in Kafka transactions, whose commit
markers take offsets too: sequences have gaps, so clients page with `after`, never by counting.
Every topic is read `read_committed`: nothing of an aborted attempt is ever served.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from parcours.casefile.incremental import assemble
from parcours.kafkaio import KafkaAccess, keep_tailing, partition_counts
from parcours.topology.catalogue import Catalogue

log = logging.getLogger("parcours.adapter.store")


class EdgeStore:
    def __init__(self, kafka: KafkaAccess, catalogue: Catalogue, slugs: list[str], *, inbox: bool = True,
                 observatory: bool = True, webhooks: bool = True, audit: bool = False) -> None:
        """A store of the views of `slugs`, and of what else its reader may read (its principal's
        ACLs): their inboxes, the observatory, the webhook registrations."""
        self.kafka, self.catalogue, self.slugs = kafka, catalogue, list(slugs)
        #: slug -> case id -> item -> item record
        self.views: dict[str, dict[str, dict[str, dict[str, Any]]]] = {s: {} for s in slugs}
        self.inbox: dict[str, list[dict[str, Any]]] = {s: [] for s in slugs}
        self.observatory: dict[str, dict[str, Any]] = {}
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.caught_up = asyncio.Event()
        self.changed = asyncio.Condition()
        self._inbox_topics = {catalogue.per_structure("inbox", s).name: s for s in slugs} if inbox else {}
        self._views_topics = {catalogue.per_structure("views", s).name: s for s in slugs}
        self._obs_topic = catalogue.topic("observatory").name
        self._hooks_topic = catalogue.topic("webhooks").name
        self._audit_topic = catalogue.topic("audit").name
        self._extra = [t for t, on in ((self._obs_topic, observatory), (self._hooks_topic, webhooks),
                                       (self._audit_topic, audit)) if on]
        #: author slug -> case id -> the audit records of the items it authored (right of access)
        self.disclosures: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in slugs}
        self._task: asyncio.Task[None] | None = None

    # --- queries ----------------------------------------------------------------------
    def view(self, slug: str, case_id: str) -> dict[str, Any] | None:
        items = self.views.get(slug, {}).get(case_id)
        return assemble(case_id, slug, items.values()) if items else None

    def cases(self, slug: str) -> list[str]:
        return sorted(self.views.get(slug, {}))

    def referral(self, slug: str, referral_id: str) -> tuple[str, dict[str, Any]] | None:
        """(case_id, referral entry) of a referral visible to `slug`."""
        key = f"referral:{referral_id}"
        for case_id, items in self.views.get(slug, {}).items():
            if key in items:
                view = assemble(case_id, slug, items.values())
                for ref in view["referrals"] if view else []:
                    if ref["referral_id"] == referral_id:
                        return case_id, ref
        return None

    def notifications(self, slug: str, after: int, limit: int) -> list[dict[str, Any]]:
        items = self.inbox.get(slug, [])
        # sequences increase (offsets + 1, with gaps for transaction markers): bisect
        start = bisect.bisect_right(items, after, key=lambda n: n["sequence"])
        return items[start:start + limit]

    async def wait_notifications(self, slug: str, after: int, limit: int, wait: float) -> list[dict[str, Any]]:
        got = self.notifications(slug, after, limit)
        if got or wait <= 0:
            return got
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: bool(self.notifications(slug, after, 1))), wait)
            except TimeoutError:
                return []
        return self.notifications(slug, after, limit)

    # --- the tail ---------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-store")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # wait for its end, whatever it is

    async def _run(self) -> None:
        await keep_tailing(self._tail, "store")

    async def _tail(self) -> None:
        topics = [*self._views_topics, *self._extra, *self._inbox_topics]
        counts = await partition_counts(self.kafka, topics)
        parts = [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))]
        consumer = AIOKafkaConsumer(**self.kafka.aiokafka(), group_id=None, enable_auto_commit=False,
                                    isolation_level="read_committed", max_partition_fetch_bytes=16 * 1024 * 1024)
        await consumer.start()
        try:
            consumer.assign(parts)
            # rebuild from scratch on every (re)start: forget what a previous tail loaded
            for s in self.slugs:
                self.views[s].clear()
                self.inbox[s].clear()
            self.observatory.clear()
            for d in self.disclosures.values():
                d.clear()
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            pending = {tp for tp in parts if end[tp] > 0}
            if not pending:
                self.caught_up.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                appended = False
                for tp, records in batch.items():
                    for r in records:
                        appended |= self._apply(tp.topic, r)
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
                    if not pending:
                        self.caught_up.set()
                if appended:
                    async with self.changed:
                        self.changed.notify_all()
        finally:
            await consumer.stop()

    def _apply(self, topic: str, r: Any) -> bool:
        key = r.key.decode() if r.key else ""
        if topic in self._views_topics:
            slug = self._views_topics[topic]
            case_id, _, item = key.partition("/")
            if r.value is None:
                items = self.views[slug].get(case_id)
                if items is not None:
                    items.pop(item, None)
                    if not items:
                        del self.views[slug][case_id]
            else:
                self.views[slug].setdefault(case_id, {})[item] = json.loads(r.value)
        elif topic == self._obs_topic:
            if r.value is None:
                self.observatory.pop(key, None)
            else:
                self.observatory[key] = json.loads(r.value)
        elif topic == self._hooks_topic:
            if r.value is None:
                self.webhooks.pop(key, None)
            else:
                self.webhooks[key] = json.loads(r.value)
        elif topic == self._audit_topic:
            record = json.loads(r.value)
            if record.get("author") in self.disclosures and record.get("change") != "accessed":
                self.disclosures[record["author"]].setdefault(key, []).append(record)
        else:
            slug = self._inbox_topics[topic]
            note = json.loads(r.value)
            note["sequence"] = r.offset + 1
            self.inbox[slug].append(note)
            return True
        return False
