"""The supervisor of `parcours up` with real child processes (no broker): it restarts what dies,
forgets old deaths, and gives up on a service that dies too often while the others keep running."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def test_readyz_waits_for_each_services_own_readiness(tmp_path: Path) -> None:
    """A service spawned is not yet a service serving: `/readyz` says 503, naming it, until its
    own readiness URL answers 200 (as `parcours up` declares each adapter's `/readyz`)."""
    own = free_port()
    sup = Supervisor({}, tmp_path, command=[sys.executable, "-c"])
    sup.add("adapter", STAY, ready=f"http://127.0.0.1:{own}/readyz")
    sup.add("processor", STAY)  # no readiness URL: running is all it can say
    sup.start()
    server = sup.serve(port := free_port())

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    adapter = ThreadingHTTPServer(("127.0.0.1", own), Ready)
    serving: threading.Thread | None = None
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:  # its port does not answer yet
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert refused.value.code == 503
        assert json.loads(refused.value.read()) | {"restarts": None} == {
            "status": "not_ready", "given_up": [], "not_ready": ["adapter"], "restarts": None}
        serving = threading.Thread(target=adapter.serve_forever, daemon=True)
        serving.start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["status"] == "ready"
    finally:
        if serving is not None:  # shutdown() waits for serve_forever: only once it was started
            adapter.shutdown()
        adapter.server_close()
        server.shutdown()
        server.server_close()
        sup.stop()
