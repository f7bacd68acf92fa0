"""A real single-node Apache Kafka (KRaft) for development and tests, run from Maven Central jars.

`fetch_jars` copies the broker's runtime closure (see pom.xml beside this file) into a cache
outside the repository; `EmbeddedBroker` formats a data folder, starts `kafka.Kafka` on free
loopback ports as a detached process, awaits readiness on the broker itself (a metadata
round trip, not a sleep) and records where it runs in `<folder>/broker.json`.

The broker authenticates and authorizes, in development too: clients speak SASL/SCRAM-SHA-512 on
its one client listener, the `StandardAuthorizer` refuses whatever no ACL allows, and the only
super user is `admin`, whose secret is generated when the data folder is formatted and kept in
`<folder>/credentials.json` (mode 0600, beside the data it protects, never in the repository).
The controller listener is PLAINTEXT on loopback (SCRAM cannot be used there, KAFKA-15513).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from parcours.bus.kafkaio import KafkaAccess
from parcours.devbroker.errors import BrokerError, ToolMissingError
from parcours.security.credentials import ADMIN, CredentialStore

KAFKA_VERSION = "4.3.1"
JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    bootstrap: str
    controller: str
    folder: str
    started_at: float
    security_protocol: str = "SASL_PLAINTEXT"
    #: the CA clients trust (SASL_SSL)
    cafile: str | None = None


def _require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissingError(f"{tool} not found on PATH: {why} (Debian: apt-get install {'openjdk-17-jre-headless' if tool == 'java' else 'maven'})")
    return path


def jars_dir(cache_dir: Path) -> Path:
    """The jars of this pom: a changed pom gets a folder of its own, so the jars a running broker
    was started from are never replaced under it."""
    return cache_dir / f"kafka-{KAFKA_VERSION}-{_pom_digest()[:12]}" / "lib"


def _pom_digest() -> str:
    return hashlib.sha256(resources.files("parcours.devbroker").joinpath("pom.xml").read_bytes()).hexdigest()


def fetch_jars(cache_dir: Path, *, quiet: bool = True) -> tuple[Path, int, float]:
    """Make sure the broker jars are cached; return (folder, total bytes, seconds spent)."""
    lib = jars_dir(cache_dir)
    marker = lib / ".complete"
    t0 = time.monotonic()
    if not marker.exists():
        mvn = _require("mvn", "the embedded broker's jars come from Maven Central")
        _require("java", "the embedded broker is Apache Kafka, a JVM program")
        tmp = lib.with_name("lib.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        pom = resources.files("parcours.devbroker").joinpath("pom.xml")
        with resources.as_file(pom) as pom_path:
            cmd = [
                mvn, "-B", *(["-q"] if quiet else []), "-f", str(pom_path),
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"maven could not fetch Kafka {KAFKA_VERSION}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        marker.write_text(_pom_digest())
    size = sum(p.stat().st_size for p in lib.glob("*.jar"))
    return lib, size, time.monotonic() - t0


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


async def wait_ready(kafka: KafkaAccess, timeout: float, alive: Callable[[], bool] | None = None) -> None:
    """Return once the broker answers a metadata request; raise BrokerError after `timeout`."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerError("the broker process exited during start-up")
        if not _listening(kafka.bootstrap):
            await asyncio.sleep(0.1)
            continue
        admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=3000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            if cluster.get("brokers"):
                return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
    raise BrokerError(f"broker at {kafka.bootstrap} not ready after {timeout:.0f}s ({last})")


def _listening(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",", maxsplit=1)[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    def __init__(self, folder: Path, cache_dir: Path) -> None:
        self.folder = folder.resolve()
        self.cache_dir = cache_dir
        self.state_file = self.folder / "broker.json"
        self.credentials = CredentialStore(self.folder / "credentials.json")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def access(self, info: BrokerInfo, principal: str = ADMIN) -> KafkaAccess:
        """How `principal` reaches this broker, with its secret from the credential store."""
        return KafkaAccess(info.bootstrap, info.security_protocol, cafile=info.cafile).as_user(
            principal, self.credentials.secret(principal))

    def status(self) -> BrokerInfo | None:
        """The running broker of this folder, or None."""
        try:
            info = BrokerInfo(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return info if _alive(info.pid) else None

    def start(self, timeout: float = 90.0, *, tls: bool = False) -> BrokerInfo:
        """Start the broker (or return the running one). `tls`: its client listener is SASL_SSL,
        with a CA made on first use (the production shape); else SASL_PLAINTEXT on loopback."""
        running = self.status()
        if running:
            return running
        java = _require("java", "the embedded broker is Apache Kafka, a JVM program")
        lib, _, _ = fetch_jars(self.cache_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "data"
        ports = self._previous_ports()
        if ports is None or not all(_port_free(p) for p in ports):
            ports = (free_port(), free_port())
        port, cport = ports
        props = self.folder / "server.properties"
        if (data / "meta.properties").exists() and not self.credentials.has(ADMIN):
            # formatted by a version without authentication: development data, formatted again
            print(f"{data} was formatted without credentials: formatting it again (development data)", flush=True)
            shutil.rmtree(data)
        admin_secret = self.credentials.ensure(ADMIN).get_secret_value()
        protocol, cafile, broker_pem = "SASL_PLAINTEXT", None, None
        if tls:
            from parcours.devbroker.tls import ensure_certificates

            ca, pem = ensure_certificates(self.folder / "tls")
            protocol, cafile, broker_pem = "SASL_SSL", str(ca), pem
        props.write_text(_server_properties(data, port, cport, admin_secret, protocol, broker_pem, cafile))
        props.chmod(0o600)  # it holds the admin's secret (the broker's own SCRAM login)
        cp = ["-cp", f"{lib}/*"]
        log_opts = [
            f"-Dlog4j2.configurationFile={resources.files('parcours.devbroker').joinpath('log4j2.properties')}",
            f"-Dparcours.broker.log={self.log_file}",
            f"-Dkafka.logs.dir={self.folder / 'logs'}",
        ]
        if not (data / "meta.properties").exists():
            cluster_id = subprocess.run(
                [java, *cp, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True, check=True
            ).stdout.strip()
            fmt = subprocess.run(
                [java, *cp, *log_opts, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                 "--add-scram", f"SCRAM-SHA-512=[name={ADMIN},password={admin_secret}]"],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting {data} failed: {fmt.stdout}{fmt.stderr}")
        with (self.folder / "stdout.log").open("ab") as out:
            proc = subprocess.Popen(
                [java, *JVM_OPTS, *log_opts, *cp, "kafka.Kafka", str(props)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._proc = proc  # keep the handle: it reaps the child on stop
        info = BrokerInfo(proc.pid, f"127.0.0.1:{port}", f"127.0.0.1:{cport}", str(self.folder), time.time(), protocol, cafile)
        self.state_file.write_text(json.dumps(asdict(info)))
        try:
            asyncio.run(wait_ready(self.access(info), timeout, alive=lambda: proc.poll() is None))
        except BaseException as exc:  # noqa: BLE001 - whatever ended the wait (Ctrl-C too), the half-started broker goes
            self._kill(proc.pid)
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise BrokerError(f"{exc}\n--- {self.log_file} ---\n{tail}") from None
        return info

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after `timeout`). False if none ran."""
        info = self.status()
        if info is None:
            return False
        self._kill(info.pid, timeout)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        return True

    def crash(self) -> bool:
        """SIGKILL the broker, as a crash would, and reap it (tests of what survives a crash)."""
        info = self.status()
        if info is None:
            return False
        os.kill(info.pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        deadline = time.monotonic() + 30
        while _alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

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

    def _previous_ports(self) -> tuple[int, int] | None:
        props = self.folder / "server.properties"
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
            return client, found["CONTROLLER"]
        return None


def _server_properties(data: Path, port: int, cport: int, admin_secret: str, protocol: str = "SASL_PLAINTEXT",
                       broker_pem: Path | None = None, cafile: str | None = None) -> str:
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    tls = "" if broker_pem is None else f"""ssl.keystore.type=PEM
ssl.keystore.location={broker_pem}
ssl.truststore.type=PEM
ssl.truststore.location={cafile}
ssl.endpoint.identification.algorithm=https
"""
    return f"""# written by parcours; single-node KRaft broker for development and tests
process.roles=broker,controller
node.id=1
listeners={protocol}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners={protocol}://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map={protocol}:{protocol},CONTROLLER:PLAINTEXT
inter.broker.listener.name={protocol}
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.{protocol.lower()}.scram-sha-512.sasl.jaas.config={scram} required username="{ADMIN}" password="{admin_secret}";
{tls}authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
# User:ANONYMOUS is the controller listener's (loopback, internal); no client listener is anonymous
super.users=User:{ADMIN};User:ANONYMOUS
allow.everyone.if.no.acl.found=false
controller.quorum.voters=1@127.0.0.1:{cport}
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=2
# how often the coordinator looks for transactions past their timeout (Kafka's default: 10 s);
# a dead processor's transaction is aborted at most this long after the timeout
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=60000
"""
