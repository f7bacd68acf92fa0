"""Hanging transactions after an unclean broker restart, found and aborted with Kafka's own tool.

When a broker is killed while the processor commits, the restarted broker's transaction
coordinator may skip the transaction's markers for the partitions its metadata does not list yet
(README, "A limit found in Kafka"). Each such partition keeps the transaction's records open: its
last stable offset stops there, so every `read_committed` reader of it stalls, and a skipped
marker on `__consumer_offsets` leaves the processor group's offsets pending, which stops the
processor at its next start ("Failed to get committed offsets"). Kafka's answer is KIP-664:
`kafka-transactions.sh find-hanging` lists, per broker, the partitions holding a transaction that
its coordinator no longer has open, and `abort` writes the missing marker (an abort).

`repair` runs both through `org.apache.kafka.tools.TransactionsCommand` (the jars `parcours
broker fetch` caches), as the cluster's administrator. An aborted transaction's inputs are
processed again from the offsets committed before it (exactly once, through the state of the same
commit); `parcours views rebuild --write` then restores what a partial skip may have lost.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from parcours.bus.kafkaio import SCRAM, KafkaAccess
from parcours.errors import ParcoursError

TOOL = "org.apache.kafka.tools.TransactionsCommand"
#: what `abort` says when the transaction it was given is no longer open
_GONE = "Could not find any open transactions"


class RepairError(ParcoursError):
    """Kafka's transaction tool could not run, or failed."""


@dataclass(frozen=True)
class Hanging:
    topic: str
    partition: int
    producer_id: int
    start_offset: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition} (producer {self.producer_id}, from offset {self.start_offset})"


def java_properties(kafka: KafkaAccess) -> str:
    """A Java client's settings for `kafka` (the secret included: write it to a private file)."""
    lines = [f"security.protocol={kafka.security_protocol}"]
    if kafka.sasl:
        secret = kafka.password.get_secret_value() if kafka.password else ""
        jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{kafka.username}" password="{secret}";'
        lines += [f"sasl.mechanism={SCRAM}", f"sasl.jaas.config={jaas}"]
    if kafka.security_protocol.endswith("SSL") and kafka.cafile:
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={kafka.cafile}"]
    return "\n".join(lines) + "\n"


#: find-hanging's columns: Topic, Partition, ProducerId, ProducerEpoch, CoordinatorEpoch, StartOffset, ...
_START_OFFSET = 5


def _rows(table: str) -> list[list[str]]:
    """The rows of a table the tool prints: a header, then tab-separated cells."""
    return [[c.strip() for c in line.split("\t")] for line in table.splitlines()[1:]]


def parse_hanging(text: str) -> list[Hanging]:
    """The table `find-hanging` prints: one row per partition."""
    return [Hanging(r[0], int(r[1]), int(r[2]), int(r[_START_OFFSET])) for r in _rows(text)
            if len(r) > _START_OFFSET and r[1].isdigit()]


def preparing(listed: str) -> list[str]:
    """The transactional ids `list` shows in PrepareCommit or PrepareAbort (markers being written)."""
    return [r[0] for r in _rows(listed) if len(r) > _STATE and r[_STATE].startswith("Prepare")]


#: list's columns: TransactionalId, Coordinator, ProducerId, TransactionState
_STATE = 3


class Transactions:
    """Kafka's TransactionsCommand against one cluster, as its administrator."""

    def __init__(self, kafka: KafkaAccess, jars: Path, timeout_s: float = 120) -> None:
        self.kafka, self.jars, self.timeout_s = kafka, jars, timeout_s

    def _run(self, props: Path, *args: str) -> str:
        java = shutil.which("java")
        if java is None:
            raise RepairError("java is required: Kafka's transaction tool is a JVM program")
        cmd = [java, "-cp", f"{self.jars}/*", TOOL, "--bootstrap-server", self.kafka.bootstrap, "--command-config", str(props), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise RepairError(f"{args[0]}: no answer from Kafka within {self.timeout_s:.0f} s") from None
        if done.returncode != 0:
            raise RepairError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-1500:]}")
        return done.stdout

    def broker_ids(self) -> list[int]:
        admin = AdminClient(self.kafka.librdkafka())  # kept until the answer: a dropped client cancels it
        try:
            described = admin.describe_cluster(request_timeout=30).result(60)
        except KafkaException as exc:
            raise RepairError(f"describing the cluster: {exc}") from exc
        return sorted(n.id for n in described.nodes)

    def repair(self, *, dry_run: bool = False, settle_s: float = 60) -> list[Hanging]:
        """Every hanging transaction of every broker, aborted (only listed when `dry_run`); those
        actually aborted are returned (one its producer completed meanwhile is not). First,
        up to `settle_s`, until no coordinator is still writing a transaction's markers (a
        transaction in PrepareCommit or PrepareAbort): a marker it skips is skipped by then."""
        with tempfile.TemporaryDirectory(prefix="parcours-txn-") as folder:
            props = Path(folder) / "client.properties"
            props.touch(mode=0o600)
            props.write_text(java_properties(self.kafka))
            deadline = time.monotonic() + settle_s
            while preparing(self._run(props, "list")) and time.monotonic() < deadline:
                time.sleep(1)
            found: list[Hanging] = []
            for broker in self.broker_ids():
                # 0 minutes: every open transaction is a candidate; the tool keeps those whose
                # coordinator no longer has them open, so live transactions are never touched
                found += parse_hanging(self._run(props, "find-hanging", "--broker-id", str(broker), "--max-transaction-timeout", "0"))
            if dry_run:
                return found
            aborted: list[Hanging] = []
            for h in found:
                try:
                    self._run(props, "abort", "--topic", h.topic, "--partition", str(h.partition), "--start-offset", str(h.start_offset))
                except RepairError as exc:
                    # the producer's next transaction on that partition completed it meanwhile
                    # (its marker closes the open records with its own): nothing left to abort
                    if _GONE not in str(exc):
                        done = ", ".join(map(str, aborted)) or "none"
                        raise RepairError(f"{exc} (aborted before it: {done}; run the repair again, then the rebuild)") from None
                    continue
                aborted.append(h)
            return aborted
