"""Run the services as child processes, restart the ones that die, stop them all cleanly.

A service that dies is restarted after a delay that doubles with its recent deaths (1 s, 2 s, 4 s,
... at most 30 s). Deaths older than the window are forgotten: a service that died twice last
week restarts at once today. A service that dies `budget` times within the window is given up
on: it stays down, the others keep running, and the supervisor's `/readyz` (503, naming it) and
`parcours_supervisor_given_up{service}` say so, instead of stopping the whole stack.

`/readyz` is the stack's readiness: 200 only when no service is given up on and each service's own
readiness URL (`add(..., ready=url)`: an adapter's `/readyz`, which also checks Kafka) answers 200;
otherwise 503 naming the services not ready.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

#: how a service is started: `parcours <args>` in the same interpreter
COMMAND = [sys.executable, "-m", "parcours.cli"]


@dataclass
class Service:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    deaths: deque[float] = field(default_factory=deque)
    given_up: bool = False
    #: the service's own readiness URL (200 when it serves), if it has one
    ready: str | None = None


class SupervisorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.restarts = Counter("parcours_supervisor_restarts_total", "Services restarted after they died", ["service"], registry=r)
        self.given_up = Gauge("parcours_supervisor_given_up", "1 for a service that died too often and stays down", ["service"], registry=r)


@dataclass
class Supervisor:
    env: dict[str, str]
    logdir: Path
    services: dict[str, Service] = field(default_factory=dict)
    #: deaths within `window_s` after which a service is given up on
    budget: int = 5
    window_s: float = 300.0
    max_delay_s: float = 30.0
    command: list[str] = field(default_factory=lambda: list(COMMAND))
    clock: Callable[[], float] = time.monotonic
    metrics: SupervisorMetrics = field(default_factory=SupervisorMetrics)

    def add(self, name: str, *args: str, ready: str | None = None) -> None:
        self.services[name] = Service(name, list(args), ready=ready)
        self.metrics.given_up.labels(name).set(0)

    def _spawn(self, svc: Service) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with (self.logdir / f"{svc.name}.log").open("ab") as log:  # the child keeps its own handle
            svc.proc = subprocess.Popen([*self.command, *svc.args], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> None:
        for svc in self.services.values():
            self._spawn(svc)

    def check(self, report: Callable[[str], None] = print) -> None:
        """Restart what died (with a growing delay), give up on what dies too often; report each."""
        now = self.clock()
        for svc in self.services.values():
            if svc.given_up or svc.proc is None or svc.proc.poll() is None:
                continue
            log = self.logdir / f"{svc.name}.log"
            if svc.next_start == 0.0:  # a death not handled yet
                svc.deaths.append(now)
                while svc.deaths and now - svc.deaths[0] > self.window_s:
                    svc.deaths.popleft()
                if len(svc.deaths) >= self.budget:
                    svc.given_up = True
                    self.metrics.given_up.labels(svc.name).set(1)
                    report(f"[supervisor] {svc.name} died {len(svc.deaths)} times within {self.window_s:.0f}s: "
                           f"given up, the other services keep running (log: {log})")
                    continue
                delay = min(self.max_delay_s, 2.0 ** (len(svc.deaths) - 1))
                report(f"[supervisor] {svc.name} exited with code {svc.proc.returncode}; restarting in {delay:.0f}s (log: {log})")
                svc.next_start = now + delay
            elif now >= svc.next_start:
                svc.restarts += 1
                svc.next_start = 0.0
                self._spawn(svc)
                self.metrics.restarts.labels(svc.name).inc()
                report(f"[supervisor] {svc.name} restarted (restart #{svc.restarts})")

    def given_up(self) -> list[str]:
        return [s.name for s in self.services.values() if s.given_up]

    def not_ready(self, timeout: float = 2.0) -> list[str]:
        """The services (not given up on) whose readiness URL does not answer 200 now."""
        out = []
        for svc in self.services.values():
            if svc.given_up or svc.ready is None:
                continue
            try:
                with urllib.request.urlopen(svc.ready, timeout=timeout) as resp:  # noqa: S310 - our own services' URLs
                    ok = resp.status == HTTPStatus.OK
            except (urllib.error.URLError, OSError):  # HTTPError (a 503) included
                ok = False
            if not ok:
                out.append(svc.name)
        return out

    def serve(self, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        """`/readyz` (503 naming the services given up on or not ready) and `/metrics`, on a thread."""
        sup = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(HTTPStatus.OK, generate_latest(sup.metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/readyz":
                    down, waiting = sup.given_up(), sup.not_ready()
                    body = {"status": "degraded" if down else "not_ready" if waiting else "ready", "given_up": down,
                            "not_ready": waiting, "restarts": {s.name: s.restarts for s in sup.services.values()}}
                    status = HTTPStatus.SERVICE_UNAVAILABLE if down or waiting else HTTPStatus.OK
                    self._send(status, json.dumps(body).encode(), "application/json")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b'{"error": "not_found", "message": "try /readyz or /metrics"}', "application/json")

            def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # no access log on stderr
                return

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="supervisor-http", daemon=True).start()
        return server

    def stop(self, timeout: float = 20.0) -> None:
        for svc in self.services.values():
            if svc.proc and svc.proc.poll() is None:
                os.killpg(svc.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for svc in self.services.values():
            if svc.proc is None:
                continue
            try:
                svc.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(svc.proc.pid, signal.SIGKILL)
                svc.proc.wait()
