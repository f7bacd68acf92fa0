"""Run Parcours services as real subprocesses for integration and e2e tests, and await conditions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess
from parcours.devbroker.broker import BrokerInfo, EmbeddedBroker, free_port
from parcours.security.credentials import ADMIN

T = TypeVar("T")
KINDS = ("dac", "cpts", "crt")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = "condition") -> T:
    """Await until `probe` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = await probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc  # not up yet: keep waiting
        else:
            if result:
                return result
            last = result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def delete_topics(kafka: KafkaAccess, names: list[str], timeout: float = 60.0) -> None:
    """Delete `names` and await until the cluster no longer lists any of them."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        await admin.delete_topics(names)

        async def gone() -> bool:
            return not set(names) & set(await admin.list_topics())
        await eventually(gone, timeout, f"{len(names)} topics deleted")
    finally:
        await admin.close()


def cluster_of(broker: EmbeddedBroker, info: BrokerInfo) -> Cluster:
    """An embedded broker as services see it: its address (every node's), protocol and credential
    store; a cluster of three nodes replicates the topics as production does."""
    from parcours.bootstrap import cluster
    from parcours.devbroker.config import REPLICAS
    from parcours.settings import Settings

    return cluster(Settings(kafka_bootstrap=info.bootstrap, kafka_security_protocol=info.security_protocol, kafka_ca_file=info.cafile or "",
                            credentials_file=broker.credentials.path,
                            topic_replication="production" if len(info.pids) >= REPLICAS else ""))


@dataclass
class Stack:
    cluster: Cluster
    prefix: str
    logdir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # each service finds its own principal's secret in the cluster's credential store
        self.env = {**os.environ, **self.cluster.env(), "PARCOURS_TOPIC_PREFIX": self.prefix,
                    "PARCOURS_WEBHOOK_ATTEMPTS": "3", "PARCOURS_WEBHOOK_FIRST_DELAY_S": "0.2",
                    # load tests post faster than a partner may
                    "PARCOURS_RATE_LIMIT_PER_S": "10000",
                    # each instance's read model in the test's own folder
                    "PARCOURS_EDGE_DIR": str(self.logdir / "edge"),
                    # a crash in native code, even during imports, leaves its Python stack in the log
                    "PYTHONFAULTHANDLER": "1", **self.env}

    @property
    def kafka(self) -> KafkaAccess:
        """The cluster as its administrator: what a test reads and writes directly."""
        return self.cluster.access(ADMIN)

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.ports[kind]}"

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`parcours <args>` as the service `name`, with the stack's environment (and `env` over it)."""
        with (self.logdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "parcours.cli", *args], env={**self.env, **(env or {})},
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_processor(self, name: str = "processor") -> None:
        self.ports[name] = free_port()
        self.spawn(name, "processor", "--metrics-port", str(self.ports[name]),
                   "--state-dir", str(self.logdir / f"state-{name}"))

    def start_adapter(self, kind: str, instance: int = 0, env: dict[str, str] | None = None) -> str:
        """An adapter of `kind` (instance 0: named after its kind; others `<kind>-<instance>`)."""
        name = kind if instance == 0 else f"{kind}-{instance}"
        self.ports[name] = free_port()
        self.spawn(f"adapter-{name}", "adapter", kind, "--port", str(self.ports[name]), "--instance", str(instance), env=env)
        return name

    def start(self, validator: bool = True) -> None:
        subprocess.run([sys.executable, "-m", "parcours.cli", "topics", "apply"], env=self.env, check=True, capture_output=True)
        self.start_processor()
        for kind in KINDS:
            self.start_adapter(kind)
        if validator:
            self.spawn("validator", "validator", "--metrics-port", str(self.ports.setdefault("validator", free_port())))

    async def ready(self, timeout: float = 60) -> None:
        async with httpx.AsyncClient() as client:
            for kind in KINDS:
                async def probe(kind: str = kind) -> bool:
                    self.check_alive()
                    return (await client.get(f"{self.url(kind)}/readyz")).status_code == 200
                await eventually(probe, timeout, f"adapter {kind} ready")

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited with {p.returncode}:\n{tail}")

    def kill(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            os.killpg(p.pid, sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def token(slug: str) -> dict[str, str]:
    return {"Authorization": f"Bearer dev-{slug}"}


class HookServer:
    """A real local HTTP endpoint for webhooks: `answer(path, headers, body)` gives each POST's status."""

    def __init__(self, answer: Callable[[str, Any, bytes], int]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status = answer(self.path, self.headers, self.rfile.read(int(self.headers["content-length"])))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
