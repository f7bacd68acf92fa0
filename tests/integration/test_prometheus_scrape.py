"""A real Prometheus server on loopback scrapes the running services; a metric is read back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx

from parcours.devbroker.broker import free_port
from tests.api import Api, referral_body
from tests.stack import Stack, eventually


async def test_prometheus_scrapes_the_services(stack: Stack, tmp_path) -> None:
    await stack.ready()
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: `make test` installs Debian's prometheus package"
    adapters = [stack.url(k).removeprefix("http://") for k in ("dac", "cpts", "crt")]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n"
        f"  - job_name: parcours-adapters\n    static_configs: [{{targets: {adapters}}}]\n"
        f"  - job_name: parcours-processor\n    static_configs: [{{targets: ['127.0.0.1:{stack.ports['processor']}']}}]\n"
    )
    port = free_port()
    proc = await asyncio.create_subprocess_exec(prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                                f"--web.listen-address=127.0.0.1:{port}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            api = Api(stack, client)
            await api.post("cpts-31-nord", "/v1/referrals", referral_body("dac-31"))

            async def query(q: str) -> list:
                resp = await client.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": q})
                return resp.json()["data"]["result"] if resp.status_code == 200 else []
            up = await eventually(lambda: query("up == 1"), 60, "every target up")
            accepted = await eventually(lambda: query('parcours_events_accepted_total{type="ReferralSubmitted",kind="cpts"}'),
                                        60, "the accepted counter in Prometheus")
            assert float(accepted[0]["value"][1]) >= 1
            processed = await eventually(lambda: query("parcours_processor_events_total"), 60, "processor metrics")
            assert processed
            assert len(await eventually(lambda: _full(query, "up == 1", 4), 60, "4 targets up")) == 4
            assert up
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


async def _full(query, q: str, n: int) -> list:
    result = await query(q)
    return result if len(result) >= n else []
