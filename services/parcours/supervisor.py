"""Run the services as child processes, restart the ones that die, stop them all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Service:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0


@dataclass
class Supervisor:
    env: dict[str, str]
    logdir: Path
    services: dict[str, Service] = field(default_factory=dict)
    max_restarts: int = 5

    def add(self, name: str, *args: str) -> None:
        self.services[name] = Service(name, list(args))

    def _spawn(self, svc: Service) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with (self.logdir / f"{svc.name}.log").open("ab") as log:
            svc.proc = subprocess.Popen([sys.executable, "-m", "parcours.cli", *svc.args], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> None:
        for svc in self.services.values():
            self._spawn(svc)

    def check(self, report: Callable[[str], None] = print) -> None:
        """Restart what died (with a growing delay); report each event."""
        now = time.monotonic()
        for svc in self.services.values():
            if svc.proc is None or svc.proc.poll() is None:
                continue
            if svc.next_start == 0.0:
                if svc.restarts >= self.max_restarts:
                    raise RuntimeError(f"{svc.name} died {svc.restarts + 1} times; see {self.logdir / (svc.name + '.log')}")
                delay = min(30.0, 2.0 ** svc.restarts)
                report(f"[supervisor] {svc.name} exited with code {svc.proc.returncode}; restarting in {delay:.0f}s "
                       f"(log: {self.logdir / (svc.name + '.log')})")
                svc.next_start = now + delay
            elif now >= svc.next_start:
                svc.restarts += 1
                svc.next_start = 0.0
                self._spawn(svc)
                report(f"[supervisor] {svc.name} restarted (restart #{svc.restarts})")

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
