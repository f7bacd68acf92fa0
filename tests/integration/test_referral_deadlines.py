"""Referral deadlines on the real broker, with deadlines of seconds (PARCOURS_POLICY): an urgent
referral nobody answers raises one automatic `unanswered_referral` rupture in the DAC observatory
and one reminder in its sender's inbox; an answer in time raises nothing; a late answer is
counted with its delay; `parcours views rebuild --write` repeats none of it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parcours.bootstrap import Cluster
from tests.api import Api, referral_body
from tests.stack import Stack, eventually

# long enough for the answer in time to be seen and acknowledged on a loaded machine
DEADLINE_S = 20


@pytest.fixture(scope="module")
def deadline_stack(kafka_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("deadlines")
    policy = folder / "policy.yaml"
    shipped = (Path(__file__).resolve().parents[2] / "topics" / "policy.yaml").read_text()
    policy.write_text(shipped.split("referral_deadlines:")[0]
                      + f"referral_deadlines: {{urgent: {DEADLINE_S}s, soon: 2d, routine: 7d}}\n")
    s = Stack(kafka_cluster, f"d{uuid.uuid4().hex[:10]}", folder, env={"PARCOURS_POLICY": str(policy)})
    s.start(validator=False)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def api(deadline_stack: Stack) -> AsyncIterator[Api]:
    await deadline_stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(deadline_stack, client)


async def _counts(api: Api) -> dict[str, int]:
    ruptures = (await api.get("dac-31", "/v1/observatory")).json()["ruptures"]
    out: dict[str, int] = {}
    for r in ruptures:
        out[r["type"]] = out.get(r["type"], 0) + r["count"]
    return out


async def _reminders(api: Api, referral_id: str) -> list[dict[str, Any]]:
    notes = (await api.get("dac-31", "/v1/inbox?limit=1000")).json()["notifications"]
    return [n for n in notes if n["type"] == "referral_overdue" and n["item"] == f"referral:{referral_id}"]


async def test_an_unanswered_referral_raises_one_rupture_and_one_reminder(api: Api) -> None:
    await api.open_case("dac-31", "crt-31-nord")  # the processor is past its start (a `soon` referral: no deadline here)
    on_time = (await api.post("dac-31", "/v1/referrals", referral_body("crt-31-muret", urgency="urgent"))).json()
    await api.view_with("crt-31-muret", on_time["case_id"], f"referral:{on_time['referral_id']}")
    await api.post("crt-31-muret", f"/v1/referrals/{on_time['referral_id']}/status", {"status": "acknowledged"})
    silent = (await api.post("dac-31", "/v1/referrals", referral_body("crt-31-muret", urgency="urgent"))).json()

    async def reminded() -> list[dict[str, Any]] | None:
        return await _reminders(api, silent["referral_id"]) or None
    notes = await eventually(reminded, 90, "the reminder of the unanswered referral")
    assert len(notes) == 1
    assert notes[0]["case_id"] == silent["case_id"]

    async def ruptured() -> bool:  # same transaction as the reminder, but the adapter may apply it a batch later
        return (await _counts(api)).get("unanswered_referral") == 1
    await eventually(ruptured, 30, "the unanswered referral in the observatory")
    assert await _reminders(api, on_time["referral_id"]) == []  # answered in time: nothing

    # answered late: counted with its delay
    await api.post("crt-31-muret", f"/v1/referrals/{silent['referral_id']}/status", {"status": "acknowledged"})

    async def late_counted() -> bool:
        return (await _counts(api)).get("late_referral_answer") == 1
    await eventually(late_counted, 30, "the late answer in the observatory")

    # a rebuild of the views writes views only: no second rupture, no second reminder
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "parcours.cli", "views", "rebuild", "--write"],
                                  env=api.stack.env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    barrier = await api.open_case("dac-31", "crt-31-nord")  # the processor went past everything before
    assert barrier[0]
    assert (await _counts(api)) == {"unanswered_referral": 1, "late_referral_answer": 1}
    assert len(await _reminders(api, silent["referral_id"])) == 1
