"""A real Apache Kafka (KRaft) for development and tests, run from Maven Central jars: one node, or
a cluster of three or more on loopback.

`fetch_jars` copies the broker's runtime closure (see pom.xml beside this file) into a cache
outside the repository; `EmbeddedBroker` formats each node's data folder, starts `kafka.Kafka` for
each node on free loopback ports as a detached process, awaits readiness on the cluster itself (a
metadata round trip listing every node, not a sleep) and records where it runs in
`<folder>/broker.json`. One node lives in `<folder>` itself; a cluster's node N in
`<folder>/node-N` (its properties, data, `server.log`), its clients given every node's address.

The broker authenticates and authorizes, in development too: clients speak SASL/SCRAM-SHA-512 on
its one client listener, the `StandardAuthorizer` refuses whatever no ACL allows, and the only
super user is `admin`, whose secret is generated when the data folder is formatted and kept in
`<folder>/credentials.json` (mode 0600, beside the data it protects, never in the repository).
The controller listener is PLAINTEXT on loopback (SCRAM cannot be used there, KAFKA-15513).
A cluster replicates every topic three times with min ISR 2 (`config.py`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from parcours.bus.kafkaio import KafkaAccess
from parcours.devbroker.config import REPLICAS, NodePorts, Security, server_properties
from parcours.devbroker.errors import BrokerError
from parcours.devbroker.health import await_in_sync, quorum_leader, wait_ready
from parcours.devbroker.jars import fetch_jars, require_tool
from parcours.security.credentials import ADMIN, CredentialStore

JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class NodeInfo:
    node_id: int
    pid: int
    port: int
    controller_port: int


@dataclass(frozen=True)
class BrokerInfo:
    pid: int  # the first node's
    bootstrap: str  # every node's client address
    controller: str
    folder: str
    started_at: float
    security_protocol: str = "SASL_PLAINTEXT"
    #: the CA clients trust (SASL_SSL)
    cafile: str | None = None
    nodes: list[NodeInfo] = field(default_factory=list)

    @classmethod
    def read(cls, text: str) -> BrokerInfo:
        raw: dict[str, Any] = json.loads(text)
        nodes = [NodeInfo(**n) for n in raw.pop("nodes", [])]
        return cls(**raw, nodes=nodes)

    @property
    def pids(self) -> dict[int, int]:
        """node id -> process id (one node formatted before clusters existed: node 1)."""
        return {n.node_id: n.pid for n in self.nodes} or {1: self.pid}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Kafka binds: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _cluster_id() -> str:
    """A KRaft cluster id, as `StorageTool random-uuid` makes one (16 random bytes, base64url)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class EmbeddedBroker:
    def __init__(self, folder: Path, cache_dir: Path) -> None:
        self.folder = folder.resolve()
        self.cache_dir = cache_dir
        self.state_file = self.folder / "broker.json"
        self.credentials = CredentialStore(self.folder / "credentials.json")
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # --- where each node lives ----------------------------------------------------------------
    def formatted_nodes(self) -> int | None:
        """How many nodes this folder was formatted for (None: not yet)."""
        if (self.folder / "data" / "meta.properties").exists():
            return 1
        found = [d for d in self.folder.glob("node-*") if (d / "data" / "meta.properties").exists()]
        return len(list(self.folder.glob("node-*"))) if found else None

    def node_folder(self, node_id: int, nodes: int) -> Path:
        return self.folder if nodes == 1 else self.folder / f"node-{node_id}"

    @property
    def log_file(self) -> Path:
        """The (first) node's log."""
        return self.node_folder(1, self.formatted_nodes() or 1) / "server.log"

    def data_dirs(self) -> list[Path]:
        nodes = self.formatted_nodes() or 1
        return [self.node_folder(i, nodes) / "data" for i in range(1, nodes + 1)]

    def access(self, info: BrokerInfo, principal: str = ADMIN) -> KafkaAccess:
        """How `principal` reaches this broker, with its secret from the credential store."""
        return KafkaAccess(info.bootstrap, info.security_protocol, cafile=info.cafile).as_user(
            principal, self.credentials.secret(principal))

    def status(self) -> BrokerInfo | None:
        """The running broker (or cluster: any node of it alive) of this folder, or None."""
        try:
            info = BrokerInfo.read(self.state_file.read_text())
        except (OSError, ValueError, TypeError):
            return None
        return info if any(_alive(pid) for pid in info.pids.values()) else None

    def running_nodes(self) -> list[int]:
        info = self.status()
        return [] if info is None else [n for n, pid in info.pids.items() if _alive(pid)]

    # --- start ----------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0, *, tls: bool = False, nodes: int | None = None) -> BrokerInfo:
        """Start every node not running (all, or the ones that died), or return the running
        broker. `nodes`: 1, or 3 and more for a replicated cluster (default: the count the folder
        was formatted for, else 1). `tls`: the client listener is SASL_SSL, with a CA made on first
        use (the production shape); else SASL_PLAINTEXT on loopback."""
        count = self._count(nodes)
        previous = self.status()
        up = self.running_nodes()
        if previous is not None and len(up) == count:
            return previous
        java = require_tool("java", "the embedded broker is Apache Kafka, a JVM program")
        lib, _, _ = fetch_jars(self.cache_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        if (self.folder / "data" / "meta.properties").exists() and not self.credentials.has(ADMIN):
            # formatted by a version without authentication: development data, formatted again
            print(f"{self.folder / 'data'} was formatted without credentials: formatting it again (development data)", flush=True)
            shutil.rmtree(self.folder / "data")
        sec = self._security(tls, previous)
        ports = self._ports(count, bool(up))
        cp = ["-cp", f"{lib}/*"]
        self._format(java, cp, ports, up, sec)
        pids = dict(previous.pids) if previous is not None else {}
        for node in ports:
            if node.node_id in up:
                continue
            folder = self.node_folder(node.node_id, count)
            with (folder / "stdout.log").open("ab") as out:
                proc = subprocess.Popen(
                    [java, *JVM_OPTS, *self._log_opts(folder), *cp, "kafka.Kafka", str(folder / "server.properties")],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
            self._procs[node.node_id] = proc  # keep the handle: it reaps the child on stop
            pids[node.node_id] = proc.pid
        info = BrokerInfo(pids[1], ",".join(f"127.0.0.1:{n.port}" for n in ports),
                          ",".join(f"127.0.0.1:{n.controller_port}" for n in ports), str(self.folder), time.time(),
                          sec.protocol, sec.cafile, [NodeInfo(n.node_id, pids[n.node_id], n.port, n.controller_port) for n in ports])
        self.state_file.write_text(json.dumps(asdict(info)))
        started = [p for n, p in self._procs.items() if n not in up]
        # ready: the started nodes answer themselves (a node serves clients once it is unfenced),
        # and the cluster lists every node (a node just killed is listed until its session expires)
        own = KafkaAccess(",".join(f"127.0.0.1:{n.port}" for n in ports if n.node_id not in up), sec.protocol, cafile=sec.cafile)
        try:
            asyncio.run(wait_ready(own.as_user(ADMIN, sec.admin_secret), timeout, alive=lambda: all(p.poll() is None for p in started),
                                   brokers=count))
        except BaseException as exc:  # noqa: BLE001 - whatever ended the wait (Ctrl-C too), the half-started nodes go
            for p in started:
                self._kill(p.pid)
            tails = "".join(f"\n--- {f} ---\n{f.read_text()[-2000:]}" for f in self._logs(count) if f.exists())
            raise BrokerError(f"{exc}{tails}") from None
        return info

    def _count(self, nodes: int | None) -> int:
        """The node count to start: `nodes`, which must agree with the folder's, else the folder's, else 1."""
        formatted = self.formatted_nodes()
        count = nodes or formatted or 1
        if count == 2 or count < 1:  # noqa: PLR2004 - two voters lose their quorum with either node
            raise BrokerError(f"--nodes {count}: 1, or {REPLICAS} and more (a quorum survives one node lost)")
        if formatted is not None and formatted != count:
            raise BrokerError(f"{self.folder} holds a {formatted}-node broker, not {count}: stop it and remove the folder "
                              "(`make clean`), or use another PARCOURS_BROKER_DIR")
        return count

    def _format(self, java: str, cp: list[str], ports: list[NodePorts], up: list[int], sec: Security) -> None:
        """Write the properties of every node not running, and format those never formatted (side by side)."""
        count = len(ports)
        cluster_id = self._cluster_id(count) or _cluster_id()
        formats: list[tuple[int, subprocess.Popen[str]]] = []
        for node in ports:
            folder = self.node_folder(node.node_id, count)
            folder.mkdir(parents=True, exist_ok=True)
            props = folder / "server.properties"
            if node.node_id not in up:
                props.write_text(server_properties(node, ports, folder / "data", sec))
                props.chmod(0o600)  # it holds the admin's secret (the broker's own SCRAM login)
            if not (folder / "data" / "meta.properties").exists():
                formats.append((node.node_id, subprocess.Popen(
                    [java, *JVM_OPTS, *self._log_opts(folder), *cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                     "-c", str(props), "--add-scram", f"SCRAM-SHA-512=[name={ADMIN},password={sec.admin_secret}]"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        for node_id, fmt in formats:
            out, _ = fmt.communicate()
            if fmt.returncode != 0:
                raise BrokerError(f"formatting node {node_id} failed: {out}")

    def _security(self, tls: bool, running: BrokerInfo | None) -> Security:
        admin_secret = self.credentials.ensure(ADMIN).get_secret_value()
        if not (tls or (running is not None and running.security_protocol == "SASL_SSL")):
            return Security(admin_secret)
        from parcours.devbroker.tls import ensure_certificates

        ca, pem = ensure_certificates(self.folder / "tls")
        return Security(admin_secret, "SASL_SSL", pem, str(ca))

    def _ports(self, count: int, keep: bool) -> list[NodePorts]:
        """Each node's ports: those it had (all of them while a node runs: they are its quorum's),
        else new free ones."""
        previous = [self._previous_ports(i, count) for i in range(1, count + 1)]
        known = [p for p in previous if p is not None]
        if len(known) == count and (keep or all(_port_free(q) for p in known for q in (p.port, p.controller_port))):
            return known
        if keep:
            raise BrokerError(f"{self.folder}: the running nodes' quorum needs the ports the others had")
        return [NodePorts(i, free_port(), free_port()) for i in range(1, count + 1)]

    def _cluster_id(self, count: int) -> str | None:
        """The cluster id an already formatted node holds (a new node joins the same cluster)."""
        for i in range(1, count + 1):
            meta = self.node_folder(i, count) / "data" / "meta.properties"
            if meta.exists():
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1].strip()
        return None

    def _log_opts(self, folder: Path) -> list[str]:
        return [f"-Dlog4j2.configurationFile={resources.files('parcours.devbroker').joinpath('log4j2.properties')}",
                f"-Dparcours.broker.log={folder / 'server.log'}", f"-Dkafka.logs.dir={folder / 'logs'}"]

    def _logs(self, count: int) -> list[Path]:
        return [self.node_folder(i, count) / "server.log" for i in range(1, count + 1)]

    # --- stop, crash, restart -----------------------------------------------------------------
    def stop(self, timeout: float = 30.0, node: int | None = None) -> bool:
        """Stop the broker's nodes (or one `node`) cleanly: SIGTERM, then SIGKILL after `timeout`.
        False if none ran."""
        info = self.status()
        if info is None:
            return False
        stopping = {node_id: pid for node_id, pid in info.pids.items() if node in (None, node_id)}
        for pid in stopping.values():  # all at once: a node stopping alone waits for a quorum the others would take away
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node_id, pid in stopping.items():
            self._kill(pid, max(0.0, deadline - time.monotonic()))
            self._reap(node_id)
        return True

    def crash(self, node: int | None = None) -> bool:
        """SIGKILL the broker's nodes (or one `node`), as a crash would, and reap them (tests of
        what survives a crash)."""
        info = self.status()
        if info is None:
            return False
        killed = [pid for node_id, pid in info.pids.items() if node in (None, node_id) and _alive(pid)]
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        for node_id in info.pids:
            if node in (None, node_id):
                self._reap(node_id)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(killed)

    def rolling_restart(self, timeout: float = 120.0) -> list[int]:
        """Restart the nodes one at a time, each stopped cleanly (its leaderships handed over) and
        started again, the next only once every partition is back in sync: the cluster stays
        writable throughout (min ISR 2 of 3). Returns the nodes restarted."""
        info = self.status()
        if info is None:
            raise BrokerError(f"no broker running in {self.folder}")
        kafka = self.access(info)
        done = []
        for node_id in sorted(info.pids):
            asyncio.run(await_in_sync(kafka, timeout))
            self.stop(node=node_id)
            self.start(timeout)
            done.append(node_id)
        asyncio.run(await_in_sync(kafka, timeout))
        return done

    def active_controller(self) -> tuple[int, int] | None:
        """(node id, epoch) of the KRaft quorum's leader, as the running nodes last recorded it."""
        nodes = self.formatted_nodes() or 1
        up = set(self.running_nodes())
        return quorum_leader([self.node_folder(i, nodes) / "data" for i in range(1, nodes + 1) if i in up])

    def _reap(self, node_id: int) -> None:
        proc = self._procs.pop(node_id, None)
        if proc is not None:
            proc.wait()

    @staticmethod
    def _kill(pid: int, timeout: float = 30.0) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # reap it if it is our child
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    return
            except ChildProcessError:
                pass
            if not _alive(pid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _previous_ports(self, node_id: int, count: int) -> NodePorts | None:
        props = self.node_folder(node_id, count) / "server.properties"
        if not props.exists():
            return None
        found: dict[str, int] = {}
        for line in props.read_text().splitlines():
            if line.startswith("listeners="):
                for part in line.split("=", 1)[1].split(","):
                    name, _, port = part.rpartition(":")
                    found[name.split(":")[0]] = int(port)
        client = found.get("SASL_PLAINTEXT") or found.get("SASL_SSL")
        if client and "CONTROLLER" in found:
            return NodePorts(node_id, client, found["CONTROLLER"])
        return None
