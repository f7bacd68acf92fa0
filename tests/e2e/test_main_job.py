"""The README's main job as a user runs it: `parcours demo` and `parcours up`, whole stack as subprocesses."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from parcours.bootstrap import Cluster
from parcours.devtools.demo import demo_cases


def _env(kafka_cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    """The test's own topics; the services' local files (read models, processor state) in its folder."""
    return {**os.environ, **kafka_cluster.env(), "PARCOURS_TOPIC_PREFIX": f"e{uuid.uuid4().hex[:8]}",
            "PARCOURS_EDGE_DIR": str(tmp_path / "edge"), "PARCOURS_STATE_DIR": str(tmp_path / "state")}


def test_demo_prints_every_view_and_exits_0(kafka_cluster: Cluster, tmp_path: Path) -> None:
    env = _env(kafka_cluster, tmp_path) | {"PARCOURS_BROKER_DIR": str(tmp_path / "broker")}
    out = subprocess.run([sys.executable, "-m", "parcours.cli", "demo"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert text.count("== case ") == 4
    assert "demo finished" in text
    # the territory's directory: the CRT serving the person's postcode comes first, and is referred to
    assert "the DAC finds crt-31-muret first (Accompagnement renforcé à domicile; postcode, 4 places, 3 days) among 3 offers" in text
    # consent filtering shows: the CRT sees the functional evaluation, never the medical one
    crt_block = text.split("crt-31-muret  version")[1].split("crt-31-nord")[0]
    assert "aggir (functional)" in crt_block
    assert "multidimensional (medical)" not in crt_block
    assert "cpts-31-sud   (nothing visible" in text
    # the admission commission: the CRT and the DAC it invited see the DAC's opinion; the commission is decided
    commission_block = text.split("admission commission, refused without alternative")[1]
    assert commission_block.count("decided, invited dac-31; opinions: dac-31 favourable") == 2
    assert "admission refused" in commission_block
    # one person, one follow-up: the DAC, referred the first story's person again, joins its own follow-up
    assert "told that dac-31 follows the person already; it joins its own follow-up" in text
    joined_block = text.split("a second referral of a followed person, joined")[1]
    assert "cpts-31-sud -> dac-31, declined; also followed by dac-31" in joined_block
    # a partner signs in as SMART Backend Services say: a registered key, a signed assertion, an access token
    assert "SMART Backend Services: cpts-31-nord registers a generated ES384 key (demo)" in text
    assert re.search(r"access token for 'system/EpisodeOfCare.rs system/ServiceRequest.c' and reads its [1-9]\d* case", text)


def test_up_serves_the_printed_urls_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`make run` as a user types it, on its own embedded broker: three starts on the same folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")} | {
        "PARCOURS_BROKER_DIR": str(tmp_path / "broker"), "PARCOURS_EDGE_DIR": str(tmp_path / "edge"),
        "PARCOURS_STATE_DIR": str(tmp_path / "state"), "PARCOURS_TOPIC_PREFIX": f"e{uuid.uuid4().hex[:8]}"}
    first = _run_up_once(env)
    assert "seeding the demo territory" in first
    assert "changed" in first
    # at once again, the same folders and topics: the ports just closed (TIME_WAIT) must not stop it,
    # and the demo is found there, not told twice
    again = _run_up_once(env)
    assert "is already on this cluster (4 cases): serving it" in again
    assert "seeding" not in again
    # a new, empty broker beside the read models and processor state of the old one: they describe
    # another cluster, are discarded and rebuilt; the story told again is seen whole
    shutil.rmtree(tmp_path / "broker")
    third = _run_up_once(env)
    assert "seeding the demo territory" in third


def _run_up_once(env: dict[str, str]) -> str:
    """`parcours up` until it serves, every printed URL answered, then Ctrl-C; its output."""
    proc = subprocess.Popen([sys.executable, "-m", "parcours.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if line.startswith("  try: curl"):
                break
        text = "".join(lines)
        assert "Parcours is running" in text, text
        urls = [w for line in lines for w in line.split() if w.startswith("http://127.0.0.1:")]
        assert len(urls) >= 11
        headers = {"Authorization": "Bearer dev-dac-31"}
        token = {":8101": "dac-31", ":8102": "cpts-31-nord", ":8103": "crt-31-muret"}
        for url in urls:
            slug = next((v for k, v in token.items() if k in url), "dac-31")
            resp = httpx.get(url, headers={"Authorization": f"Bearer dev-{slug}"}, timeout=10)
            assert resp.status_code == 200, (url, resp.status_code, resp.text[:200])
        # the DAC sees exactly the demo's cases (once the processor has shown them all: a start that
        # found the demo there serves at once)
        expected = sorted(demo_cases().values())
        seen: list[str] = []
        for _ in range(120):
            seen = sorted(c["case_id"] for c in httpx.get("http://127.0.0.1:8101/v1/cases", headers=headers, timeout=10).json()["cases"])
            if seen == expected:
                break
            time.sleep(0.5)
        assert seen == expected
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own (a failed start)
            os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)  # always: closes the pipe
    assert proc.returncode == 0, rest
    assert "stopping" in rest
    for port in (8100, 8101, 8102, 8103, 8104, 8105):  # everything is down again
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            raise AssertionError(f"port {port} still answers")
        except httpx.ConnectError:
            pass
    return "".join(lines)
