"""Every topic of a running stack deleted and created again: the adapters' read models and the
processor's state describe topics that no longer exist. Without a restart, they are discarded and
rebuilt from the new topics: the views are those a rebuild computes, and nothing of the old
incarnation is served."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parcours.bootstrap import Cluster
from parcours.paths import topics_dir
from parcours.processors import rebuild as rb
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy
from tests.api import Api, referral_body
from tests.stack import Stack, delete_topics, eventually


@pytest.fixture
def stack(kafka_cluster: Cluster, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(kafka_cluster, f"r{uuid.uuid4().hex[:10]}", tmp_path)
    s.start(validator=False)
    try:
        yield s
    finally:
        s.stop()


def _metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}"):
            return float(line.split()[-1])
    return 0.0


async def test_a_running_stack_converges_on_topics_created_again(stack: Stack) -> None:
    cat = Catalogue.load(prefix=stack.prefix)
    policy = KindPolicy.load(topics_dir() / "policy.yaml")
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(stack, client)
        old_case, old_referral = await api.open_case("cpts-31-nord", "dac-31")
        await api.view_with("dac-31", old_case, f"referral:{old_referral}")

        await delete_topics(stack.kafka, [t.name for t in cat.topics.values()])
        await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "parcours.cli", "topics", "apply"], env=stack.env,
                                check=True, capture_output=True)

        # a partner goes on: its referral is accepted once the adapter publishes to the new topics
        async def accepted() -> httpx.Response | None:
            stack.check_alive()
            resp = await api.post("cpts-31-sud", "/v1/referrals", referral_body("dac-31"), key="after-recreation", expect=None)
            assert resp.status_code in (202, 503), resp.text
            return resp if resp.status_code == 202 else None
        new = (await eventually(accepted, 90, "a referral accepted on the new topics")).json()

        # the DAC's cases are those of the new topics only: the old case is gone from its read model
        async def only_new() -> list[str] | None:
            stack.check_alive()
            resp = await api.get("dac-31", "/v1/cases")
            cases = [c["case_id"] for c in resp.json()["cases"]] if resp.status_code == 200 else []
            return cases if cases == [new["case_id"]] else None
        await eventually(only_new, 90, "the DAC's read model on the new topics")
        assert await api.view("dac-31", old_case) is None

        # the processor's views equal a rebuild from the new canonical topics, and each adapter serves them
        rebuilt = await rb.rebuild(cat, stack.kafka, policy)
        assert rb.differences(await rb.live_views(cat, stack.kafka), rebuilt.views) == []
        expected = rb.assembled(rebuilt.views)
        for slug in ("dac-31", "cpts-31-sud"):
            served = await api.view(slug, new["case_id"])
            assert served is not None
            assert {k: v for k, v in served.items() if k != "follow_up"} == {
                k: v for k, v in expected[f"{slug}/{new['case_id']}"].items() if k != "follow_up"}

        # each cache said it was discarded, and why
        dac = (await client.get(f"{stack.url('dac')}/metrics")).text
        assert _metric(dac, "parcours_cache_discarded_total", cache="read_model", reason="topic") >= 1
        processor = (await client.get(f"http://127.0.0.1:{stack.ports['processor']}/metrics")).text
        assert _metric(processor, "parcours_cache_discarded_total", cache="state", reason="topic") >= 1
