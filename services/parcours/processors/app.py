"""The case-file processor on Quix Streams: the one place where its parts are wired.

- input: every canonical topic and the clock-tick topic, co-partitioned by case id, merged into one
  StreamingDataFrame; one stateful step per record (`RecordProcessor.process`), state in Quix's
  RocksDB store whose changelog is the catalogue's `case-state` topic;
- output: item records on `views.<slug>`, notifications on `inbox.<slug>`, rupture marks, the
  next consent expiry per case on `clock-schedule`, dead letters: all produced by Quix's
  transactional producer, so under `processing_guarantee="exactly-once"` they commit in one Kafka
  transaction with the state changelog and the input offsets. Readers use `read_committed`;
- beside the pipeline, two threads that never touch the pipeline's consumer group: the consent
  clock (`clock.py`) and the lag reporter (admin API only).

Why not faust (README, "Architecture of the processor"): its own per-event cost capped a processor near 3,000 events/s
on these machines, and a worker restarted after SIGKILL lost or never caught up events.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models.topics import TopicManager
from quixstreams.state.rocksdb import RocksDBOptions

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import LIBRDKAFKA_PARTITIONER, KafkaAccess, consumer_lag, produce_waiting
from parcours.casefile.records import Outcome
from parcours.ops.metrics import ProcessorMetrics
from parcours.processors.clock import ConsentClock
from parcours.processors.core import RecordProcessor, Step
from parcours.processors.errors import EngineError
from parcours.processors.quixstate import CaseState
from parcours.processors.watchdog import COMMIT_GUARD
from parcours.topology.catalogue import Catalogue

log = logging.getLogger("parcours.processor")

LAG_INTERVAL_S = 10.0
#: the largest record the processor may write (views and state allow 8 MiB; see the catalogue)
PRODUCER_MAX_BYTES = 16 * 1024 * 1024


def group_id(catalogue: Catalogue) -> str:
    return catalogue.group_id("processor")


class _CatalogueTopics(TopicManager):
    """Quix's topic manager, told that the state changelog is the catalogue's `case-state` topic
    (created and configured by `parcours topics apply`) instead of a name of its own making."""

    def __init__(self, *args: Any, changelog: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changelog = changelog

    def _internal_name(self, topic_type: Any, topic_name: Any, suffix: str) -> str:
        if topic_type == "changelog" and suffix == "default":
            return self._changelog
        return super()._internal_name(topic_type, topic_name, suffix)


#: RocksDB's memory, bounded whatever the number of cases: Quix's defaults (64 MiB memtables, up
#: to 3 per store partition, and a 1 GiB block cache) let resident memory grow with the data
#: written (+131 MB from 10,000 to 100,000 cases). Here: at most 2 memtables of 8 MiB per store
#: partition, and one 64 MiB block cache for the process. Reads of a case's keys are few and
#: recent ones are served by the memtables.
ROCKSDB = RocksDBOptions(write_buffer_size=8 * 1024 * 1024, max_write_buffer_number=2, block_cache_size=64 * 1024 * 1024,
                         target_file_size_base=16 * 1024 * 1024)
#: how long the broker may hold a fetch with nothing to return. Requests on one connection are
#: answered in order, so each offset lookup that Quix makes per assigned partition while it assigns
#: them (state recovery: 42 partitions) waited behind a fetch held the default 500 ms: 18 s
#: before the first event on a fresh start. Records that arrive are returned at once either way.
FETCH_WAIT_MS = 25
#: the longest a transaction may stay open (librdkafka's default: 60 s). An instance that dies
#: and is not restarted leaves its transaction open, and every `read_committed` reader of a
#: partition it wrote (views, inboxes, audit, the changelog the survivor restores) sees nothing
#: past it until the broker aborts it: this long, plus the broker's check interval
#: (`transaction.abort.timed.out.transaction.cleanup.interval.ms`). Measured with the default:
#: a CPTS inbox frozen 60.6 s after one of two instances was SIGKILLed; with 10 s, 10 s. It also
#: bounds every output's delivery (librdkafka caps `message.timeout.ms` at it) and the commit: a
#: checkpoint commits every `commit_interval` (1 s in a backlog), and one whose outputs the broker has not
#: taken within this long is aborted and redone after a restart (nothing lost). 30 s: a third of
#: the freeze, and room for a broker that stalls under load on these 2-core machines.
TRANSACTION_TIMEOUT_MS = 30_000
#: how long an output waits for room in librdkafka's queue before the step fails (within the
#: transaction's life: a longer wait could only end in its abort)
BUFFER_FULL_MAX_S = 20.0
#: the loop's longest wait for a record: how late a due checkpoint may commit when idle (`_Cadence`)
POLL_S = 0.005
#: live traffic (`_Cadence`): the newest record processed is younger than this...
LIVE_LAG_S = 1.0
#: ...and a checkpoint then commits once it is this old (each commit costs broker work: a marker
#: per partition written, so live traffic is grouped in commits this far apart at least)
LIVE_COMMIT_S = 0.025


def create_app(catalogue: Catalogue, kafka: KafkaAccess, core: RecordProcessor, metrics: ProcessorMetrics, *,
               state_dir: Path, commit_interval: float = 1.0, instance: str | None = None) -> tuple[Application, list[threading.Thread]]:
    """The Quix application running `core` (the transport-free step) on `state_dir` (claimed by
    the caller: `claim_state_dir`), and the side threads to start with it (the consent clock, the
    lag reporter). `parcours.bootstrap.processor` wires it."""
    app = _application(catalogue, kafka, state_dir, commit_interval, instance)
    cadence = _Cadence()
    counts = _Counts(metrics)
    _pipeline(app, core, [app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
                          for name in core.input_topics(catalogue)], counts, cadence)
    counts.batched = cadence.install(app, on_turn=counts.tick)
    clock = ConsentClock(kafka, catalogue)
    lag = threading.Thread(target=_report_lag, args=(catalogue, kafka, metrics), name="lag", daemon=True)
    return app, [threading.Thread(target=clock.run, name="consent-clock", daemon=True), lag]


_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def instance_name(state_dir: Path, configured: str | None = None) -> str:
    """A processor instance's stable name: `configured` (`PARCOURS_PROCESSOR_INSTANCE`), else the
    host name and a digest of the state folder, which one instance keeps across its restarts (two
    instances never share a state folder: `claim_state_dir`)."""
    if configured:
        if not _INSTANCE_NAME.match(configured):
            raise EngineError(f"PARCOURS_PROCESSOR_INSTANCE {configured!r}: 1 to 100 of A-Z a-z 0-9 . _ -")
        return configured
    digest = hashlib.blake2b(str(state_dir.resolve()).encode(), digest_size=6).hexdigest()
    return f"{socket.gethostname()}-{digest}"


def claim_state_dir(state_dir: Path) -> Any:
    """Lock the state folder for this process (held until it exits): a second processor on the same
    folder would take the same name, and the two would fence each other's transactions forever."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = (state_dir / ".instance.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise EngineError(f"another processor uses the state folder {state_dir}: give each instance its own (--state-dir)") from None
    return lock


def _application(catalogue: Catalogue, kafka: KafkaAccess, state_dir: Path, commit_interval: float,
                 instance: str | None = None) -> Application:
    group = group_id(catalogue)
    producer_config = {"message.max.bytes": PRODUCER_MAX_BYTES, "linger.ms": 100, "batch.size": 1024 * 1024, **LIBRDKAFKA_PARTITIONER}
    # librdkafka wants a request's timeout within the transaction's
    transaction_config = {"transaction.timeout.ms": TRANSACTION_TIMEOUT_MS, "socket.timeout.ms": TRANSACTION_TIMEOUT_MS}
    # Stable per instance, within the prefix the catalogue's ACLs give the processor's principal.
    # A restarted instance registers the same transactional id, which makes the broker abort the
    # transaction its killed predecessor left open at once: with a new id per start, that
    # transaction held back every read_committed reader of the partitions it wrote (views, inboxes)
    # until transaction.timeout.ms (60 s). The same name as a static group member lets the restart
    # take its partitions back without waiting for the dead member's session to expire.
    name = instance_name(state_dir, instance)
    transactional_id = catalogue.group_id("processor", f"-{name}")
    return Application(
        broker_address=kafka.quix(),
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=commit_interval,
        state_dir=str(state_dir),
        loglevel="WARNING",
        # the catalogue creates every topic (`parcours topics apply`); the changelog is one of them
        auto_create_topics=False,
        producer_extra_config={**producer_config, **transaction_config, "transactional.id": transactional_id},
        consumer_extra_config={"isolation.level": "read_committed", "session.timeout.ms": 10000,
                               "group.instance.id": transactional_id,
                               "heartbeat.interval.ms": 2000, "fetch.wait.max.ms": FETCH_WAIT_MS},
        # a consume call returns once this many records are buffered or after the poll timeout;
        # and the loop checks whether a checkpoint is due at least this often (`_Cadence`)
        max_partition_buffer_size=1000,
        consumer_poll_timeout=POLL_S,
        topic_manager=_topic_manager(catalogue, kafka, group, producer_config),
        rocksdb_options=ROCKSDB,
    )


def _pipeline(app: Application, core: RecordProcessor, topics: list[Any], count: Callable[[Step, float], None],
              cadence: _Cadence) -> None:
    """The agent: every input record through `core.process`, its outputs to Quix's transactional
    producer (so they commit with the state and the input offsets), its figures to the metrics."""
    sdf = app.dataframe(topics[0])
    for t in topics[1:]:
        sdf = sdf.concat(app.dataframe(t))
    producer = TransactionalProducer(app)

    def emit(step: Step, seconds: float) -> None:
        for o in step.outputs:
            producer.produce(o.topic, o.value, o.key, o.headers)
        producer.poll()  # once per input record, not per output
        count(step, seconds)

    fast: list[bool] = []  # whether this Quix version allows the fast case store (decided on the first step)

    def step(value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> None:
        # a record without a key (the case id) is dead-lettered by `process` before any state is used
        cadence.seen(timestamp)
        ctx = message_context()
        if not fast:
            fast.append(CaseState.supported(state))
            if not fast[0]:
                log.warning("this Quix Streams version lacks what the fast case store reads: using its public State (slower)")
        t0 = time.perf_counter()
        done = core.process(ctx.topic, ctx.partition, ctx.offset, key, value, headers,
                            (lambda: CaseState(state)) if fast[0] else (lambda: state))
        emit(done, time.perf_counter() - t0)

    sdf.apply(step, stateful=True, metadata=True)
    without_time_alignment(app)


class _Counts:
    """The step's metrics. Counted in a plain dict per step and handed to the Prometheus children
    at most every `FLUSH_S` (each child's `inc` takes a lock: nine of them per event were 4% of the
    processor), by the processing loop's own checkpoint check (`_Cadence`), which runs whether
    records come or not, and at every forced commit (a rebalance, the stop): a scrape is at most
    this late, except while Quix recovers state (its loop then checks no checkpoint). Without that
    hook every step hands them over at once."""

    FLUSH_S = 0.2

    def __init__(self, metrics: ProcessorMetrics) -> None:
        self.metrics = metrics
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._pending: dict[tuple[str, tuple[str, ...]], int] = {}
        self._latencies: list[float] = []
        self._step_seconds = 0.0
        self._flushed = time.monotonic()
        self.batched = False  # True once `_Cadence.install` has hooked `tick` into the loop (create_app)

    def _child(self, name: str, *labels: str) -> Any:
        child = self._children.get((name, labels))
        if child is None:
            metric = getattr(self.metrics, name)
            child = self._children[(name, labels)] = metric.labels(*labels) if labels else metric
        return child

    def _add(self, name: str, *labels: str, n: int = 1) -> None:
        key = (name, labels)
        self._pending[key] = self._pending.get(key, 0) + n

    def __call__(self, step: Step, seconds: float = 0.0) -> None:
        """Count one step; `seconds`: the time the case-file step took (outside the engine)."""
        self._step_seconds += seconds
        self._add("records_out", n=len(step.outputs))
        self._add("state_writes", n=step.state_writes)
        self._count(step)
        if not self.batched:
            self.flush()

    def _count(self, step: Step) -> None:
        if step.dead_letter:
            self._add("dead_letters", "processor", step.dead_letter)
            log.warning("dead letter", extra={"reason": step.dead_letter})
            return
        label = step.event.event_type if step.event else "tick"
        if step.duplicate:
            self._add("duplicates", label)
            return
        self._add("events", label)
        outcome: Outcome | None = step.outcome
        if outcome is None:
            return
        for r in outcome.items:
            self._add("view_writes", r.structure)
        for n in outcome.notices:
            kind = n.body["type"]
            self._add("notifications", n.structure, kind)
            if kind == "redaction":
                self._add("redactions", n.structure)
        if step.event is not None:
            self._latencies.append(max(0.0, time.time() - step.event.occurred_at.timestamp()))

    def tick(self, force: bool = False) -> None:
        """Called by the processing loop at every turn: flush when `FLUSH_S` has passed (`force`: now)."""
        if (self._pending or self._latencies or self._step_seconds) and (force or time.monotonic() - self._flushed >= self.FLUSH_S):
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (name, labels), n in pending.items():
            self._child(name, *labels).inc(n)
        latencies, self._latencies = self._latencies, []
        for seconds in latencies:
            self.metrics.latency.observe(seconds)
        step_seconds, self._step_seconds = self._step_seconds, 0.0
        if step_seconds:
            self.metrics.step_seconds.inc(step_seconds)
        self._flushed = time.monotonic()


def _topic_manager(catalogue: Catalogue, kafka: KafkaAccess, group: str, producer_config: dict[str, Any]) -> TopicManager:
    from quixstreams.models.topics import TopicAdmin

    return _CatalogueTopics(TopicAdmin(broker_address=kafka.quix(), extra_config=producer_config), group,
                            changelog=catalogue.topic("case-state").name, auto_create_topics=False)


class TransactionalProducer:
    """Quix's own transactional producer: what is produced through it belongs to the checkpoint's
    transaction, exactly as `to_topic` does. We produce through it directly because one record fans
    out to a variable number of records on several topics (a Quix row per output costs 2x the whole
    step), and through its librdkafka handle (`transactional_handle`) rather than Quix's wrapper,
    which polls after every record and registers a Python delivery callback per record (a fifth of
    the step). Nothing is lost by skipping the callback: under exactly-once a record that cannot be
    delivered fails the transaction's commit (librdkafka aborts it), so the checkpoint's offsets are
    never committed past it, and the checkpoint's flush waits for these records like its own."""

    def __init__(self, app: Application) -> None:
        internal = getattr(app, "_producer", None)
        quix = getattr(internal, "_producer", None)
        if internal is None or quix is None or not hasattr(type(quix), "_producer"):
            raise EngineError("this Quix Streams version has no Application._producer._producer: pin the tested version")
        self._quix = quix

    def transactional_handle(self) -> Any:
        """The confluent-kafka Producer inside Quix's, created (with `init_transactions`) on first use."""
        return self._quix._producer  # noqa: SLF001 - see the class docstring

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any = None) -> None:
        # a queue full for too long (the broker takes nothing) fails the step: the transaction aborts
        produce_waiting(self.transactional_handle(), topic, value, key, headers, max_wait_s=BUFFER_FULL_MAX_S)

    def poll(self) -> None:
        self.transactional_handle().poll(0)


class _Cadence:
    """Checkpoint cadence: short while the processor keeps up with live traffic, long in a backlog.

    Readers see outputs only when their transaction commits, so the commit interval bounds the
    event -> view latency (1 s: ~0.5 s on average, up to 1 s), while a short interval
    costs throughput (a commit is ~15 ms of broker round trips, a flush the loop waits for, and a
    marker per partition written: 0.05 s cost a burst 27%, and 0.5 s cost it 15-20% against 1 s;
    2 s gained nothing more). So while the newest record processed is younger than
    `LIVE_LAG_S` (live traffic), a checkpoint commits once it is `LIVE_COMMIT_S` old; when the
    processor is behind (a burst, a restart, a replay) it commits every `commit_interval`,
    at full speed. Only when outputs commit depends on the clock, never what they are.
    Reaches one Quix internal (the context's `commit_checkpoint`, looked up on each loop); if a
    Quix version renames it, commits stay on the interval: slower to show, still correct."""

    def __init__(self) -> None:
        self.newest_ms = 0

    def seen(self, timestamp_ms: int) -> None:
        self.newest_ms = max(self.newest_ms, timestamp_ms)

    def live(self) -> bool:
        return time.time() * 1000 - self.newest_ms < LIVE_LAG_S * 1000

    def install(self, app: Application, on_turn: Callable[[bool], None] = lambda forced: None) -> bool:
        """Wrap the loop's checkpoint check; `on_turn(forced)` is called at each turn. False: not installed."""
        context = getattr(app, "_processing_context", None)
        if context is None or not hasattr(context, "commit_checkpoint"):
            return False
        commit_checkpoint = context.commit_checkpoint

        def commit(force: bool = False, revoking: bool = False) -> None:
            on_turn(force or revoking)
            if not force and self.live():
                checkpoint = context.checkpoint
                age = time.monotonic() - getattr(checkpoint, "_created_at", time.monotonic())
                force = age >= LIVE_COMMIT_S and not checkpoint.empty()
            with COMMIT_GUARD:  # a commit blocked for ever in librdkafka ends the process (watchdog.py)
                commit_checkpoint(force=force, revoking=revoking)

        context.commit_checkpoint = commit
        return True


def without_time_alignment(app: Application) -> None:
    """Merged topics make Quix align partitions by timestamp, which costs a watermark round trip
    per buffer refill (~20% of the step). The case fold is order-independent, so alignment buys
    nothing here. If a Quix version renames the flag, alignment stays on: slower, still correct."""
    registry = getattr(app, "_dataframe_registry", None)
    if registry is not None and hasattr(registry, "_requires_time_alignment"):
        registry._requires_time_alignment = False  # noqa: SLF001 - Quix has no public switch (see above)


def _report_lag(catalogue: Catalogue, kafka: KafkaAccess, metrics: ProcessorMetrics) -> None:
    """Records behind, per canonical partition: end offsets minus the group's committed offsets,
    read through an admin request and a group-less consumer: never a member of the processor's group."""
    parts = [(t.name, p) for t in catalogue.canonical() for p in range(t.partitions)]
    while True:
        try:
            lags = asyncio.run(consumer_lag(kafka, group_id(catalogue), parts))
            for (topic, partition), n in lags.items():
                metrics.lag.labels(topic, str(partition)).set(n)
        except ClusterError as exc:
            log.warning("lag report failed", extra={"error": type(exc.__cause__).__name__})
        time.sleep(LAG_INTERVAL_S)
