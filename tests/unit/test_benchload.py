"""The bench's load generators, without Kafka: the open loop sends on schedule whatever the answers
(latency from the scheduled time), the figures are read right, and wrk's script counts refusals."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parcours.devbroker.broker import free_port
from parcours.devtools import benchload as bl


def test_the_response_head_is_parsed() -> None:
    assert bl.parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 57\r\ncontent-type: application/json\r\n\r\n") == (202, 57, False)
    assert bl.parse_head(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") == (503, 0, True)
    assert bl.parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == (200, None, False)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (bl.pct(values, 50), bl.pct(values, 99), bl.pct(values, 100)) == (50.0, 99.0, 100.0)
    assert bl.pct([7.0], 99) == 7.0
    assert bl.pct([], 50) != bl.pct([], 50)  # nan


def test_the_wrk_figures_are_read_from_the_done_line() -> None:
    out = ("Running 15s test @ http://127.0.0.1:1\n  1 threads and 32 connections\n"
           'PARCOURS-WRK {"requests":1000,"duration_us":2000000,"non_2xx":100,"connect":0,"read":2,"write":0,"timeout":1,'
           '"latency_mean_us":8000.5,"latency_p50_us":7000,"latency_p99_us":20000,"latency_max_us":31000}\n')
    r = bl.parse_wrk(out)
    assert r.accepted_per_s == 450
    assert (r.non_2xx, r.socket_errors, r.latency_p99_ms) == (100, 3, 20.0)
    assert r.figures("bare")["bare_posts_per_s"] == 450
    with pytest.raises(RuntimeError, match="no figures"):
        bl.parse_wrk("Running 15s test\n")


def test_the_wrk_script_cycles_over_the_cases_as_the_dac() -> None:
    lua = bl.wrk_script(3, "dev-dac-31")
    assert 'wrk.headers["Authorization"] = "Bearer dev-dac-31"' in lua
    assert 'wrk.body = "{\\"body\\":\\"Bench.\\"}"' in lua
    assert "for c = 0, 2 do" in lua
    assert '"/v1/cases/case-a" .. c .. "/messages"' in lua
    with pytest.raises(ValueError, match="one case"):
        bl.wrk_script(0, "t")


def test_open_loop_figures() -> None:
    def sample(scheduled: float, status: int, mid: str | None, rtt: float = 0.01) -> bl.Sample:
        return bl.Sample(scheduled, sent=scheduled + 0.001, answered=scheduled + rtt, status=status,
                         body=json.dumps({"message_id": mid} if mid else {"error": "x"}).encode())

    samples = [sample(i / 100, 202, f"msg-{i}") for i in range(100)]
    samples += [sample(1.0, 422, None), bl.Sample(1.01, sent=1.011, error="ConnectionResetError")]
    seen = {f"msg-{i}": i / 100 + 0.01 + 0.02 for i in range(99)}  # msg-99 never reaches the view
    f = bl.open_loop_figures(samples, seen, 100)
    assert (f["open_requests"], f["open_accepted"], f["open_errors"], f["open_non_202"], f["open_unseen_in_view"]) == (102, 100, 1, 1, 1)
    assert f["open_view_p50_ms"] == pytest.approx(20)
    assert f["open_post_p99_ms"] == pytest.approx(10)
    assert f["open_sent_per_s"] == pytest.approx(101 / 1.01)


def test_an_open_loop_that_fell_behind_its_schedule_is_reported_as_not_valid() -> None:
    from parcours.devtools.benchreport import kept_schedule

    on_time = {"open_rate_target": 500.0, "open_sent_per_s": 499.0, "open_send_lag_p99_ms": 3.0}
    assert kept_schedule(on_time)
    assert not kept_schedule({**on_time, "open_sent_per_s": 378.0})  # could not send at the rate
    assert not kept_schedule({**on_time, "open_send_lag_p99_ms": 6509.0})  # sent late: a queue inside the generator


async def test_the_open_loop_sends_on_schedule_whatever_the_answers() -> None:
    """Every answer takes 200 ms: a closed loop over 4 connections would send 20/s; the open loop
    keeps its 200/s, and each latency counts from the request's scheduled time."""
    delay = 0.2
    requests_seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                _, length, _ = bl.parse_head(b"HTTP/1.1 000 -\r\n" + head.split(b"\r\n", 1)[1])
                requests_seen.append(head.split(b"\r\n", 1)[0] + b" " + await reader.readexactly(length or 0))
                await asyncio.sleep(delay)
                body = json.dumps({"message_id": f"msg-{len(requests_seen)}"}).encode()
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        load = bl.OpenLoop("127.0.0.1", port, [bl.request_bytes("127.0.0.1", port, bl.message_path(bl.case_name(c)), "tok")
                                               for c in range(2)])
        t0 = time.monotonic()
        await load.warm(2)
        samples = await load.run(200, 0.5)
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    f = bl.open_loop_figures(samples, {}, 200)
    assert f["open_requests"] == 100
    assert f["open_accepted"] == 100
    assert f["open_sent_per_s"] > 60  # three times a closed loop's 20/s (not 200: a loaded machine's event loop stalls)
    assert f["open_post_p50_ms"] >= delay * 1000
    assert elapsed < 5.0  # concurrent: not 100 x 200 ms = 20 s over a few connections (wide: a loaded CI machine stalls)
    assert load.connections_opened > 4  # 2 warm, then more as they are all busy
    assert requests_seen[0] == b'POST /v1/cases/case-a0/messages HTTP/1.1 {"body":"Bench."}'
    assert requests_seen[1].startswith(b"POST /v1/cases/case-a1/messages ")


@pytest.fixture(scope="module")
def bare() -> Iterator[str]:
    """The bare endpoint, served as the bench serves it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from parcours.devtools.benchbare import serve_bare; serve_bare(int(sys.argv[1]))",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.post(f"{base}/v1/cases/case-a0/messages", json={"body": "x"}).status_code == httpx.codes.ACCEPTED:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the bare endpoint did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_bare_endpoint_validates_its_body_and_does_nothing(bare: str) -> None:
    r = httpx.post(f"{bare}/v1/cases/case-a7/messages", json={"body": "Bench."})
    assert (r.status_code, r.json()) == (202, {})
    assert httpx.post(f"{bare}/v1/cases/case-a7/messages", json={"text": "Bench."}).status_code == 422


def test_wrk_counts_the_answers_and_the_refusals(bare: str, tmp_path: Path) -> None:
    assert shutil.which("wrk"), "wrk is not installed: make system-deps installs it (Debian package wrk)"
    script = tmp_path / "post.lua"
    script.write_text(bl.wrk_script(5, "dev-dac-31"))
    ok = bl.run_wrk(bare, str(script), seconds=1, connections=4)
    assert ok.requests > 0
    assert (ok.non_2xx, ok.socket_errors) == (0, 0)
    refused = tmp_path / "refused.lua"
    refused.write_text(script.read_text().replace('"/messages"', '"/nowhere"'))
    no = bl.run_wrk(bare, str(refused), seconds=1, connections=4)
    assert no.requests > 0
    assert no.non_2xx == no.requests
    assert no.accepted_per_s == 0


def test_the_processor_time_is_split_between_the_step_and_the_rest() -> None:
    from parcours.devtools.benchkit import time_split

    first = {"events": 100.0, "parcours_processor_step_seconds_total": 1.0,
             "parcours_processor_records_written_total": 500.0, "parcours_processor_state_writes_total": 300.0,
             "cpu_seconds": 10.0}
    last = {"events": 1100.0, "parcours_processor_step_seconds_total": 1.4,
            "parcours_processor_records_written_total": 9500.0, "parcours_processor_state_writes_total": 4300.0,
            "cpu_seconds": 10.9}
    sp = time_split(first, last, seconds=1.0)  # 1,000 events in 1 s, 0.4 s of it in the step
    assert sp["us_per_event"] == pytest.approx(1000)
    assert sp["step_us_per_event"] == pytest.approx(400)
    assert sp["rest_us_per_event"] == pytest.approx(600)
    assert sp["cpu_us_per_event"] == pytest.approx(900)
    assert sp["records_written_per_event"] == pytest.approx(9)
    assert sp["state_writes_per_event"] == pytest.approx(4)
    assert sp["free_step_events_per_s"] == pytest.approx(1 / 600e-6)
    with pytest.raises(ValueError, match="no event"):
        time_split(first, first, seconds=1.0)


def test_the_cpu_meter_counts_a_process_and_the_finished_children() -> None:
    import os
    import subprocess
    import sys

    from parcours.devtools.benchkit import CpuMeter
    from parcours.devtools.benchreport import _cpu_report

    meter = CpuMeter({"bench": os.getpid()})
    sum(i * i for i in range(2_000_000))  # CPU in this process
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(2_000_000))"], check=True)  # and in a child
    cpu = meter.per(10)
    assert cpu["bench"] > 1_000  # µs per request: over 10 ms in all
    assert cpu["load generator"] > 1_000
    lines = _cpu_report({"system_cpu_us_per_post": {"adapter": 1000.0, "processor": 1500.0, "broker": 1500.0}})
    assert "adapter 1,000 µs" in lines[0]
    assert f"{os.cpu_count()} cores at 100% carry at most {(os.cpu_count() or 1) / 4000 * 1e6:,.0f} POSTs/s" in lines[1]


def test_instances_are_timed_from_the_moment_each_has_processed_an_event(monkeypatch: pytest.MonkeyPatch) -> None:
    import types
    from typing import cast

    from parcours.devtools import benchkit as bench
    from parcours.devtools.benchkit import ProcessorRun, rate_of_instances

    clock = [0.0]  # one second per poll of the metrics
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(
        monotonic=lambda: clock[0], perf_counter=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + 1)))

    class Fake:
        def __init__(self, counts: list[float]) -> None:
            self.counts, self.proc = counts, self

        def poll(self) -> None:
            return None

        def events_seen(self) -> float:
            return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]

    # the second instance joins late: the window opens at the second poll (20 + 5 seen), and
    # closes at the fourth (60 + 40): 75 events in 2 s
    runs = [Fake([10, 20, 40, 60]), Fake([0, 5, 20, 40])]
    assert rate_of_instances(cast("list[ProcessorRun]", runs), expected=100) == pytest.approx(37.5)
    with pytest.raises(RuntimeError, match="not shared"):
        rate_of_instances(cast("list[ProcessorRun]", [Fake([0, 100]), Fake([0])]), expected=100)
