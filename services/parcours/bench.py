"""`parcours bench`: throughput, memory and latency figures on the real broker, printed, never asserted.

On topics of its own (prefix `bench<random>`), from one run (`--only processor|rebuild|edge`: one part):
1. raw produce, and raw consume + decode (confluent-kafka, the client under Quix Streams, and the
   project's Avro codec): the ceiling of the plumbing for the processor;
2. the engine baseline: a Quix Streams pipeline over the same records and settings as the
   processor (exactly-once, RocksDB) that only updates state and sends one output per event;
3. the processor (`parcours processor`, a subprocess): events/s from its first event to no lag,
   for cases of 10 events and of 1,000 events, its ratios to 1 and 2, its resident memory
   after 10,000 and after 100,000 cases, and a restart after SIGKILL (to its first event, and a
   new case's way to a view once it has caught up); where its time goes per event (the case-file
   step, the rest, its CPU) and the rate a free step would reach; two instances in one group;
4. `views rebuild` over `--rebuild-events` events (default 1,000,000);
5. the HTTP edge (`benchload`), with the processor running: accepted message POSTs/s of one DAC
   adapter and of a bare FastAPI endpoint that does nothing, served the same way, both driven by
   `wrk` (closed loop, 1 thread, 32 connections, 15 s), and their ratio; then an open loop at a
   fixed rate (500 POSTs/s for 60 s, sent on schedule whatever the answers) against the adapter:
   scheduled send -> 202 and 202 -> the message's item in `views.dac-31` (p50, p99, max), errors,
   and accepted messages never seen in the view; and the whole system's CPU per accepted POST.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import uvloop
from confluent_kafka import Consumer, Producer, TopicPartition

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess, consumer_lag, produce_waiting
from parcours.contract.codec import Codec
from parcours.contract.models import Event, build_event
from parcours.devbroker.broker import free_port
from parcours.processors.app import group_id
from parcours.security.credentials import ADMIN
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import default_policy, dev_token


def case_events(cases: int, per_case: int, tag: str) -> Iterator[Event]:
    """Each case: a referral, a consent sharing discussions with the CRT kind, then messages."""
    now = datetime.now(UTC)
    for c in range(cases):
        case = f"case-{tag}{c}"
        yield build_event("ReferralSubmitted", {
            "event_id": str(uuid.uuid4()), "case_id": case, "occurred_at": now, "source": "cpts-31-nord",
            "referral_id": f"r{c}", "to_structure": "dac-31",
            "person": {"pseudonym": f"P-{tag}{c:06d}", "birth_year": 1940, "postcode": "31000"},
            "reasons": ["bench"], "urgency": "routine", "summary": "Synthetic benchmark case."})
        if per_case > 1:
            yield build_event("ConsentRecorded", {
                "event_id": str(uuid.uuid4()), "case_id": case, "occurred_at": now, "source": "dac-31",
                "consent_id": f"c{c}", "grantee": "crt", "categories": ["discussion"], "decision": "permit",
                "method": "oral"})
    for i in range(max(0, per_case - 2)):
        for c in range(cases):
            yield build_event("MessagePosted", {
                "event_id": str(uuid.uuid4()), "case_id": f"case-{tag}{c}", "occurred_at": now, "source": "dac-31",
                "message_id": f"m{i}", "body": "Synthetic benchmark message."})


def produce(kafka: KafkaAccess, cat: Catalogue, events: Iterator[Event]) -> tuple[int, float]:
    codec = Codec()
    producer = Producer(kafka.producer_config(**{"linger.ms": 20, "batch.size": 512 * 1024, "queue.buffering.max.messages": 1_000_000}))
    n = 0
    t0 = time.perf_counter()
    for e in events:
        enc = codec.encode(e)
        produce_waiting(producer, cat.for_event(e.event_type).name, enc.value, enc.key, enc.headers)
        n += 1
        if n % 5000 == 0:
            producer.poll(0)
    producer.flush(120)
    return n, time.perf_counter() - t0


def consume_decode(kafka: KafkaAccess, cat: Catalogue) -> tuple[int, float]:
    """Every canonical record from the beginning, decoded: the plumbing's ceiling."""
    codec = Codec()
    consumer = Consumer({**kafka.librdkafka(), "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    parts = [TopicPartition(t.name, p) for t in cat.canonical() for p in range(t.partitions)]
    ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    total = sum(ends.values())
    consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in parts])
    n = 0
    t0 = time.perf_counter()
    while n < total:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                continue
            codec.decode(msg.value(), msg.headers(), topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
            n += 1
    secs = time.perf_counter() - t0
    consumer.close()
    return n, secs


def engine_baseline(prefix: str, total: int) -> float:
    """A Quix pipeline with the processor's settings that only updates state and sends one
    output per event (runs in a subprocess: Quix owns the main thread's signals)."""
    from quixstreams import Application

    from parcours.bootstrap import resolve_kafka
    from parcours.processors.app import TransactionalProducer, without_time_alignment
    from parcours.settings import get_settings

    kafka = resolve_kafka(ADMIN)

    cat = Catalogue.load(prefix=prefix)
    out = cat.topic("observatory").name
    app = Application(broker_address=kafka.quix(), consumer_group=f"bench-engine-{uuid.uuid4().hex[:6]}",
                      auto_offset_reset="earliest", processing_guarantee="exactly-once",
                      commit_interval=get_settings().processor_commit_interval_s,
                      state_dir=str(Path(tempfile.gettempdir()) / f"parcours-bench-engine-{uuid.uuid4().hex[:6]}"), loglevel="WARNING",
                      max_partition_buffer_size=1000, consumer_poll_timeout=0.1)
    topics = [app.topic(t.name, key_deserializer="bytes", value_deserializer="bytes") for t in cat.canonical()]
    sdf = app.dataframe(topics[0])
    for t in topics[1:]:
        sdf = sdf.concat(app.dataframe(t))
    producer = TransactionalProducer(app)
    seen = [0, 0.0]

    def step(value: Any, key: Any, timestamp: int, headers: Any, state: Any) -> None:
        if seen[0] == 0:
            seen[1] = time.perf_counter()
        state.set("n", (state.get("n") or 0) + 1)
        producer.produce(topic=out, value=value[:64], key=key)
        seen[0] += 1
        if seen[0] >= total:
            app.stop()

    sdf.apply(step, stateful=True, metadata=True)
    without_time_alignment(app)
    app.run()
    return total / (time.perf_counter() - seen[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (`/proc/<pid>/stat`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


class CpuMeter:
    """CPU time of some processes (and of this one's finished children: the load generator)
    from now until `per`: where a whole system's time goes per request. A process that falls
    behind in that window (the processor) shows less than its share."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        self.start["load generator"] = _children_cpu_seconds()

    def per(self, requests: int) -> dict[str, float]:
        """µs of CPU per request, by process."""
        now = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        now["load generator"] = _children_cpu_seconds()
        return {name: (now[name] - self.start[name]) / max(1, requests) * 1e6 for name in now}


def _children_cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _broker_pid(where: Cluster) -> dict[str, int]:
    """The embedded broker's process, when the bench runs on it (an external cluster's is not ours to read)."""
    from parcours.bootstrap import embedded_broker

    info = embedded_broker(where.settings).status()
    return {"broker": info.pid} if info is not None and info.bootstrap == where.base.bootstrap else {}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ProcessorRun:
    """`parcours processor` as a subprocess on the bench topics, with figures read from outside."""

    def __init__(self, kafka: KafkaAccess, cat: Catalogue, env: dict[str, str], logdir: Path, instance: str = "") -> None:
        """`instance`: a second instance in the same group needs a state folder (and so a name) of its own."""
        self.kafka, self.cat = kafka, cat
        self.parts = [(t.name, p) for t in cat.canonical() for p in range(t.partitions)]
        self.port = free_port()
        self.split: dict[str, float] = {}  # set by `rate`
        name = f"{cat.prefix}{instance}"
        self.proc = _spawn(["processor", "--metrics-port", str(self.port), "--state-dir", str(logdir / f"state-{name}")],
                           env, logdir / f"processor-{name}.log")

    #: read from the processor's metrics at the first and the last event of a `rate`
    SPLIT = ("parcours_processor_step_seconds_total", "parcours_processor_records_written_total",
             "parcours_processor_state_writes_total")

    def _metrics(self) -> dict[str, float]:
        """Events seen (applied or duplicates) and the `SPLIT` counters, summed over their labels."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return {}
        sums: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.split("{", 1)[0].split(" ", 1)[0], float(line.rsplit(" ", 1)[1])
            if name in ("parcours_processor_events_total", "parcours_processor_duplicates_total"):
                sums["events"] = sums.get("events", 0.0) + value
            elif name in self.SPLIT:
                sums[name] = sums.get(name, 0.0) + value
        sums["cpu_seconds"] = _cpu_seconds(self.proc.pid)
        return sums

    def events_seen(self) -> float:
        return self._metrics().get("events", 0.0)

    def lag(self) -> int:
        return sum(asyncio.run(consumer_lag(self.kafka, group_id(self.cat), self.parts)).values())

    def rate(self, expected: float, timeout: float = 1800) -> float:
        """Events/s from the first event seen to the last one of `expected` (counted by the metrics).
        `split` then holds where the time went over the same window (`time_split`)."""
        deadline = time.monotonic() + timeout
        start_count = self.events_seen()
        first: tuple[float, dict[str, float]] | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("bench: the processor exited")
            now = self._metrics()
            seen = now.get("events", 0.0)
            if first is None and seen > start_count:
                first = (time.perf_counter(), now)
            if seen >= expected:
                t1 = time.perf_counter()
                if first is None:
                    raise RuntimeError("bench: the processor had seen every event before the run began")
                self.split = time_split(first[1], now, max(1e-6, t1 - first[0]))
                return (seen - first[1]["events"]) / max(1e-6, t1 - first[0])
            time.sleep(0.05)
        raise RuntimeError("bench: timed out waiting for the processor")

    def wait_for(self, expected: float, timeout: float = 1800) -> None:
        """Until the processor has seen `expected` events (no rate: memory is what is read then)."""
        deadline = time.monotonic() + timeout
        while self.events_seen() < expected:
            if self.proc.poll() is not None:
                raise RuntimeError("bench: the processor exited")
            if time.monotonic() > deadline:
                raise RuntimeError("bench: timed out waiting for the processor")
            time.sleep(0.05)

    def rss_mb(self) -> float:
        return _rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def rate_of_instances(runs: list[ProcessorRun], expected: float, timeout: float = 1800) -> float:
    """Events/s of instances sharing one group's partitions, from the moment every one of them has
    processed an event (they have joined the group and split the partitions) to `expected` seen by all."""
    deadline = time.monotonic() + timeout
    first: tuple[float, float] | None = None
    while time.monotonic() < deadline:
        if any(r.proc.poll() is not None for r in runs):
            raise RuntimeError("bench: a processor exited")
        seen = [r.events_seen() for r in runs]
        if first is None and all(seen):
            first = (time.perf_counter(), sum(seen))
        if sum(seen) >= expected:
            if first is None:
                raise RuntimeError("bench: one instance did nothing: the partitions were not shared")
            return (sum(seen) - first[1]) / max(1e-6, time.perf_counter() - first[0])
        time.sleep(0.05)
    raise RuntimeError("bench: timed out waiting for the processors")


def time_split(first: dict[str, float], last: dict[str, float], seconds: float) -> dict[str, float]:
    """Where the processor's time per event went between two readings of its metrics: the
    case-file step (decode, fold, projection), and the rest (the stream engine, the Kafka client,
    the commits and their waits), the processor's CPU time (all its threads: the step, Quix,
    librdkafka's own threads), the records it wrote per event; and the rate it would
    reach were the step free: the ceiling of any processor writing what this one writes."""
    events = last["events"] - first["events"]
    if events <= 0:
        raise ValueError("no event between the two readings")
    each = {name: (last[name] - first[name]) / events for name in first}  # per event, over the window
    step, per_event = each["parcours_processor_step_seconds_total"], seconds / events
    return {"us_per_event": per_event * 1e6, "cpu_us_per_event": each["cpu_seconds"] * 1e6, "step_us_per_event": step * 1e6,
            "rest_us_per_event": (per_event - step) * 1e6,
            "records_written_per_event": each["parcours_processor_records_written_total"],
            "state_writes_per_event": each["parcours_processor_state_writes_total"],
            "free_step_events_per_s": 1 / max(1e-9, per_event - step)}


def _restart_after_kill(kafka: KafkaAccess, cat: Catalogue, env: dict[str, str], logdir: Path,
                        proc: ProcessorRun) -> tuple[ProcessorRun, dict[str, float]]:
    """SIGKILL the processor while it has a transaction open (a burst of new cases arriving), start
    it again, and time: its first event, and a new case's item readable (read_committed) in a
    view once it has caught up (a transaction left open by the killed instance would hold it back)."""
    more, _ = produce(kafka, cat, case_events(2000, 2, "k"))
    start = proc.events_seen()
    proc.wait_for(start + more / 4)
    proc.proc.kill()
    proc.proc.wait()
    t0 = time.perf_counter()
    again = ProcessorRun(kafka, cat, env, logdir)
    try:
        again.wait_for(1)
        first = time.perf_counter() - t0
        _wait_drained(again, 600)
        probe = next(iter(case_events(1, 1, f"probe{uuid.uuid4().hex[:6]}")))
        t1 = time.perf_counter()
        produce(kafka, cat, iter([probe]))
        asyncio.run(_until_in_view(kafka, cat.per_structure("views", BENCH_STRUCTURE).name, f"{probe.case_id}/".encode()))
    except BaseException:
        again.stop()
        raise
    return again, {"first_event_s": first, "new_event_to_view_s": time.perf_counter() - t1}


async def _until_in_view(kafka: KafkaAccess, topic: str, prefix: bytes, timeout: float = 300) -> None:
    from aiokafka import TopicPartition

    from parcours.bus.kafkaio import partition_counts, reader

    consumer = reader(kafka)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range((await partition_counts(kafka, [topic]))[topic])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=100)
            if any(r.key is not None and r.key.startswith(prefix) for records in got.values() for r in records):
                return
        raise RuntimeError("bench: the new case never reached the view")
    finally:
        await consumer.stop()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`parcours <args>` as a child process logging to `log` (the child keeps the file open, not us)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "parcours.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def _fresh(where: Cluster) -> tuple[Catalogue, dict[str, str]]:
    """Topics, principals and ACLs of a prefix of its own; the environment of its services."""
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    cat = Catalogue.load(prefix=prefix)
    asyncio.run(admin.apply(cat, where.access(ADMIN), where.credentials))
    # the load generator posts as one partner, far above the per-token rate a partner gets
    return cat, {**os.environ, **where.env(), "PARCOURS_TOPIC_PREFIX": prefix, "PARCOURS_RATE_LIMIT_PER_S": "1000000"}


class _Figures(dict[str, Any]):
    """The figures, each also printed to stderr as soon as it is measured (a late failure keeps them)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        print(f"bench: {key} = {value}", file=sys.stderr, flush=True)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


@dataclass(frozen=True)
class EdgeLoad:
    """The HTTP edge's load (`parcours bench` options)."""

    wrk_seconds: float = 15.0
    wrk_connections: int = 32
    rate: float = 500.0  # open loop: POSTs per second
    open_seconds: float = 60.0
    grace_s: float = 10.0  # how long a message accepted by the open loop may take to reach the view
    cases: int = 500


PARTS = ("processor", "rebuild", "edge", "restart")
#: views in the adapter's read model when its restart is timed
RESTART_VIEWS = (10_000, 100_000)


def run(where: Cluster, *, cases: int, per_case: int, long_cases: int, long_per_case: int, rss_cases: int,  # noqa: PLR0913 - one keyword per `parcours bench` option
        rebuild_events: int, edge: EdgeLoad, logdir: Path, only: str | None = None) -> dict[str, Any]:
    """Every part of the bench, or `only` one of PARTS."""
    logdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = _Figures()
    kafka = where.access(ADMIN)  # the bench's own clients; each service runs as its own principal
    if only in (None, "processor"):
        out.update(cases=cases, per_case=per_case)
        _processor(where, kafka, out, cases=cases, per_case=per_case, long_cases=long_cases, long_per_case=long_per_case,
                   rss_cases=rss_cases, logdir=logdir)
    # 4. rebuild at scale
    if only in (None, "rebuild") and rebuild_events:
        from parcours.processors import rebuild as rb

        cat3, _ = _fresh(where)
        rcases = max(1, rebuild_events // 100)
        produce(kafka, cat3, case_events(rcases, rebuild_events // rcases, "r"))
        result = asyncio.run(rb.rebuild(cat3, kafka, default_policy(), progress=rb.print_progress()))
        print(file=sys.stderr)
        out["rebuild_events"] = result.events
        out["rebuild_seconds"] = result.seconds
    # 5. the HTTP edge on fresh, small topics: the adapter's start-up read of every view it serves
    #    (issue 13) must not be what this figure measures
    if only in (None, "edge"):
        cat4, env4 = _fresh(where)
        produce(kafka, cat4, case_events(edge.cases, 2, "a"))
        _edge(kafka, cat4, env4, logdir, edge, out, broker=_broker_pid(where))
    # 6. the adapter's restart with its read model holding many views
    if only in (None, "restart"):
        cat5, env5 = _fresh(where)
        _restart(kafka, cat5, env5, logdir, out)
    return out


def _restart(kafka: KafkaAccess, cat: Catalogue, env: dict[str, str], logdir: Path, out: dict[str, Any]) -> None:
    """Start, then restart, a DAC adapter whose views topic holds 10,000 then 100,000 case views
    (one item record each, as the processor writes them): the first start reads them all, a
    restart resumes at the positions its read model stored (issue 13: flat, whatever the history)."""
    topic = cat.per_structure("views", BENCH_STRUCTURE).name
    edge_dir = logdir / f"edge-{cat.prefix}"
    env = {**env, "PARCOURS_EDGE_DIR": str(edge_dir)}
    figures: dict[str, dict[str, float]] = {}
    written = 0
    for views in RESTART_VIEWS:
        written += _write_views(kafka, topic, written, views - written)
        first = _timed_start(env, logdir)
        restart = _timed_start(env, logdir)
        figures[str(views)] = {"first_start_s": first[0], "restart_s": restart[0], "rss_mb": restart[1],
                               "offsets_read_at_restart": restart[2]}
        out["adapter_restart"] = figures
    out["adapter_store_mb"] = sum(f.stat().st_size for f in edge_dir.glob("*")) / 1e6


def _write_views(kafka: KafkaAccess, topic: str, start: int, n: int) -> int:
    producer = Producer(kafka.producer_config(**{"linger.ms": 20, "batch.size": 512 * 1024}))
    for i in range(start, start + n):
        record = {"item": f"referral:r{i}", "first": [1764000000000 + i, f"e{i}"], "basis": "referral_party",
                  "entry": {"referral_id": f"r{i}", "from": "cpts-31-nord", "to": BENCH_STRUCTURE, "urgency": "soon",
                            "reasons": ["retour à domicile"], "summary": "Synthetic benchmark view item of a plausible size.",
                            "person": {"pseudonym": f"P-{i:08d}", "birth_year": 1940, "postcode": "31000"}}}
        produce_waiting(producer, topic, json.dumps(record).encode(), f"case-v{i}/referral:r{i}".encode())
    producer.flush(120)
    return n


def _timed_start(env: dict[str, str], logdir: Path) -> tuple[float, float, int]:
    """(seconds from spawn to ready, resident MB once ready, offsets its read model read)."""
    port = free_port()
    t0 = time.perf_counter()
    proc = _spawn(["adapter", "dac", "--port", str(port)], env, logdir / "adapter-restart.log")
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError("bench: the adapter exited")
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if r.status_code == HTTPStatus.OK:
                    return time.perf_counter() - t0, _rss_mb(proc.pid), int(r.json()["read_model"]["offsets_read_at_start"])
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bench: timed out waiting for the adapter")
            time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _processor(where: Cluster, kafka: KafkaAccess, out: dict[str, Any], *, cases: int, per_case: int, long_cases: int,
               long_per_case: int, rss_cases: int, logdir: Path) -> None:
    # 1. the burst on fresh topics, produced before anything reads it
    cat, env = _fresh(where)
    n, secs = produce(kafka, cat, case_events(cases, per_case, "a"))
    out["events"] = n
    out["produce_events_per_s"] = n / secs
    n, secs = consume_decode(kafka, cat)
    out["raw_consume_decode_events_per_s"] = n / secs
    # 2. the engine baseline on the same records
    res = subprocess.run([sys.executable, "-c", ("import sys; from parcours.bench import engine_baseline; "
                                                 "print(engine_baseline(sys.argv[1], int(sys.argv[2])))"),
                          cat.prefix, str(n)],
                         capture_output=True, text=True, timeout=1800, check=True, env=env)
    out["engine_baseline_events_per_s"] = float(res.stdout.strip().splitlines()[-1])
    # 3. the processor on the same records (cases of `per_case` events), then memory as cases grow
    proc = ProcessorRun(kafka, cat, env, logdir)
    try:
        out["processor_events_per_s"] = proc.rate(n)
        out["processor_time_split"] = proc.split
        rss = {cases: proc.rss_mb()}
        out["processor_rss_mb_at_cases"] = rss
        more = max(0, rss_cases - cases)
        if more:
            m, _ = produce(kafka, cat, case_events(more, 1, "b"))
            proc.wait_for(n + m)
            rss[rss_cases] = proc.rss_mb()
            out["processor_rss_mb_at_cases"] = rss
        # 3a. a restart after SIGKILL, as the supervisor does it (same instance, same state folder)
        proc, out["processor_restart_after_kill"] = _restart_after_kill(kafka, cat, env, logdir, proc)
    finally:
        proc.stop()
    # 3b. long cases on fresh topics
    cat2, env2 = _fresh(where)
    n2, _ = produce(kafka, cat2, case_events(long_cases, long_per_case, "l"))
    proc = ProcessorRun(kafka, cat2, env2, logdir)
    try:
        out["processor_long_cases_events_per_s"] = proc.rate(n2)
        out["long_cases"] = long_cases
        out["long_per_case"] = long_per_case
    finally:
        proc.stop()
    # 3c. scale-out: two instances in one group on fresh topics (the same burst), on the same cores
    cat3, env3 = _fresh(where)
    n3, _ = produce(kafka, cat3, case_events(cases, per_case, "s"))
    runs = [ProcessorRun(kafka, cat3, env3, logdir, instance=suffix) for suffix in ("", "-2")]
    try:
        out["processor_two_instances_events_per_s"] = rate_of_instances(runs, n3)
    finally:
        for r in runs:
            r.stop()


BENCH_STRUCTURE = "dac-31"  # the load posts as this DAC (the bench's cases are referred to it), with its dev token
BENCH_TOKEN = dev_token(BENCH_STRUCTURE)


def _edge(kafka: KafkaAccess, cat: Catalogue, env: dict[str, str], logdir: Path, load: EdgeLoad, out: dict[str, Any], *,
          broker: dict[str, int]) -> None:
    """wrk against a bare FastAPI endpoint then against the DAC adapter (closed loop, same
    settings), then the open loop against the adapter with its view topic tailed. `broker`: the
    broker's process when it is the embedded one, for the whole system's CPU per POST."""
    from parcours import benchload as bl

    proc = ProcessorRun(kafka, cat, env, logdir)
    port = free_port()
    bare_port = next(p for p in iter(free_port, None) if p != port)
    adapter = _spawn(["adapter", "dac", "--port", str(port)], env, logdir / "adapter-dac.log")
    with (logdir / "bench-bare.log").open("ab") as log:
        bare = subprocess.Popen([sys.executable, "-c", "import sys; from parcours.benchload import serve_bare; serve_bare(int(sys.argv[1]))",
                                 str(bare_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base, bare_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
    try:
        _wait_drained(proc, 300)
        asyncio.run(_edge_ready(base, bare_base, load.cases))
        with tempfile.TemporaryDirectory(prefix="parcours-bench-") as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(bl.wrk_script(load.cases, BENCH_TOKEN))
            out["wrk"] = {"threads": 1, "connections": load.wrk_connections, "seconds": load.wrk_seconds}
            print(f"bench: wrk on the bare endpoint (pid {bare.pid}) for {load.wrk_seconds:g} s", file=sys.stderr, flush=True)
            out.update(bl.run_wrk(bare_base, str(script), seconds=load.wrk_seconds, connections=load.wrk_connections).figures("bare"))
            # the edge alone: the processor stopped while wrk runs (on 2 cores it would take the
            # CPU the adapter is measured on), then the whole system, the processor consuming
            proc.stop()
            print(f"bench: wrk on the adapter (pid {adapter.pid}), processor stopped, for {load.wrk_seconds:g} s", file=sys.stderr, flush=True)
            out.update(bl.run_wrk(base, str(script), seconds=load.wrk_seconds, connections=load.wrk_connections).figures("adapter"))
            proc = ProcessorRun(kafka, cat, env, logdir)
            _wait_drained(proc, 600)
            print(f"bench: wrk on the adapter, processor running, for {load.wrk_seconds:g} s", file=sys.stderr, flush=True)
            meter = CpuMeter({"adapter": adapter.pid, "processor": proc.proc.pid, **broker})
            w = bl.run_wrk(base, str(script), seconds=load.wrk_seconds, connections=load.wrk_connections)
            out.update(w.figures("adapter_with_processor"))
            out["system_cpu_us_per_post"] = meter.per(w.requests)
        out["adapter_to_bare"] = out["adapter_posts_per_s"] / out["bare_posts_per_s"]
        out["adapter_with_processor_to_bare"] = out["adapter_with_processor_posts_per_s"] / out["bare_posts_per_s"]
        _wait_drained(proc, 600)  # the processor works through what wrk posted before the open loop begins
        print(f"bench: open loop on the adapter, {load.rate:g} POSTs/s for {load.open_seconds:g} s", file=sys.stderr, flush=True)
        # on uvloop, as the adapter: the generator's own cost per request is what limits the rate it keeps on 2 cores
        figures, conns = uvloop.run(bl.open_loop(kafka, cat.per_structure("views", BENCH_STRUCTURE).name, "127.0.0.1", port, BENCH_TOKEN,
                                                  load.cases, rate=load.rate, seconds=load.open_seconds, grace_s=load.grace_s))
        out.update(figures)
        out["open_connections"] = conns
    finally:
        for p in (adapter, bare):
            p.terminate()
        for p in (adapter, bare):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        proc.stop()


def _wait_drained(proc: ProcessorRun, timeout: float) -> None:
    """Until the processor has no lag on its input topics."""
    deadline = time.monotonic() + timeout
    while proc.lag():
        if proc.proc.poll() is not None:
            raise RuntimeError("bench: the processor exited")
        if time.monotonic() > deadline:
            raise RuntimeError("bench: timed out waiting for the processor")
        time.sleep(0.2)


async def _edge_ready(base: str, bare_base: str, cases: int) -> None:
    """The adapter serves the view of the last pre-produced case; the bare endpoint answers."""
    headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
    async with httpx.AsyncClient(timeout=30) as client:
        async def adapter_ready() -> bool:
            return (await client.get(base + "/readyz")).status_code == HTTPStatus.OK and \
                (await client.get(f"{base}/v1/cases/case-a{cases - 1}", headers=headers)).status_code == HTTPStatus.OK

        async def bare_ready() -> bool:
            r = await client.post(f"{bare_base}/v1/cases/case-a0/messages", json={"body": "Ready?"})
            return r.status_code == HTTPStatus.ACCEPTED

        await _wait(adapter_ready, 300, "the adapter")
        await _wait(bare_ready, 60, "the bare endpoint")


async def _wait(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await probe():
                return
        except (httpx.HTTPError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"bench: timed out waiting for {what}")


def report(f: dict[str, Any]) -> str:
    """The figures as text, then as one JSON line; a part not run (`--only`) is left out."""
    lines = [f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}"]
    if "processor_events_per_s" in f:
        lines += _processor_report(f)
    if "rebuild_seconds" in f:
        lines.append(f"views rebuild:                    {f['rebuild_events']:,} events in {f['rebuild_seconds']:.0f} s "
                     f"({f['rebuild_events'] / f['rebuild_seconds']:,.0f} events/s)")
    if "adapter_posts_per_s" in f:
        lines += _edge_report(f)
    if "adapter_restart" in f:
        lines.append("adapter start and restart (read model on disk, views of one DAC):")
        for views, r in f["adapter_restart"].items():
            lines.append(f"  {int(views):>7,} views: first start {r['first_start_s']:.1f} s, restart {r['restart_s']:.1f} s "
                         f"({r['offsets_read_at_restart']:,} offsets read), RSS {r['rss_mb']:.0f} MB")
        lines.append(f"  read model on disk: {f['adapter_store_mb']:.0f} MB")
    return "\n".join(lines) + "\n" + json.dumps(f)


def _processor_report(f: dict[str, Any]) -> list[str]:
    raw, base, proc = f["raw_consume_decode_events_per_s"], f["engine_baseline_events_per_s"], f["processor_events_per_s"]
    rss = f["processor_rss_mb_at_cases"]
    return [
        f"burst:                            {f['events']:,} events ({f['cases']:,} cases of {f['per_case']})",
        f"raw produce (confluent-kafka):    {f['produce_events_per_s']:>10,.0f} events/s",
        f"raw consume + decode:             {raw:>10,.0f} events/s",
        f"engine baseline (Quix, EOS):      {base:>10,.0f} events/s (state update + one output per event)",
        f"processor, cases of {f['per_case']:<5}        {proc:>10,.0f} events/s = {proc / raw:.2f}x raw, {proc / base:.2f}x engine",
        (f"processor, cases of {f['long_per_case']:<5}        {f['processor_long_cases_events_per_s']:>10,.0f} events/s "
         f"({f['long_cases']} cases; {f['processor_long_cases_events_per_s'] / proc:.2f}x the short cases)"),
        *_split_report(f, raw),
        *([(f"processor, two instances:         {two:>10,.0f} events/s = {two / raw:.2f}x raw ({two / proc:.2f}x one instance; "
            "one group, the same 2 cores)")] if (two := f.get("processor_two_instances_events_per_s")) else []),
        "processor RSS:                    " + ", ".join(f"{v:,.0f} MB after {k:,} cases" for k, v in rss.items()),
        *([(f"processor restart after SIGKILL: first event {r['first_event_s']:.1f} s; then a new case in a view "
            f"{r['new_event_to_view_s']:.1f} s after it was produced")] if (r := f.get("processor_restart_after_kill")) else []),
    ]


def _split_report(f: dict[str, Any], raw: float) -> list[str]:
    sp = f.get("processor_time_split")
    if not sp:
        return []
    free = sp["free_step_events_per_s"]
    return [
        (f"  where its time goes, per event:  {sp['us_per_event']:,.0f} µs = {sp['step_us_per_event']:,.0f} µs in the case-file step "
         f"+ {sp['rest_us_per_event']:,.0f} µs in the engine, Kafka client and commits; "
         f"{sp['cpu_us_per_event']:,.0f} µs of CPU (all its threads)"),
        (f"  what it writes, per event:       {sp['records_written_per_event']:.1f} records + {sp['state_writes_per_event']:.1f} "
         "state keys (changelog records)"),
        (f"  with a step that cost nothing:   {free:>10,.0f} events/s = {free / raw:.2f}x raw: the ceiling of a processor "
         "writing these records on this engine"),
    ]


def _edge_report(f: dict[str, Any]) -> list[str]:
    w = f["wrk"]

    def closed(who: str) -> str:
        bad = f"{f[who + '_non_2xx']:,} non-2xx, {f[who + '_socket_errors']:,} socket errors"
        return (f"{f[who + '_posts_per_s']:>10,.0f} /s accepted ({f[who + '_requests']:,} answers, {bad}; "
                f"latency mean {f[who + '_latency_mean_ms']:.1f} ms, p99 {f[who + '_latency_p99_ms']:.1f} ms)")

    problems = f["open_errors"] + f["open_non_202"] + f["open_unseen_in_view"]
    return [
        f"HTTP edge, closed loop (wrk, {w['threads']} thread, {w['connections']} connections, {w['seconds']:g} s, POST a message):",
        f"  bare FastAPI endpoint:          {closed('bare')}",
        f"  one DAC adapter (edge alone):   {closed('adapter')}",
        f"  adapter / bare:                 {f['adapter_to_bare']:>10.2f}x (target >= 0.5x)",
        f"  same, processor consuming:      {closed('adapter_with_processor')}",
        f"  adapter / bare:                 {f['adapter_with_processor_to_bare']:>10.2f}x (the broker and processor share the 2 cores)",
        *_cpu_report(f),
        (f"HTTP edge, open loop ({f['open_rate_target']:g} POSTs/s scheduled, {f['open_requests']:,} requests; "
         f"sent {f['open_sent_per_s']:,.0f}/s, send lag p99 {f['open_send_lag_p99_ms']:.1f} ms, {f['open_connections']} connections):"),
        (f"  scheduled send -> 202:          p50 {f['open_post_p50_ms']:.1f} ms, p99 {f['open_post_p99_ms']:.1f} ms, "
         f"max {f['open_post_max_ms']:.1f} ms; p99 per 10 s: {', '.join(f'{v:g}' for v in f['open_post_p99_ms_per_10s'])}"),
        (f"  202 -> item in views.dac-31:    p50 {f['open_view_p50_ms']:.1f} ms, p99 {f['open_view_p99_ms']:.1f} ms, "
         f"max {f['open_view_max_ms']:.1f} ms (target p99 <= 50 ms)"),
        (f"  {f['open_accepted']:,} accepted; {f['open_errors']} errors, {f['open_non_202']} non-202, "
         f"{f['open_unseen_in_view']} accepted but not in the view" + ("" if problems else " (none)")),
        *([] if kept_schedule(f) else [(
            f"  NOT VALID: the load generator fell behind its schedule (sent {f['open_sent_per_s']:,.0f} of "
            f"{f['open_rate_target']:g}/s, send lag p99 {f['open_send_lag_p99_ms']:,.0f} ms): the machine could not drive "
            "this rate, and the latencies above measure the generator's own delay as much as the edge's "
            "(a view seen before its 202 was read gives a negative figure)")]),
    ]


def _cpu_report(f: dict[str, Any]) -> list[str]:
    cpu = f.get("system_cpu_us_per_post")
    if not cpu:
        return []
    total = sum(cpu.values())
    cores = os.cpu_count() or 1
    return [
        "  CPU per accepted POST, same run: " + ", ".join(f"{name} {us:,.0f} µs" for name, us in cpu.items()),
        (f"  = {total / 1000:.2f} ms of CPU per POST: {cores} cores at 100% carry at most {cores / total * 1e6:,.0f} POSTs/s "
         "end to end (edge, processor, broker)"),
    ]


#: how far behind its schedule the open loop may send and still measure the edge, not itself
OPEN_LOOP_MAX_LAG_MS = 100.0


def kept_schedule(f: dict[str, Any]) -> bool:
    """Did the open loop send at its rate, on time? Otherwise its latencies are not the edge's."""
    sent, rate, lag = float(f["open_sent_per_s"]), float(f["open_rate_target"]), float(f["open_send_lag_p99_ms"])
    return sent >= 0.95 * rate and lag <= OPEN_LOOP_MAX_LAG_MS
