"""`parcours views rebuild`: recompute every view from the canonical topics into fresh state.

It reads every canonical topic from the beginning and feeds each record to the processor's own
step (`RecordProcessor.process`) over in-memory stores, so live and rebuilt views come from the
same code. The topics are co-partitioned by case, so the work is split by partition between one
process per core. `compare` reports how the live `views.<slug>` topics differ; `write` publishes the
rebuilt item records (and tombstones for items that should not exist). `state rebuild`
(staterebuild.py) reads and runs the step through the same code, with a `Scope` of its own.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from parcours.bus.kafkaio import KafkaAccess, end_offsets, read_latest, read_to_end
from parcours.casefile.records import assemble
from parcours.processors.core import MemoryState, RecordProcessor
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy

K = TypeVar("K", bound=tuple[Any, ...])

#: (structure, "<case_id>/<item>") -> item record
Views = dict[tuple[str, bytes], bytes]
#: (input partition, case id) -> the case's store, key -> value bytes (`state rebuild`)
States = dict[tuple[int, bytes], dict[str, bytes]]
#: (topic, key) -> the last record the step wrote on one of the `Scope.kept` topics (None: a tombstone)
Latest = dict[tuple[str, bytes], bytes | None]


@dataclass
class Rebuild:
    #: no repr: Python 3.11's `asyncio.run` formats its main task's result, whole, when it restores
    #: the SIGINT handler it installed (a ValueError message it builds and drops): 7.3 s for the 1.5M
    #: view records of a worker's share of 1M events, in each worker and again in the parent
    views: Views = field(repr=False)
    events: int
    cases: int
    undecodable: int
    seconds: float = 0.0
    states: States = field(default_factory=dict, repr=False)
    latest: Latest = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Scope:
    """What a rebuild reads and keeps. `views rebuild`: the canonical topics to their end, the step
    in `views_only` mode at one `now`. `state rebuild` (staterebuild.py): the processor's input topics
    (clock ticks too) to the positions given, the whole step (`whole_step`), each record at its own
    time (its timestamp, never before `floor_ms`), the cases' stores and the last record per key of
    the `kept` topics."""

    topics: tuple[str, ...]
    ends: Mapping[tuple[str, int], int]
    now: datetime | None = None
    whole_step: bool = False
    floor_ms: int = 0
    kept: frozenset[str] = frozenset()


def _state_of(states: dict[tuple[int, bytes], MemoryState], where: tuple[int, bytes]) -> Callable[[], MemoryState]:
    # per input partition, as Quix keeps one store per partition
    return lambda: states.setdefault(where, MemoryState())


async def rebuild(catalogue: Catalogue, kafka: KafkaAccess, policy: KindPolicy, now: datetime | None = None,
                  progress: Progress | None = None, workers: int | None = None, scope: Scope | None = None) -> Rebuild:
    """Every view again from the canonical topics, up to their end offsets of one moment (the start)
    (or what `scope` says). The canonical topics are co-partitioned by case, so their partitions are
    shared out between `workers` processes (default: one per core), each running the processor's
    step over the cases of its partitions; their views are then merged. `progress(done, seconds,
    total)`: records read, of `total` up to the end offsets (an upper bound: records before a
    topic's first offset are gone)."""
    if scope is None:
        canonical = [t.name for t in catalogue.canonical()]
        # the cluster's partitions, not the catalogue's: a topic with more (a drift) is still read whole
        scope = Scope(tuple(canonical), await end_offsets(kafka, canonical), now or datetime.now(UTC))
    ends = scope.ends
    total = sum(ends.values())
    partitions = 1 + max((p for _, p in ends), default=0)
    workers = max(1, min(workers or os.cpu_count() or 1, partitions))
    if workers == 1:
        one = None if progress is None else (lambda done, secs: progress(done, secs, total))
        return await _rebuild_partitions(catalogue, kafka, policy, scope, None, one)
    t0 = time.monotonic()
    shares = share_out(ends, workers)
    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop and client threads
    done = ctx.Array("q", workers)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(done,)) as pool:
        futures = [loop.run_in_executor(pool, _worker, catalogue, kafka, policy, scope, share, w)
                   for w, share in enumerate(shares)]
        while not all(f.done() for f in futures):
            await asyncio.wait(futures, timeout=_REDRAW_S)
            if progress:
                progress(sum(done[:]), time.monotonic() - t0, total)
        parts = [f.result() for f in futures]
    out = Rebuild({}, sum(p.events for p in parts), sum(p.cases for p in parts), sum(p.undecodable for p in parts),
                  time.monotonic() - t0)
    for part in parts:  # the workers' partitions are disjoint
        out.views.update(part.views)
        out.states.update(part.states)
        out.latest.update(part.latest)
    return out


def share_out(ends: Mapping[tuple[str, int], int], workers: int) -> list[list[int]]:
    """The partition numbers split between `workers` so that each reads about as many records (the
    largest partition first, to the least loaded worker): cases are not spread evenly over
    partitions, and the rebuild lasts as long as its busiest worker. Every worker gets at least one."""
    size: dict[int, int] = {}
    for (_, p), n in ends.items():
        size[p] = size.get(p, 0) + n
    shares: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for p in sorted(size, key=lambda p: (-size[p], p)):
        w = min(range(workers), key=lambda w: (len(shares[w]) > 0, load[w], w))
        shares[w].append(p)
        load[w] += size[p]
    return [sorted(s) for s in shares if s]


_DONE: Any = None  # in a worker: its slot of the shared progress counters


def _init_worker(done: Any) -> None:
    global _DONE  # noqa: PLW0603 - one per worker process, set once by the pool's initializer
    _DONE = done


def _worker(catalogue: Catalogue, kafka: KafkaAccess, policy: KindPolicy, scope: Scope, partitions: list[int],
            w: int) -> Rebuild:
    def count(n: int, _secs: float) -> None:
        _DONE[w] = n

    return asyncio.run(_rebuild_partitions(catalogue, kafka, policy, scope, partitions, count))


async def _rebuild_partitions(catalogue: Catalogue, kafka: KafkaAccess, policy: KindPolicy, scope: Scope,
                              partitions: list[int] | None, progress: Callable[[int, float], None] | None) -> Rebuild:
    core = RecordProcessor(catalogue, policy, views_only=not scope.whole_step)
    slug_of = {name: slug for slug, name in core.views.items()}
    states: dict[tuple[int, bytes], MemoryState] = {}
    views: Views = {}
    latest: Latest = {}
    events = bad = 0
    t0 = time.monotonic()
    async for records in _in_reading_order(catalogue, kafka, list(scope.topics), partitions, scope.ends):
        for r in records:
            now = scope.now or datetime.fromtimestamp(max(r.timestamp, scope.floor_ms) / 1000, UTC)
            step = core.process(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or []),
                                _state_of(states, (r.partition, r.key)), now)
            if step.dead_letter:
                bad += 1  # the processor dead-lettered it too
                continue
            events += 1
            for o in step.outputs:
                if o.key is None:
                    continue
                slug = slug_of.get(o.topic)
                if slug is None:
                    if o.topic in scope.kept:
                        latest[(o.topic, o.key)] = o.value
                elif o.value is None:
                    views.pop((slug, o.key), None)
                else:
                    views[(slug, o.key)] = o.value
        if progress:
            progress(events + bad, time.monotonic() - t0)
    kept = {where: s.data for where, s in states.items()} if scope.whole_step else {}
    return Rebuild(views, events, len({case for _, case in states}), bad, time.monotonic() - t0, kept, latest)


#: the events that may change who sees what (a referral's parties, a redirection, a commission's
#: invited, a consent): their topics are read first
RULE_EVENTS = ("ReferralSubmitted", "ReferralStatusChanged", "CommissionOpened", "ConsentRecorded")


async def _in_reading_order(catalogue: Catalogue, kafka: KafkaAccess, topics: list[str],
                            partitions: list[int] | None, ends: Mapping[tuple[str, int], int]) -> AsyncIterator[list[Any]]:
    """The records of `topics` up to `ends`, the end offsets of one moment (the rebuild's start), one
    topic after the other, those of `RULE_EVENTS` first. Views do not depend on the order of a case's events, but
    the cost does: an event that changes the rules evaluates every item of its case again, so read
    after the case's messages (as reading every topic at once gives it) it does the work again (10%
    more on cases of 100 events). One moment for all: a message posted after a consent withdrawal
    that the rebuild did not read must not be read either, or it would be computed as visible."""
    first = {catalogue.for_event(t).name for t in RULE_EVENTS}
    for topic in sorted(topics, key=lambda t: t not in first):  # stable: the catalogue's order otherwise
        async for records in read_to_end(kafka, [topic], partitions=partitions, until=ends):
            yield records


_REDRAW_S = 0.5


#: (records done, seconds, records in all)
Progress = Callable[[int, float, int], None]


def print_progress() -> Progress:
    """A progress bar on stderr, redrawn at most twice a second."""
    last = [0.0]

    def show(done: int, secs: float, total: int) -> None:
        if secs - last[0] < _REDRAW_S:
            return
        last[0] = secs
        rate = done / secs if secs else 0.0
        if total:
            width = 30
            filled = int(width * min(1.0, done / total))
            bar = "#" * filled + "-" * (width - filled)
            print(f"\rrebuild [{bar}] {done:,}/{total:,} records {rate:,.0f}/s", end="", file=sys.stderr, flush=True)
        else:
            print(f"\rrebuild {done:,} records {rate:,.0f}/s", end="", file=sys.stderr, flush=True)

    return show


async def live_views(catalogue: Catalogue, kafka: KafkaAccess) -> Views:
    """The latest item record per key of every `views.<slug>` topic, read with one consumer."""
    slug_of = {catalogue.per_structure("views", slug).name: slug for slug in catalogue.registry.structures}
    return {(slug_of[topic], key): value for (topic, key), value in (await read_latest(kafka, list(slug_of))).items()}


def assembled(views: Views) -> dict[str, dict[str, Any]]:
    """Whole views, keyed `<slug>/<case_id>`, from item records (what an adapter serves)."""
    by_case: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (slug, key), value in views.items():
        case_id = key.decode().split("/", 1)[0]
        by_case.setdefault((slug, case_id), []).append(json.loads(value))
    out = {}
    for (slug, case_id), records in sorted(by_case.items()):
        view = assemble(case_id, slug, records)
        if view is not None:
            out[f"{slug}/{case_id}"] = view
    return out


def differences(live: Views, rebuilt: Views) -> list[str]:
    out = []
    for slug, key in sorted(set(live) | set(rebuilt)):
        where = f"{slug}: {key.decode()}"
        if (slug, key) not in rebuilt:
            out.append(f"{where}: live item should not exist")
        elif (slug, key) not in live:
            out.append(f"{where}: missing from the live views")
        elif live[(slug, key)] != rebuilt[(slug, key)]:
            out.append(f"{where}: differs")
    return out


def changed(live: Mapping[K, bytes], rebuilt: Mapping[K, bytes | None]) -> list[tuple[K, bytes | None]]:
    """What to write for the live records to become the rebuilt ones: each key whose value differs,
    with its rebuilt value (None, a tombstone, for a live key the rebuild does not have), in key order."""
    return [(k, rebuilt.get(k)) for k in sorted(set(live) | set(rebuilt)) if live.get(k) != rebuilt.get(k)]


async def write(catalogue: Catalogue, kafka: KafkaAccess, live: Views, rebuilt: Views) -> int:
    """Publish what differs; return how many records were written."""
    producer = kafka.producer(max_request_size=16 * 1024 * 1024)
    await producer.start()
    todo = changed(live, rebuilt)
    try:
        for (slug, key), value in todo:
            await producer.send(catalogue.per_structure("views", slug).name, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return len(todo)
