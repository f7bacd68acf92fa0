"""What an adapter reads from Kafka and serves: its structures' case views, inboxes, the rupture
observatory and webhook registrations, kept on disk (`readmodel/db.py`) and fed by one tail.

The tail resumes at the positions stored with the data (not at offset 0): a restart costs what
was written while the process was away, not all of history. The file is read again from the
beginning only when it cannot be trusted: another schema, another cluster or another incarnation
of a topic than the ones it was read from (its `lineage`: cluster and topic ids, checked at start
and every few seconds while it runs), a stored position past the end, or a sync older than the
tombstones' lifetime on the compacted topics (a deletion it may have missed).

Views arrive as one record per item on `views.<slug>` (key `<case_id>/<item>`) and are assembled
on read with the case file's own `assemble`.

Inbox sequences are Kafka offsets + 1 on the single-partition `inbox.<slug>` topic: increasing,
per structure, stable across restarts. The processor writes in Kafka transactions, whose commit
markers take offsets too: sequences have gaps, so clients page with `after`, never by counting.
Every topic is read `read_committed`: nothing of an aborted attempt is ever served.

`changed` is notified after each applied batch: a request that waits for something the
processor is about to write (`until`) wakes on it instead of polling.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import TopicPartition

from parcours.bus.kafkaio import TAIL_STALL_CHECK_S, KafkaAccess, Pulse, keep_tailing, partition_counts, reader, release, tail_stalled
from parcours.bus.lineage import Lineage, Watch, adopt, live_lineage
from parcours.casefile.records import assemble
from parcours.contract.directory import DirectoryOffer
from parcours.readmodel.db import Reader, Record, Writer
from parcours.readmodel.errors import StoreError
from parcours.topology.catalogue import Catalogue

log = logging.getLogger("parcours.adapter.store")
T = TypeVar("T")
#: Kafka's default delete.retention.ms: how long a tombstone stays on a compacted topic. A file
#: last synced longer ago may have missed a deletion, and is read again from the beginning.
TOMBSTONE_LIFETIME_S = 24 * 3600.0
#: how often a caught-up tail records that it had read everything (`synced_at`)
SYNC_STAMP_S = 600.0


class EdgeStore:
    def __init__(self, kafka: KafkaAccess, catalogue: Catalogue, slugs: list[str], *, path: Path | None = None,
                 inbox: bool = True, observatory: bool = True, webhooks: bool = True, audit: bool = False,
                 territory: bool = False) -> None:
        """A store of the views of `slugs`, and of what else its reader may read (its principal's
        ACLs): their inboxes, the observatory, the webhook registrations, the audit trail of the
        items they authored, the territory's directory, follow-up index and the activity of the
        persons' cases (`territory`), the persons' wrapped data keys (always: `readmodel.keyring`).
        `path`: its
        file (one per process; default: a temporary one)."""
        self.kafka, self.catalogue = kafka, catalogue
        self._tmp = None if path is not None else Path(tempfile.mkdtemp(prefix="parcours-edge-"))
        self.path = path if path is not None else self._tmp / "store.sqlite3"  # type: ignore[operator]
        self.caught_up = asyncio.Event()
        self.changed = asyncio.Condition()
        #: the shared topics it reads: (logical name, table, read or not)
        self._reads = [("observatory", "observatory", observatory), ("webhooks", "webhooks", webhooks),
                       ("audit", "audit", audit), ("directory", "directory", territory),
                       ("followups", "followups", territory), ("identity-keys", "datakeys", True),
                       ("person-activity", "activity", territory)]
        self._inboxes = inbox
        self._routes: dict[str, tuple[str, str]] = {}
        self._follow(slugs)
        self._moved = False  # the structures followed changed: the tail starts again on the new topics
        #: told the reason (`lineage.REASONS`) each time the file is discarded because it does not
        #: describe the cluster it reads (the service's `parcours_cache_discarded_total`)
        self.on_discard: Callable[[str], None] | None = None
        self._watch: Watch | None = None
        self._waited = False  # the tail has said it waits for a topic that is not there
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-store")
        self._lock_fd: int | None = None
        self._writer: Writer | None = None
        self._reader: Reader | None = None
        #: how the last (re)start of the tail began: from stored positions or not, and how many
        #: offsets it had to read then (what a restart costs; /readyz shows it)
        self.resumed = False
        self.records_at_start = 0
        #: slug -> (notifications held, last sequence): kept up to date by the tail
        self._inbox: dict[str, tuple[int, int]] = {}

    def _follow(self, slugs: list[str]) -> None:
        self.slugs = list(slugs)
        routes = {self.catalogue.per_structure("views", s).name: ("items", s) for s in slugs}
        if self._inboxes:
            routes |= {self.catalogue.per_structure("inbox", s).name: ("inbox", s) for s in slugs}
        routes |= {self.catalogue.topic(name).name: (table, "") for name, table, on in self._reads if on}
        self._routes = routes
        self._authors = frozenset(slugs)

    def follow(self, slugs: list[str]) -> None:
        """Serve these structures from now on (the registry changed): the tail starts again on
        their topics, resuming those it had read; what a structure that left had is kept."""
        if sorted(slugs) != sorted(self.slugs):
            self._follow(slugs)
            self._moved = True

    # --- queries (on the event loop: indexed reads of committed batches) ----------------
    @property
    def db(self) -> Reader:
        if self._reader is None:
            raise StoreError("the read model is not open (start the store first)")
        return self._reader

    def view(self, slug: str, case_id: str) -> dict[str, Any] | None:
        items = self.db.items(slug, case_id)
        return assemble(case_id, slug, items) if items else None

    def has_case(self, slug: str, case_id: str) -> bool:
        return self.db.has_case(slug, case_id)

    def cases(self, slug: str, after: str = "", limit: int = -1) -> list[str]:
        return self.db.cases(slug, after, limit)

    def case_exists(self, case_id: str) -> bool:
        """Does any structure this store follows have a view of `case_id`?"""
        return self.db.case_exists(case_id)

    def referral(self, slug: str, referral_id: str) -> tuple[str, dict[str, Any]] | None:
        """(case_id, referral entry) of a referral visible to `slug`."""
        case_id = self.db.referral_case(slug, referral_id)
        view = self.view(slug, case_id) if case_id else None
        for ref in view["referrals"] if view else []:
            if ref["referral_id"] == referral_id:
                return case_id, ref  # type: ignore[return-value]
        return None

    def notifications(self, slug: str, after: int, limit: int) -> list[dict[str, Any]]:
        return self.db.notifications(slug, after, limit)

    def followups(self, person: str) -> list[tuple[str, list[str]]]:
        """The follow-up index's entries of a person (its pseudonym's digest): (case, followers)."""
        return self.db.followups(person)

    def offers(self) -> list[DirectoryOffer]:
        """The territory's directory: every offer published and not withdrawn."""
        return [DirectoryOffer.model_validate_json(v) for v in self.db.directory()]

    def inbox_size(self, slug: str) -> int:
        return self._inbox.get(slug, (0, 0))[0]

    def last_sequence(self, slug: str) -> int:
        return self._inbox.get(slug, (0, 0))[1]

    def webhook(self, key: str) -> dict[str, Any] | None:
        return self.db.webhook(key)

    def observatory_counts(self) -> list[tuple[str, str, str, int]]:
        return self.db.observatory_counts()

    def disclosures(self, author: str, case_id: str) -> list[dict[str, Any]]:
        return self.db.disclosures(author, case_id)

    async def until(self, probe: Callable[[], T | None], wait: float) -> T | None:
        """`probe()` once it is not None, woken by each applied batch; None after `wait` seconds."""
        found = probe()
        if found is not None or wait <= 0:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self.changed:
            while found is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self.changed.wait(), remaining)
                except TimeoutError:
                    break
                found = probe()
        return found

    async def wait_notifications(self, slug: str, after: int, limit: int, wait: float) -> list[dict[str, Any]]:
        got = await self.until(lambda: self.notifications(slug, after, limit) or None, wait)
        return got or []

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._open()
        self._task = asyncio.create_task(self._run(), name="edge-store")

    @property
    def following(self) -> bool:
        """Is its tail running (it ends only when the service stops)?"""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # wait for its end, whatever it is
        self._pool.submit(self._close_writer).result()
        self._pool.shutdown(wait=True)
        if self._reader:
            self._reader.close()
            self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"another process uses the read model {self.path} (give each instance its own)") from None
        self._lock_fd = fd
        self._pool.submit(self._open_writer).result()
        self._reader = Reader(self.path)
        self._inbox = {slug: (n, last) for slug, n, last in self._reader.inbox_counts()}

    def _open_writer(self) -> None:
        self._writer = Writer(self.path)

    def _close_writer(self) -> None:
        if self._writer:
            self._writer.close()
            self._writer = None

    async def _write(self, fn: Callable[[Writer], T]) -> T:
        """Run `fn` on the writer, in its own thread: the event loop never waits on the disk."""
        def call() -> T:
            if self._writer is None:
                raise StoreError("the read model is closed")
            return fn(self._writer)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    # --- the tail ---------------------------------------------------------------------
    async def _run(self) -> None:
        # each batch is one transaction with its positions: after any failure it resumes where the file stands
        await keep_tailing(self._tail, "read model")

    async def _tail(self, pulse: Pulse) -> None:
        self.caught_up.clear()  # not ready until this tail has read up to the end offsets again
        topics = list(self._routes)
        pulse.at("metadata")
        counts = await partition_counts(self.kafka, topics)
        if len(counts) < len(topics):  # a topic not there (yet, or again, being created anew): look again
            log.log(logging.INFO if self._waited else logging.WARNING, "read model waiting for its topics",
                    extra={"missing": len(topics) - len(counts)})
            self._waited = True
            await asyncio.sleep(1)
            return
        self._waited = False
        parts = [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))]
        consumer = reader(self.kafka, max_partition_fetch_bytes=16 * 1024 * 1024)
        pulse.at("connect")
        await consumer.start()
        try:
            consumer.assign(parts)
            pulse.at("end offsets")
            end = await consumer.end_offsets(parts)
            pulse.at("positions")
            stored = await self._position(consumer, parts, end)
            pending = {tp for tp in parts if end[tp] > stored.get((tp.topic, tp.partition), 0)}
            synced = await self._synced(consumer, parts) if not pending else 0.0
            progress, suspect = time.monotonic(), dict[TopicPartition, int]()
            while True:
                if self._moved:
                    self._moved = False
                    log.info("read model follows other structures", extra={"structures": len(self.slugs)})
                    return
                pulse.at("lineage")
                changed = await self._watch.due_change() if self._watch else None
                if changed:  # the next tail checks the lineage again: a new incarnation is read from scratch
                    log.warning("read model: the topics it reads changed; reading them again", extra={"reason": changed})
                    return
                pulse.at("fetch")
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                if batch:
                    progress, suspect = time.monotonic(), {}
                    pulse.at("apply")
                    await self._apply(batch, {(tp.topic, tp.partition): records[-1].offset + 1
                                              for tp, records in batch.items() if records})
                elif time.monotonic() - progress > TAIL_STALL_CHECK_S:
                    pulse.at("stall check")
                    suspect = await tail_stalled(consumer, parts, suspect)
                    progress = time.monotonic()
                pulse.at("sync")
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= end[tp]:
                            pending.discard(tp)
                    if not pending:
                        synced = await self._synced(consumer, parts)
                elif time.monotonic() - synced > SYNC_STAMP_S:
                    synced = await self._synced(consumer, parts)
        finally:
            await release(consumer)

    async def _position(self, consumer: Any, parts: list[TopicPartition], end: dict[TopicPartition, int]) -> dict[tuple[str, int], int]:
        """Seek each partition to the position stored with the data (a partition never read: its
        beginning), or every one to its beginning when the file cannot be trusted."""
        stored = await self._write(lambda w: w.positions())
        foreign, lineage = await self._lineage(bool(stored))
        why = foreign or await self._distrust(stored, end)
        if why:
            log.warning("read model read again from the beginning", extra={"reason": why})
            await self._write(lambda w: w.reset(why))
            self._inbox.clear()
            stored = {}
        await self._write(lambda w: w.record_lineage(lineage.dumps()))
        self._watch = Watch(self.kafka, list(self._routes), lineage)
        fresh = [tp for tp in parts if (tp.topic, tp.partition) not in stored]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        for tp in parts:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[tp.topic, tp.partition])
        self.resumed = bool(stored)
        self.records_at_start = sum(max(0, end[tp] - stored.get((tp.topic, tp.partition), 0)) for tp in parts)
        log.info("read model tail started", extra={"resumed": self.resumed, "offsets_to_read": self.records_at_start})
        return stored

    async def _synced(self, consumer: Any, parts: list[TopicPartition]) -> float:
        """Caught up: record that the file held everything up to now (`synced_at`), forget the
        inbox rows Kafka no longer holds, and only then say ready. Returns when (monotonic)."""
        await self._write(lambda w: w.stamp())
        await self._prune(consumer, parts)
        self.caught_up.set()
        return time.monotonic()

    async def _prune(self, consumer: Any, parts: list[TopicPartition]) -> None:
        """Inbox rows older than what Kafka still holds (the delivery window) are deleted."""
        inboxes = [tp for tp in parts if self._routes[tp.topic][0] == "inbox"]
        if not inboxes:
            return
        first = await consumer.beginning_offsets(inboxes)
        gone = {self._routes[tp.topic][1]: first[tp] + 1 for tp in inboxes if first[tp] > 0}  # offset o: sequence o + 1

        def prune(w: Writer) -> int:
            return sum(w.prune_inbox(slug, seq) for slug, seq in gone.items())
        pruned = await self._write(prune) if gone else 0
        if pruned:
            self._inbox = {slug: (n, last) for slug, n, last in self.db.inbox_counts()}

    async def _lineage(self, has_data: bool) -> tuple[str | None, Lineage]:
        """Why the file describes another cluster or another incarnation of a topic than the live
        ones (None: it does not), and the lineage it holds once it is resumed or read again."""
        live = await live_lineage(self.kafka, list(self._routes))
        recorded = Lineage.loads(await self._write(lambda w: w.lineage()))
        if recorded is not None:  # the topics of a structure it follows no more are not its concern
            recorded = Lineage(recorded.cluster_id, {t: i for t, i in recorded.topics.items() if t in self._routes})
        foreign, lineage = adopt(recorded, live, has_data=has_data)
        if foreign is None:
            return None, lineage
        if self.on_discard:
            self.on_discard(foreign.reason)
        return foreign.detail, lineage

    async def _distrust(self, stored: dict[tuple[str, int], int], end: dict[TopicPartition, int]) -> str | None:
        """Why the file cannot be resumed from (None: it can)."""
        if not stored:
            return None
        for tp, last in end.items():
            if stored.get((tp.topic, tp.partition), 0) > last:
                return "a stored position is past the end of its topic (recreated?)"
        synced = await self._write(lambda w: w.synced_at())
        if synced is None:
            return "never caught up since it was written (a deletion may be missing)"
        if time.time() - synced > TOMBSTONE_LIFETIME_S:
            return "last synced before the oldest tombstones still on Kafka"
        return None

    async def _apply(self, batch: dict[TopicPartition, list[Any]], positions: dict[tuple[str, int], int]) -> None:
        records = []
        inbox: dict[str, tuple[int, int]] = {}
        for tp, rs in batch.items():
            table, slug = self._routes[tp.topic]
            for r in rs:
                records.append(Record(table, slug, tp.topic, tp.partition, r.offset, r.key.decode() if r.key else "", r.value))
                if table == "inbox" and r.value is not None:
                    n, _ = inbox.get(slug, self._inbox.get(slug, (0, 0)))
                    inbox[slug] = (n + 1, r.offset + 1)
        authors = self._authors
        await self._write(lambda w: w.apply(records, positions, authors))
        self._inbox |= inbox
        async with self.changed:
            self.changed.notify_all()

