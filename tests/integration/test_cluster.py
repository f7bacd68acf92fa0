"""What production promises, shown on the shape it runs on: a three-node cluster (replication factor
3, min ISR 2 for every topic and Kafka's internal ones), one for the whole module, with one stack
(the processor and the three adapters) on it.

- the broker leading the partition a POST loop writes is SIGKILLed with the processor consuming:
  every event answered 202 reaches the views, the inbox says each once, nothing else was answered
  but 503;
- a broker SIGKILLed and restarted while the processor commits (the one coordinating its
  transactions): views equal a rebuild, inboxes and audit agree with them, no manual repair;
- the active controller SIGKILLed: another is elected and the stack goes on;
- a rolling restart of the three nodes under a POST loop: nothing lost.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess, consumer_lag
from parcours.devbroker.broker import EmbeddedBroker
from parcours.devbroker.health import await_in_sync
from parcours.processors import rebuild as rb
from parcours.processors.app import group_id
from parcours.settings import Settings
from parcours.topology.catalogue import Catalogue
from tests.api import Api, referral_body
from tests.integration.test_processor_recovery import Load, random_history
from tests.stack import Stack, cluster_of, eventually

NODES = 3
#: the accepted POSTs a loop goes on for once the fault is over (the cluster proven writable again)
AFTER = 15


@dataclass
class Cluster3:
    broker: EmbeddedBroker
    cluster: Cluster
    stack: Stack

    @property
    def kafka(self) -> KafkaAccess:
        return self.stack.kafka

    async def healthy(self) -> None:
        """Every node up and every partition in sync, every adapter ready (what a test begins
        with, whatever ran before)."""
        await asyncio.to_thread(self.broker.start)
        await await_in_sync(self.kafka)
        async with httpx.AsyncClient() as client:
            for kind in ("dac", "cpts", "crt"):
                async def ready(kind: str = kind) -> bool:
                    return (await client.get(f"{self.stack.url(kind)}/readyz")).status_code == 200
                await eventually(ready, 60, f"adapter {kind} ready")


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster3]:
    t0 = time.monotonic()
    broker = EmbeddedBroker(tmp_path_factory.mktemp("kafka3"), Settings().cache_dir)
    info = broker.start(nodes=NODES)
    print(f"three-node cluster started in {time.monotonic() - t0:.1f}s")
    try:
        where = cluster_of(broker, info)
        stack = Stack(where, f"c{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("stack3"))
        try:
            stack.start(validator=False)
            with supervised(stack):
                yield Cluster3(broker, where, stack)
        finally:
            stack.stop()
    finally:
        broker.stop()


@contextmanager
def supervised(stack: Stack, name: str = "processor") -> Iterator[None]:
    """As `parcours up` does: a processor that exits (a transaction or an assignment failed with a
    broker, a commit stalled: processors/watchdog.py) is started again; it resumes from its last
    committed checkpoint."""
    stop = threading.Event()
    restarts = []

    def watch() -> None:
        while not stop.wait(0.5):
            proc = stack.procs.get(name)
            if proc is not None and proc.poll() is not None:
                restarts.append(proc.returncode)
                stack.start_processor(name)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        print(f"{name} exited {len(restarts)} times (statuses {restarts}), started again each time")


@dataclass
class PostLoop:
    """Messages posted one after another to one case as the DAC: what was answered 202, and the
    bodies of what was answered 503 (refused: nothing written, or written without its answer)."""

    api: Api
    case: str
    accepted: dict[str, str] = field(default_factory=dict)  # message id -> body
    refused: set[str] = field(default_factory=set)
    others: list[str] = field(default_factory=list)
    n: int = 0

    async def run(self, done: asyncio.Event, timeout: float = 120) -> None:
        """Until `done` is set and AFTER more POSTs were accepted since (the cluster writable again)."""
        deadline = time.monotonic() + timeout
        after = None
        while time.monotonic() < deadline:
            self.n += 1
            body = f"Message {self.n} of {self.case}."
            resp = await self.api.post("dac-31", f"/v1/cases/{self.case}/messages", {"body": body}, expect=None)
            if resp.status_code == 202:
                self.accepted[resp.json()["message_id"]] = body
            elif resp.status_code == 503:
                self.refused.add(body)
            else:
                self.others.append(f"{resp.status_code} {resp.text[:200]}")
            if done.is_set():
                after = len(self.accepted) if after is None else after
                if len(self.accepted) - after >= AFTER:
                    return
        raise AssertionError(f"the POST loop did not see {AFTER} more accepted after the fault within {timeout}s "
                             f"({len(self.accepted)} accepted, {len(self.refused)} refused)")

    async def start(self, fault: asyncio.Event, first: int, timeout: float = 120) -> asyncio.Task[None]:
        """The loop as a task, once `first` POSTs were accepted (the fault then lands mid-loop)."""
        task = asyncio.create_task(self.run(fault, timeout))
        await eventually(lambda: asyncio.sleep(0, result=len(self.accepted) >= first or task.done()), 60, f"{first} messages accepted")
        return task

    async def verify(self, timeout: float = 90) -> None:
        """Every 202 in the DAC's view; its inbox says each once; whatever else is there was a 503."""
        assert not self.others, f"answers other than 202 and 503: {self.others[:5]}"
        items = {f"message:{m}" for m in self.accepted}

        async def complete() -> dict | None:
            v = await self.api.view("dac-31", self.case)
            return v if v and items <= set(v["items"]) else None
        try:
            view = await eventually(complete, timeout, f"the {len(items)} accepted messages in the DAC's view")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await diagnosis(self.api.stack)}") from None
        bodies = {m["message_id"]: m["body"] for m in view["messages"]}
        unacknowledged = {m: b for m, b in bodies.items() if m not in self.accepted}
        assert set(unacknowledged.values()) <= self.refused, f"in the view, neither 202 nor 503: {unacknowledged}"
        seen: Counter[str] = Counter()

        async def inbox_complete() -> bool:
            seen.clear()
            after = 0
            while True:
                page = (await self.api.get("dac-31", f"/v1/inbox?after={after}&limit=1000")).json()
                seen.update(n["item"] for n in page["notifications"] if n["case_id"] == self.case and n["item"].startswith("message:"))
                if len(page["notifications"]) < 1000:
                    return items <= set(seen)
                after = page["next_after"]
        await eventually(inbox_complete, timeout, "a notification of every accepted message in the DAC's inbox")
        twice = {item: k for item, k in seen.items() if k > 1}
        assert not twice, f"notified more than once: {twice}"
        assert set(seen) == {f"message:{m}" for m in bodies}, "the inbox and the view disagree"


async def caught_up(stack: Stack, load: Load, timeout: float = 120) -> None:
    """Until the processor has no lag (a processor restarted meanwhile is not a failure here)."""
    parts = [(t.name, p) for t in load.cat.canonical() for p in range(t.partitions)]

    async def done() -> bool:
        return sum((await consumer_lag(load.kafka, group_id(load.cat), parts)).values()) == 0
    try:
        await eventually(done, timeout, "the processor to catch up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await diagnosis(stack)}") from None


async def diagnosis(stack: Stack) -> str:
    """Where the pipeline stands: the processor's figures, its lag, the views topic's ends
    (committed and not: a transaction left open holds read_committed readers at the first), and
    the processor's threads (SIGABRT: faulthandler writes their stacks to its log, then it ends)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    cat = Catalogue.load(prefix=stack.prefix)
    out = []
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            text = (await client.get(f"http://127.0.0.1:{stack.ports['processor']}/metrics")).text
            out += [line for line in text.splitlines() if line.startswith(("parcours_processor_events_total", "parcours_view_writes_total"))]
        except httpx.HTTPError as exc:
            out.append(f"processor metrics: {exc!r}")
    parts = [(t.name, p) for t in cat.canonical() for p in range(t.partitions)]
    out.append(f"lag: {sum((await consumer_lag(stack.kafka, group_id(cat), parts)).values())}")
    views = cat.per_structure("views", "dac-31").name
    tps = [TopicPartition(views, p) for p in range(3)]
    for level in ("read_committed", "read_uncommitted"):
        consumer = AIOKafkaConsumer(**stack.kafka.aiokafka(), isolation_level=level)
        await consumer.start()
        try:
            out.append(f"{views} ends ({level}): {sorted((tp.partition, n) for tp, n in (await consumer.end_offsets(tps)).items())}")
        finally:
            await consumer.stop()
    proc = stack.procs.get("processor")
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGABRT)
        await asyncio.to_thread(proc.wait, 10)
        out.append((stack.logdir / "processor.log").read_text()[-8000:])
    return "\n".join(out)


async def _open_case(api: Api) -> tuple[str, str] | None:
    """(case, referral) of a referral by the DAC once written (None while refused with 503)."""
    resp = await api.post("dac-31", "/v1/referrals", referral_body("crt-31-muret"), expect=None)
    assert resp.status_code in (202, 503), resp.text
    return (resp.json()["case_id"], resp.json()["referral_id"]) if resp.status_code == 202 else None


async def _leader(kafka: KafkaAccess, topic: str, partition: int) -> int:
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    leaders = [p["leader"] for p in described[0]["partitions"] if p["partition"] == partition]
    assert leaders, f"no partition {partition} of {topic}: {described}"
    return int(leaders[0])


def _java_hash(text: str) -> int:
    h = 0
    for ch in text:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def transaction_partition(transactional_id: str, partitions: int) -> int:
    """The `__transaction_state` partition (its leader: the transaction coordinator) of an id, as Kafka places it."""
    h = _java_hash(transactional_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


async def test_leader_of_the_written_partition_sigkilled_mid_post_loop(cluster3: Cluster3) -> None:
    c = cluster3
    await c.healthy()
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(c.stack, client)
        case, _ = await api.open_case("dac-31", "crt-31-muret", timeout=60)
        topic = f"{c.stack.prefix}.messages"
        partition = (murmur2(case.encode()) & 0x7FFFFFFF) % 6
        leader = await _leader(c.kafka, topic, partition)
        loop, killed = PostLoop(api, case), asyncio.Event()
        posting = await loop.start(killed, first=20)
        t0 = time.monotonic()
        assert await asyncio.to_thread(c.broker.crash, leader)
        killed.set()
        await posting
        print(f"leader {leader} of {topic}-{partition} killed: {len(loop.accepted)} accepted, {len(loop.refused)} refused; "
              f"writable again {time.monotonic() - t0:.1f}s after")
        assert await _leader(c.kafka, topic, partition) != leader
        await asyncio.to_thread(c.broker.start)  # back, and catching up
        await loop.verify()


async def test_coordinator_sigkilled_while_the_processor_commits_views_equal_rebuild(cluster3: Cluster3, tmp_path: Path) -> None:
    """The broker coordinating the processor's transactions (every commit goes through it) is
    killed mid-stream and started again: no manual repair, and the views equal a rebuild."""
    c = cluster3
    await c.healthy()
    stack = Stack(c.cluster, f"k{uuid.uuid4().hex[:8]}", tmp_path, env={"PARCOURS_PROCESSOR_INSTANCE": "p1"})
    try:
        load = Load(stack)
        transactional_id = load.cat.group_id("processor", "-p1")
        history = random_history(random.Random(5), cases=50, per_case=20)
        stack.start_processor()
        with supervised(stack):
            sending = asyncio.create_task(load.send(history, pause_every=20))

            async def some_views() -> bool:
                return len(await rb.live_views(load.cat, load.kafka)) > 50
            await eventually(some_views, 60, "the processor to commit views")
            coordinator = await _leader(c.kafka, "__transaction_state", transaction_partition(transactional_id, 2))
            assert await asyncio.to_thread(c.broker.crash, coordinator)
            await asyncio.sleep(1)  # the stream goes on meanwhile, with the coordinator moved (no condition to await: the instant of a crash)
            await asyncio.to_thread(c.broker.start)
            await sending
            await caught_up(stack, load)
        await load.check(cases=50)
    finally:
        stack.stop()


async def test_active_controller_sigkilled_another_is_elected_and_the_stack_goes_on(cluster3: Cluster3) -> None:
    c = cluster3
    await c.healthy()
    before = c.broker.active_controller()
    assert before is not None
    assert await asyncio.to_thread(c.broker.crash, before[0])

    async def elected() -> tuple[int, int] | None:
        now = c.broker.active_controller()
        return now if now is not None and now[0] != before[0] and now[1] > before[1] else None
    leader, epoch = await eventually(elected, 30, "another controller elected")
    print(f"controller {before[0]} (epoch {before[1]}) killed; node {leader} elected (epoch {epoch})")
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(c.stack, client)
        # the killed controller was a broker too: its partitions refuse writes (503) until it is fenced
        case, referral = await eventually(lambda: _open_case(api), 60, "a case opened")
        try:
            await api.view_with("dac-31", case, f"referral:{referral}", timeout=90)  # processed and served
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await diagnosis(c.stack)}") from None
        loop = PostLoop(api, case)
        done = asyncio.Event()
        done.set()
        await loop.run(done)
        await asyncio.to_thread(c.broker.start)
        await loop.verify()


async def test_rolling_restart_under_a_post_loop_loses_nothing(cluster3: Cluster3) -> None:
    c = cluster3
    await c.healthy()
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(c.stack, client)
        case, _ = await api.open_case("dac-31", "crt-31-muret", timeout=60)
        loop, restarted = PostLoop(api, case), asyncio.Event()
        posting = await loop.start(restarted, first=10, timeout=240)
        t0 = time.monotonic()
        nodes = await asyncio.to_thread(c.broker.rolling_restart)
        restarted.set()
        await posting
        print(f"rolling restart of nodes {nodes} in {time.monotonic() - t0:.1f}s: {len(loop.accepted)} accepted, "
              f"{len(loop.refused)} refused")
        assert nodes == [1, 2, 3]
        await loop.verify()
