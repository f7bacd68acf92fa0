"""The processor killed with SIGKILL at any instant and restarted, or one of two instances killed:
views equal a rebuild from the canonical topics, every inbox holds exactly one notification per
change, and nothing reaches the dead-letter topic."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import consumer_lag, read_to_end
from parcours.contract.codec import Codec
from parcours.paths import topics_dir
from parcours.processors import rebuild as rb
from parcours.processors.app import group_id
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy
from tests.factories import ev
from tests.stack import Stack, eventually

COORDINATOR_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE}
SLUGS = ["dac-31", "cpts-31-nord", "cpts-31-sud", "crt-31-muret", "crt-31-nord"]


def random_history(rng: random.Random, cases: int, per_case: int) -> list:
    now = datetime.now(UTC)
    out = []
    for c in range(cases):
        case = f"case-k{c}"
        out.append(ev("ReferralSubmitted", case_id=case, source="cpts-31-nord", to_structure="dac-31", referral_id=f"r{c}"))
        for i in range(per_case):
            pick = rng.random()
            src = rng.choice(SLUGS)
            if pick < 0.5:
                out.append(ev("MessagePosted", case_id=case, source=src, message_id=f"m{i}",
                              category=rng.choice(["discussion", "social", "medical"]), at=i))
            elif pick < 0.65:
                out.append(ev("ConsentRecorded", case_id=case, source="dac-31", consent_id=f"c{i}", at=i,
                              grantee=rng.choice([*SLUGS[1:], "crt", "cpts"]), decision=rng.choice(["permit", "permit", "deny"]),
                              categories=rng.sample(["discussion", "social", "medical", "functional"], 2),
                              valid_until=rng.choice([None, now + timedelta(days=30)])))
            else:
                out.append(ev("EvaluationRecorded", case_id=case, source=rng.choice(["dac-31", "crt-31-muret"]),
                              evaluation_id=f"e{i}", category=rng.choice(["functional", "medical"]), at=i))
    rng.shuffle(out)
    return out


class Load:
    def __init__(self, stack: Stack) -> None:
        self.kafka, self.stack = stack.kafka, stack
        subprocess.run([sys.executable, "-m", "parcours.cli", "topics", "apply"], env=stack.env, check=True, capture_output=True)
        self.cat = Catalogue.load(prefix=stack.prefix)
        self.policy = KindPolicy.load(topics_dir() / "policy.yaml")
        self.codec = Codec()

    async def send(self, events: list, pause_every: int = 0) -> None:
        producer = AIOKafkaProducer(**self.kafka.aiokafka(), acks="all", linger_ms=5)
        await producer.start()
        try:
            for i, e in enumerate(events):
                enc = self.codec.encode(e)
                await producer.send(self.cat.for_event(e.event_type).name, enc.value, key=enc.key, headers=enc.headers)
                if pause_every and i % pause_every == 0:
                    await producer.flush()
                    await asyncio.sleep(0.01)  # spread the load so that kills land mid-stream
            await producer.flush()
        finally:
            await producer.stop()

    async def caught_up(self, timeout: float = 180) -> None:
        parts = [(t.name, p) for t in self.cat.canonical() for p in range(t.partitions)]

        async def done() -> bool:
            self.stack.check_alive()
            lags = await consumer_lag(self.kafka, group_id(self.cat), parts)
            return sum(lags.values()) == 0
        await eventually(done, timeout, "the processor to catch up")

    async def check(self, cases: int) -> None:
        """Views equal the rebuild; inboxes: one notification per change; no dead letter."""
        diffs: list[str] = []

        async def identical() -> bool:
            rebuilt = await rb.rebuild(self.cat, self.kafka, self.policy)
            diffs[:] = rb.differences(await rb.live_views(self.cat, self.kafka), rebuilt.views)
            return not diffs
        try:
            await eventually(identical, 60, "live views identical to the rebuild")
        except AssertionError:
            raise AssertionError(f"{len(diffs)} view items differ, e.g. {diffs[:5]}") from None
        live = await rb.live_views(self.cat, self.kafka)
        assert len({key.split(b"/")[0] for _, key in live}) == cases
        # an instance killed for good leaves its transaction open until the broker aborts it
        # (the processor's transaction timeout): until then a read_committed read of a partition
        # it wrote (an inbox, the audit) ends before it, so the outputs agree once it is aborted
        disagreements: list[str] = []

        async def agreeing() -> bool:
            disagreements[:] = await self._disagreements(await rb.live_views(self.cat, self.kafka))
            return not disagreements
        try:
            await eventually(agreeing, 60, "inboxes and audit agreeing with the views")
        except AssertionError:
            raise AssertionError("; ".join(disagreements)) from None
        dead = [r async for records in read_to_end(self.kafka, [self.cat.topic("deadletter").name]) for r in records]
        assert not dead, f"{len(dead)} dead letters, e.g. {dict(dead[0].headers)}"


    async def _disagreements(self, live: dict[tuple[str, bytes], bytes]) -> list[str]:
        """Inboxes: view changes alternate and end where the views are, a deadline reminder comes
        once. The audit rides on the views' transaction: no record twice, none lost (each item's
        disclosures and withdrawals alternate, and end where the live view is)."""
        out = []
        for slug in SLUGS:
            notes = [json.loads(r.value) async for records in read_to_end(self.kafka, [self.cat.per_structure("inbox", slug).name])
                     for r in records]
            # view changes alternate; a referral's deadline reminders (old events: their deadlines
            # are past) are not view changes, and come once each
            reminders = [n["notification_id"] for n in notes if n["type"] == "referral_overdue"]
            assert len(reminders) == len(set(reminders)), f"{slug}: a reminder twice"
            visible = _alternating(f"{slug}: notification", [
                (n["notification_id"], (n["case_id"], n["item"]), n["type"] == "item_visible") for n in notes
                if n["type"] in ("item_visible", "redaction")])
            shown = {tuple(key.decode().split("/", 1)) for s, key in live if s == slug}
            if visible != shown:
                out.append(f"{slug}: notifications and views disagree on {sorted(visible ^ shown)[:5]} ({len(visible ^ shown)} items)")
        audits = [json.loads(r.value) async for records in read_to_end(self.kafka, [self.cat.topic("audit").name])
                  for r in records]
        disclosed = _alternating("audit record", [
            (a["audit_id"], (a["structure"], a["case_id"], a["item"]), a["change"] == "disclosed")
            for a in audits if a["change"] != "accessed"])
        shown_all = {(slug, *key.decode().split("/", 1)) for slug, key in live}
        if disclosed != shown_all:
            out.append(f"audit and views disagree on {sorted(disclosed ^ shown_all)[:5]}")
        return out


def _alternating(what: str, changes: list[tuple[str, tuple[str, ...], bool]]) -> set[tuple[str, ...]]:
    """Changes (id, item, appears) in log order: no id twice, each item appears and disappears in
    turn (never twice in a row, never gone before it came); returns the items shown at the end."""
    ids: set[str] = set()
    shown: set[tuple[str, ...]] = set()
    for change_id, item, appears in changes:
        assert change_id not in ids, f"duplicate {what} {change_id}"
        ids.add(change_id)
        if appears:
            assert item not in shown, f"{what}: {item} shown twice without a removal"
            shown.add(item)
        else:
            assert item in shown, f"{what}: {item} removed but never shown"
            shown.discard(item)
    return shown


@pytest.fixture
def load(kafka_cluster: Cluster, tmp_path: Path) -> Iterator[Load]:
    """Topics of this test's own, a producer of events, and the stack's processes stopped after."""
    stack = Stack(kafka_cluster, f"k{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        yield Load(stack)
    finally:
        stack.stop()


async def test_sigkill_mid_stream_then_restart_equals_rebuild(load: Load) -> None:
    stack = load.stack
    history = random_history(random.Random(7), cases=60, per_case=25)
    stack.start_processor()
    half = len(history) // 2
    await load.send(history[:half])

    async def some_views() -> bool:
        stack.check_alive()
        return len(await rb.live_views(load.cat, load.kafka)) > 20
    await eventually(some_views, 60, "the processor to write views")
    stack.kill("processor", signal.SIGKILL)  # mid-stream: the first half is not all processed
    await load.send(history[half:] + history[:50])  # the second half, and some duplicates
    stack.start_processor()  # at once: no waiting for the killed member's session to expire
    await load.caught_up()
    await load.check(cases=60)


async def test_three_sigkills_at_random_instants_of_a_load(load: Load) -> None:
    stack = load.stack
    rng = random.Random()
    history = random_history(rng, cases=80, per_case=24)[:2000]
    stack.start_processor()
    sending = asyncio.create_task(load.send(history, pause_every=20))
    for _ in range(3):
        await asyncio.sleep(rng.uniform(0.5, 4.0))  # the random instants of the kills, not a wait for a condition
        stack.kill("processor", signal.SIGKILL)
        stack.start_processor()
    await sending
    await load.caught_up()
    await load.check(cases=80)


async def test_two_instances_share_the_load_and_one_survives_a_kill(load: Load) -> None:
    stack = load.stack
    history = random_history(random.Random(11), cases=60, per_case=25)
    stack.start_processor("processor-a")
    stack.start_processor("processor-b")

    admin = AdminClient(load.kafka.librdkafka())

    async def both_working() -> bool:
        stack.check_alive()
        try:
            described = await asyncio.to_thread(
                lambda: admin.describe_consumer_groups([group_id(load.cat)])[group_id(load.cat)].result(10))
        except KafkaException as exc:  # a fresh broker's group coordinator still loading
            if exc.args[0].retriable() or exc.args[0].code() in COORDINATOR_NOT_READY:
                return False
            raise
        return len(described.members) == 2 and all(m.assignment.topic_partitions for m in described.members)
    await eventually(both_working, 60, "two members sharing the partitions")
    half = len(history) // 2
    await load.send(history[:half])

    async def both_processed() -> bool:  # the first half went through each instance
        async with httpx.AsyncClient() as client:
            for name in ("processor-a", "processor-b"):
                text = (await client.get(f"http://127.0.0.1:{stack.ports[name]}/metrics")).text
                if 'parcours_processor_events_total{type="MessagePosted"}' not in text:
                    return False
        return True
    await eventually(both_processed, 60, "both instances to process events")
    sending = asyncio.create_task(load.send(history[half:], pause_every=20))
    stack.kill("processor-a", signal.SIGKILL)
    await sending
    await load.caught_up()
    await load.check(cases=60)
