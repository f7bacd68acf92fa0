"""`parcours bench`: throughput and latency figures on the real broker, printed, never asserted.

On topics of its own (prefix `bench<random>`), it measures:
1. raw aiokafka produce (batched) and consume + decode rates: the ceiling of the plumbing;
2. the processor's sustained events/s: a burst on the canonical topics, time until lag is 0;
3. the POST rate one adapter process accepts (concurrent clients, 202s per second);
4. the latency from an accepted POST to the updated view on the case-views topic (p50, p99).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from parcours.contract.codec import Codec
from parcours.contract.models import build_event
from parcours.kafkaio import read_to_end
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue


def _events(n: int, cases: int) -> list[Any]:
    now = datetime.now(UTC)
    out = []
    for c in range(cases):
        out.append(build_event("ReferralSubmitted", {
            "event_id": str(uuid.uuid4()), "case_id": f"case-b{c}", "occurred_at": now, "source": "cpts-31-nord",
            "referral_id": f"r{c}", "to_structure": "dac-31", "person": {"pseudonym": f"P-b{c:05d}", "birth_year": 1940, "postcode": "31000"},
            "reasons": ["bench"], "urgency": "routine", "summary": "Synthetic benchmark case."}))
    for i in range(n - cases):
        out.append(build_event("MessagePosted", {
            "event_id": str(uuid.uuid4()), "case_id": f"case-b{i % cases}", "occurred_at": now, "source": "dac-31",
            "message_id": f"m{i}", "body": "Synthetic benchmark message."}))
    return out


async def _produce(bootstrap: str, cat: Catalogue, events: list[Any]) -> float:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=10,
                                max_batch_size=256 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    try:
        for e in events:
            enc = codec.encode(e)
            await producer.send(cat.for_event(e.event_type).name, enc.value, key=enc.key, headers=enc.headers)
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def _consume_decode(bootstrap: str, cat: Catalogue) -> tuple[int, float]:
    codec = Codec()
    n = 0
    t0 = time.perf_counter()
    async for records in read_to_end(bootstrap, [t.name for t in cat.canonical()]):
        for r in records:
            codec.decode(r.value, r.headers, topic=r.topic, partition=r.partition, offset=r.offset)
            n += 1
    return n, time.perf_counter() - t0


async def _lag(bootstrap: str, cat: Catalogue) -> int:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    try:
        committed = await client.list_consumer_group_offsets(f"{cat.prefix}-processor")
    finally:
        await client.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(t.name, p) for t in cat.canonical() for p in range(t.partitions)]
        end = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return sum(end[tp] - max(0, committed[tp].offset if tp in committed else 0) for tp in parts)


def _spawn(env: dict[str, str], logdir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = open(logdir / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "parcours.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT)


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


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else float("nan"))


async def run(bootstrap: str, *, events: int, cases: int, post_seconds: float, concurrency: int, latency_samples: int, logdir: Path) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    cat = Catalogue.load(prefix=prefix)
    await admin.apply(cat, bootstrap)
    env = {**os.environ, "PARCOURS_KAFKA_BOOTSTRAP": bootstrap, "PARCOURS_TOPIC_PREFIX": prefix}
    out: dict[str, Any] = {"events": events, "cases": cases}
    logdir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        # 2a. processor up and warm (group joined) before the burst
        procs.append(_spawn(env, logdir, "processor", "processor", "--metrics-port", "0"))
        warm = _events(1, 1)
        await _produce(bootstrap, cat, warm)

        async def warmed() -> bool:
            return await _lag(bootstrap, cat) == 0
        await _wait(warmed, 120, "the processor to start")
        # 1 + 2b. the burst: produce rate, then the processor drains it
        burst = _events(events, cases)
        t0 = time.perf_counter()
        secs = await _produce(bootstrap, cat, burst)
        out["produce_events_per_s"] = events / secs

        async def drained() -> bool:
            return await _lag(bootstrap, cat) == 0
        await _wait(drained, 900, "the processor to drain the burst")
        out["processor_events_per_s"] = events / (time.perf_counter() - t0)
        n, secs = await _consume_decode(bootstrap, cat)
        out["raw_consume_decode_events_per_s"] = n / secs
        # 3. POST rate of one adapter process
        procs.append(_spawn(env, logdir, "adapter-dac", "adapter", "dac", "--port", "18101"))
        base, headers = "http://127.0.0.1:18101", {"Authorization": "Bearer dev-dac-31"}
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency * 2)) as client:
            async def ready() -> bool:
                return (await client.get(base + "/readyz")).status_code == 200 and \
                    (await client.get(base + "/v1/cases/case-b0", headers=headers)).status_code == 200
            await _wait(ready, 120, "the adapter")
            accepted = 0
            stop_at = time.perf_counter() + post_seconds

            async def worker(w: int) -> None:
                nonlocal accepted
                i = 0
                while time.perf_counter() < stop_at:
                    r = await client.post(f"{base}/v1/cases/case-b{(w * 7919 + i) % cases}/messages",
                                          json={"body": "Bench."}, headers=headers)
                    accepted += r.status_code == 202
                    i += 1
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            out["adapter_posts_per_s"] = accepted / (time.perf_counter() - t0)
            out["adapter_concurrency"] = concurrency
            # 4. accepted POST -> updated view, one at a time, a view tail in this process
            out.update(await _latency(bootstrap, cat, client, base, headers, latency_samples))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    return out


async def _latency(bootstrap: str, cat: Catalogue, client: httpx.AsyncClient, base: str, headers: dict[str, str], samples: int) -> dict[str, float]:
    topic = cat.topic("case-views").name
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in range(cat.topic("case-views").partitions)]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    lat: list[float] = []
    try:
        for i in range(samples):
            case = f"case-b{i % 50}"
            r = await client.post(f"{base}/v1/cases/{case}/messages", json={"body": f"Latency {i}."}, headers=headers)
            accepted_at = time.perf_counter()
            mid = r.json()["message_id"]
            found = False
            while not found:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for rec in records:
                        if rec.key == f"dac-31/{case}".encode() and rec.value and mid.encode() in rec.value:
                            lat.append(time.perf_counter() - accepted_at)
                            found = True
    finally:
        await consumer.stop()
    return {"post_to_view_p50_ms": _pct(lat, 50) * 1000, "post_to_view_p99_ms": _pct(lat, 99) * 1000, "latency_samples": len(lat)}


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        f"events in the burst:              {figures['events']} ({figures['cases']} cases)",
        f"raw aiokafka produce (batched):   {figures['produce_events_per_s']:>10,.0f} events/s",
        f"raw aiokafka consume + decode:    {figures['raw_consume_decode_events_per_s']:>10,.0f} events/s",
        f"processor sustained:              {figures['processor_events_per_s']:>10,.0f} events/s",
        f"one adapter, accepted POSTs:      {figures['adapter_posts_per_s']:>10,.0f} /s ({figures['adapter_concurrency']} concurrent clients)",
        f"accepted POST -> view updated:    p50 {figures['post_to_view_p50_ms']:.0f} ms, p99 {figures['post_to_view_p99_ms']:.0f} ms ({figures['latency_samples']} samples)",
    ]
    return "\n".join(lines) + "\n" + json.dumps(figures)
