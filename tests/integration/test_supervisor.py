"""The supervisor of `parcours up` with real child processes (no broker): it restarts what dies,
forgets old deaths, and gives up on a service that dies too often while the others keep running."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from parcours.devbroker.broker import free_port
from parcours.supervisor import Supervisor

CRASH = "import sys; sys.exit(3)"
STAY = "import time; time.sleep(120)"


def _until(condition: Callable[[], bool], sup: Supervisor, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        sup.check(report=lambda _: None)
        time.sleep(0.02)


def test_a_service_that_keeps_dying_is_given_up_and_the_others_run_on(tmp_path: Path) -> None:
    sup = Supervisor({}, tmp_path, budget=3, window_s=60, max_delay_s=0.05, command=[sys.executable, "-c"])
    sup.add("crasher", CRASH)
    sup.add("steady", STAY)
    sup.start()
    server = sup.serve(port := free_port())
    try:
        _until(lambda: sup.given_up() == ["crasher"], sup)
        steady = sup.services["steady"].proc
        assert steady is not None
        assert steady.poll() is None  # the rest of the stack is untouched
        assert sup.services["crasher"].restarts == 2  # three deaths: two restarts, then given up
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert refused.value.code == 503
        assert json.loads(refused.value.read())["given_up"] == ["crasher"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'parcours_supervisor_given_up{service="crasher"} 1.0' in metrics
        assert 'parcours_supervisor_given_up{service="steady"} 0.0' in metrics
        assert 'parcours_supervisor_restarts_total{service="crasher"} 2.0' in metrics
    finally:
        server.shutdown()
        server.server_close()
        sup.stop()


def test_old_deaths_are_forgotten(tmp_path: Path) -> None:
    now = [0.0]
    sup = Supervisor({}, tmp_path, budget=2, window_s=60, command=[sys.executable, "-c"], clock=lambda: now[0])
    sup.add("crasher", CRASH)
    sup.start()
    try:
        for _ in range(5):  # one death every 100 s: never two within the window
            svc = sup.services["crasher"]
            assert svc.proc is not None
            assert svc.next_start == 0.0  # running, no restart pending
            # wait for the exit without calling `check`: a `check` that saw the death while we
            # waited would schedule the restart on the frozen clock, which never comes
            svc.proc.wait(timeout=30)
            sup.check(report=lambda _: None)  # the death: a restart is scheduled after 1 s
            assert svc.next_start == now[0] + 1.0
            now[0] += 100
            sup.check(report=lambda _: None)  # restarted
        assert sup.given_up() == []
        assert sup.services["crasher"].restarts == 5
    finally:
        sup.stop()
