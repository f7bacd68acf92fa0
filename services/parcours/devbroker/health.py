"""What the embedded broker's nodes say of their health, read from outside: readiness (every node
registered and unfenced), the partitions whose replicas are not all in sync, and the KRaft quorum's
leader (the active controller)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from parcours.bus.kafkaio import KafkaAccess
from parcours.devbroker.errors import BrokerError


async def wait_ready(kafka: KafkaAccess, timeout: float, alive: Callable[[], bool] | None = None, brokers: int = 1) -> None:
    """Return once `brokers` brokers answer in the cluster's metadata (a fenced one is left out of
    it); raise BrokerError after `timeout`, or at once when `alive` says a process exited."""
    deadline = time.monotonic() + timeout
    last: Exception | str | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerError("a broker process exited during start-up")
        if not _listening(kafka.bootstrap):
            await asyncio.sleep(0.1)
            continue
        admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=3000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            if len(cluster.get("brokers") or []) >= brokers:
                return
            last = f"{len(cluster.get('brokers') or [])} of {brokers} brokers registered"
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.2)
    raise BrokerError(f"broker at {kafka.bootstrap} not ready after {timeout:.0f}s ({last})")


def _listening(bootstrap: str) -> bool:
    """Whether any address of the bootstrap list accepts a connection."""
    for address in bootstrap.split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            continue
    return False


async def under_replicated(kafka: KafkaAccess) -> list[str]:
    """Every partition (Kafka's internal topics included) whose in-sync replicas are fewer than its
    replicas, or without a leader: `topic-partition (isr/replicas)`."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=5000)
    try:
        await admin.start()
        topics = await admin.list_topics()
        described = await admin.describe_topics(topics)
    except KafkaError as exc:
        return [f"(metadata unavailable: {type(exc).__name__})"]
    finally:
        await admin.close()
    return sorted(f"{t['topic']}-{p['partition']} ({len(p['isr'])}/{len(p['replicas'])}, leader {p['leader']})"
                  for t in described for p in t["partitions"] if p["leader"] < 0 or len(p["isr"]) < len(p["replicas"]))


async def await_in_sync(kafka: KafkaAccess, timeout: float = 120.0) -> None:
    """Until no partition is under-replicated (a node that came back has caught up on everything)."""
    deadline = time.monotonic() + timeout
    behind = await under_replicated(kafka)
    while behind:
        if time.monotonic() > deadline:
            raise BrokerError(f"{len(behind)} partitions still under-replicated after {timeout:.0f}s, e.g. {behind[:5]}")
        await asyncio.sleep(0.5)
        behind = await under_replicated(kafka)


def quorum_leader(data_dirs: list[Path]) -> tuple[int, int] | None:
    """(leader id, epoch) of the KRaft quorum, the highest epoch among what these nodes last
    recorded (`__cluster_metadata-0/quorum-state`, written by each voter when it learns of an
    election); None when none knows a leader."""
    best: tuple[int, int] | None = None
    for data in data_dirs:
        try:
            state = json.loads((data / "__cluster_metadata-0" / "quorum-state").read_text())
        except (OSError, ValueError):
            continue
        leader, epoch = int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
        if leader >= 0 and (best is None or epoch > best[1]):
            best = (leader, epoch)
    return best
