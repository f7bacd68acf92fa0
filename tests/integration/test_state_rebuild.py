"""`parcours state rebuild`: a processor whose state was lost (local folder deleted, changelog
topic deleted and created again) resumes, after the rebuild, on a state equal to the one it had:
later events that depend on earlier ones (a status of an earlier referral, an event sent twice)
give the views a rebuild gives, no notification comes twice, and nothing is processed again."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import consumer_lag, read_to_end
from parcours.contract.codec import Codec
from parcours.paths import topics_dir
from parcours.processors import rebuild as rb
from parcours.processors.app import group_id
from parcours.processors.staterebuild import StateRebuildError, rebuild_state
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy
from tests.factories import ev
from tests.fixtures.make_story import story
from tests.stack import Stack, delete_topics, eventually

SLUGS = ["dac-31", "cpts-31-nord", "cpts-31-sud", "crt-31-muret", "crt-31-nord"]


class Run:
    def __init__(self, stack: Stack) -> None:
        self.stack, self.kafka = stack, stack.kafka
        self.cli("topics", "apply")
        self.cat = Catalogue.load(prefix=stack.prefix)
        self.policy = KindPolicy.load(topics_dir() / "policy.yaml")
        self.codec = Codec()
        self.state_dir = stack.logdir / "state-processor"  # Stack.start_processor's

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "parcours.cli", *args], env=self.stack.env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"parcours {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    async def send(self, events: list[Any]) -> None:
        producer = self.kafka.producer()
        await producer.start()
        try:
            for e in events:
                enc = self.codec.encode(e)
                await producer.send(self.cat.for_event(e.event_type).name, enc.value, key=enc.key, headers=enc.headers)
            await producer.flush()
        finally:
            await producer.stop()

    async def caught_up(self) -> None:
        parts = [(t.name, p) for t in self.cat.canonical() for p in range(t.partitions)]

        async def done() -> bool:
            self.stack.check_alive()
            return sum((await consumer_lag(self.kafka, group_id(self.cat), parts)).values()) == 0
        await eventually(done, 120, "the processor to catch up")

    async def views_equal_a_rebuild(self) -> None:
        diffs: list[str] = []

        async def identical() -> bool:
            rebuilt = await rb.rebuild(self.cat, self.kafka, self.policy, workers=1)
            diffs[:] = rb.differences(await rb.live_views(self.cat, self.kafka), rebuilt.views)
            return not diffs
        try:
            await eventually(identical, 60, "live views identical to the rebuild")
        except AssertionError:
            raise AssertionError(f"{len(diffs)} view items differ, e.g. {diffs[:5]}") from None

    async def notification_ids(self) -> dict[str, list[str]]:
        return {slug: [json.loads(r.value)["notification_id"]
                       async for records in read_to_end(self.kafka, [self.cat.per_structure("inbox", slug).name]) for r in records]
                for slug in SLUGS}

    async def counted(self) -> tuple[int, int]:
        """The running processor's events (clock ticks aside) and duplicates, from its metrics."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.stack.ports['processor']}/metrics")).text

        def total(name: str) -> int:
            return sum(int(float(n)) for t, n in re.findall(rf'^{name}{{type="(\w+)"}} (\S+)$', text, re.M) if t != "tick")
        return total("parcours_processor_events_total"), total("parcours_processor_duplicates_total")

    async def lose_the_state(self) -> None:
        """The local RocksDB folder deleted, the changelog topic deleted and created again."""
        shutil.rmtree(self.state_dir)
        changelog = self.cat.topic("case-state").name
        await delete_topics(self.kafka, [changelog], 30)
        self.cli("topics", "apply")
        assert not [r async for records in read_to_end(self.kafka, [changelog]) for r in records]


@pytest.fixture
def run(kafka_cluster: Cluster, tmp_path: Path) -> Iterator[Run]:
    stack = Stack(kafka_cluster, f"r{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        yield Run(stack)
    finally:
        stack.stop()


def _more_cases() -> list[Any]:
    """Cases on other partitions, with a referral left unanswered (its deadline is past: the clock
    ticks it and the sender gets a reminder) and a consent."""
    out = []
    for c in range(6):
        case = f"case-r{c}"
        out += [ev("ReferralSubmitted", case_id=case, source="cpts-31-nord", to_structure="dac-31", referral_id=f"ref-r{c}"),
                ev("MessagePosted", case_id=case, source="dac-31", message_id=f"m{c}", category="discussion", at=1),
                ev("ConsentRecorded", case_id=case, source="dac-31", consent_id=f"c{c}", grantee="cpts", at=2,
                   categories=["discussion"], decision="permit")]
    return out


async def test_a_lost_state_rebuilt_and_resumed_on(run: Run) -> None:
    stack = run.stack
    first, more = story(), _more_cases()
    stack.start_processor()
    await run.send(first + more)
    await run.caught_up()
    await run.views_equal_a_rebuild()

    async def reminded() -> bool:  # the clock ticked the unanswered referrals: the state knows
        ids = (await run.notification_ids())["cpts-31-nord"]
        return sum(i.startswith("case-r") and i.endswith(":overdue") for i in ids) == len(more) // 3
    await eventually(reminded, 60, "the reminders of the unanswered referrals")
    before = await run.notification_ids()
    # refused while the processor runs (its group's members are checked; its folder is not this one)
    with pytest.raises(StateRebuildError, match=rf"{group_id(run.cat)}.*stop every processor instance first"):
        await rebuild_state(run.cat, run.kafka, run.policy, stack.logdir / "elsewhere", wait_s=0)
    stack.kill("processor")
    await run.lose_the_state()

    summary = run.cli("state", "rebuild", "--state-dir", str(run.state_dir)).strip().splitlines()[-1]
    m = re.match(r"state rebuilt: (\d+) events read, (\d+) cases, (\d+) state records written, (\d+) views records written, "
                 r"(\d+) offsets committed", summary)
    assert m, summary
    assert int(m[1]) >= len(first) + len(more) + len(more) // 3  # the clock's ticks too, one at least per reminder
    assert int(m[2]) == 2 + 6
    assert int(m[3]) > 0
    assert int(m[4]) == 0  # the views were right: only the state was lost
    assert int(m[5]) == len(run.cat.canonical()) * 6 + 6
    again = run.cli("state", "rebuild", "--state-dir", str(run.state_dir)).strip().splitlines()[-1]
    assert "0 state records written, 0 views records written" in again, again
    assert await run.notification_ids() == before  # no inbox record written

    stack.start_processor()
    later = [
        ev("ReferralStatusChanged", case_id="case-fixture-b", source="crt-31-nord", referral_id="ref-b1", status="accepted", at=90),
        ev("ReferralStatusChanged", case_id="case-r0", source="dac-31", referral_id="ref-r0", status="acknowledged", at=91),
        ev("MessagePosted", case_id="case-fixture-a", source="crt-31-muret", message_id="msg-a9", body="Après.", at=92),
    ]
    await run.send([*later, first[6], more[1]])  # and two events sent again
    await run.caught_up()
    await run.views_equal_a_rebuild()

    async def counted() -> bool:
        return await run.counted() == (len(later), 2)
    await eventually(counted, 30, f"{len(later)} events and 2 duplicates processed (nothing from the start again)")
    after = await run.notification_ids()
    for slug in SLUGS:
        assert after[slug][:len(before[slug])] == before[slug]
        assert len(set(after[slug])) == len(after[slug]), f"{slug}: a notification twice"
    assert after != before  # the later events were announced
