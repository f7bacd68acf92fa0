"""The measuring kit of `parcours bench`: synthetic cases, raw produce and consume, the engine
baseline, CPU and memory meters, a processor run as a subprocess and its rates."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess, consumer_lag, produce_waiting
from parcours.contract.codec import Codec
from parcours.contract.models import Event, build_event
from parcours.devbroker.broker import free_port
from parcours.processors.app import group_id
from parcours.security.credentials import ADMIN
from parcours.topology.catalogue import Catalogue


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (`/proc/<pid>/stat`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


class CpuMeter:
    """CPU time of some processes (and of this one's finished children: the load generator)
    from now until `per`: where a whole system's time goes per request. A process that falls
    behind in that window (the processor) shows less than its share."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.start["load generator"] = children_cpu_seconds()

    def per(self, requests: int) -> dict[str, float]:
        """µs of CPU per request, by process."""
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["load generator"] = children_cpu_seconds()
        return {name: (now[name] - self.start[name]) / max(1, requests) * 1e6 for name in now}


def children_cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def broker_pid(where: Cluster) -> dict[str, int]:
    """The embedded broker's process, when the bench runs on it (an external cluster's is not ours to read)."""
    from parcours.bootstrap import embedded_broker

    info = embedded_broker(where.settings).status()
    return {"broker": info.pid} if info is not None and info.bootstrap == where.base.bootstrap else {}


def rss_mb(pid: int) -> float:
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
        self.proc = spawn(["processor", "--metrics-port", str(self.port), "--state-dir", str(logdir / f"state-{name}")],
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
        sums["cpu_seconds"] = cpu_seconds(self.proc.pid)
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
        return rss_mb(self.proc.pid)

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


async def until_in_view(kafka: KafkaAccess, topic: str, prefix: bytes, timeout: float = 300) -> None:
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


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`parcours <args>` as a child process logging to `log` (the child keeps the file open, not us)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "parcours.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT)
