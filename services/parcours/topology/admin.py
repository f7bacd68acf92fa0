"""Plan and apply the catalogue against a live cluster: topics (aiokafka admin client), then
principals and ACLs (`parcours.security.cluster`).

`plan` lists the changes; `apply` makes them and is idempotent: a second run plans nothing.
Alterations are limited to what Kafka can do in place: create topics, add partitions, set
configs. Fewer partitions or another replication factor are reported as drift, never applied.
On a cluster without authentication (PLAINTEXT) there are no principals to manage: only topics.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import KafkaAccess
from parcours.security import cluster as security
from parcours.security.credentials import CredentialStore
from parcours.topology.catalogue import Catalogue, TopicSpec

_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source of a topic-level override


@dataclass(frozen=True)
class Change:
    action: str  # create / add-partitions / set-config / drift
    topic: str
    detail: str
    spec: TopicSpec

    @property
    def subject(self) -> str:
        return self.topic

    def __str__(self) -> str:
        return f"{self.action:<15} {self.topic:<40} {self.detail}"


async def _live(admin: AIOKafkaAdminClient, names: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    existing = set(await admin.list_topics())
    wanted = [n for n in names if n in existing]
    meta = {t["topic"]: t for t in await admin.describe_topics(wanted)} if wanted else {}
    configs: dict[str, dict[str, str]] = {}
    if wanted:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted])
        for resp in responses:
            for res in resp.to_object()["resources"]:
                if res["error_code"]:
                    raise ClusterError(f"describe configs of {res['resource_name']}: {for_code(res['error_code']).__name__}")
                configs[res["resource_name"]] = {
                    e["config_names"]: e["config_value"]
                    for e in res["config_entries"]
                    if e.get("config_source") == _DYNAMIC_TOPIC_CONFIG
                }
    return meta, configs


#: what `plan` and `apply` report: topic changes, then principal and ACL changes
Planned = Change | security.SecurityChange
#: changes `apply` cannot make: reported, and `topics apply` exits 1
DRIFT = frozenset({"drift", "missing-user"})


async def plan(catalogue: Catalogue, kafka: KafkaAccess, credentials: CredentialStore | None = None) -> list[Planned]:
    async with _admin(kafka) as admin:
        topics: list[Planned] = list(await _plan(admin, catalogue))
    if kafka.sasl:
        topics += await security.plan(catalogue, kafka, credentials)
    return topics


async def _plan(admin: AIOKafkaAdminClient, catalogue: Catalogue) -> list[Change]:
    meta, configs = await _live(admin, list(catalogue.topics))
    changes: list[Change] = []
    for name, spec in catalogue.topics.items():
        if name not in meta:
            changes.append(Change("create", name, f"partitions={spec.partitions} rf={spec.replication_factor} {spec.config}", spec))
            continue
        parts = meta[name]["partitions"]
        if len(parts) < spec.partitions:
            changes.append(Change("add-partitions", name, f"{len(parts)} -> {spec.partitions}", spec))
        elif len(parts) > spec.partitions:
            changes.append(Change("drift", name, f"has {len(parts)} partitions, catalogue says {spec.partitions} (Kafka cannot shrink)", spec))
        rf = len(parts[0]["replicas"]) if parts else 0
        if rf != spec.replication_factor:
            changes.append(Change("drift", name, f"replication factor {rf}, catalogue says {spec.replication_factor} (reassign by hand)", spec))
        live = configs.get(name, {})
        if live != spec.config:
            diff = {k: f"{live.get(k)} -> {v}" for k, v in spec.config.items() if live.get(k) != v}
            diff |= {k: f"{v} -> (default)" for k, v in live.items() if k not in spec.config}
            changes.append(Change("set-config", name, str(diff), spec))
    return changes


async def apply(catalogue: Catalogue, kafka: KafkaAccess, credentials: CredentialStore | None = None) -> list[Planned]:
    """Make the cluster match the catalogue, topics first, then principals (secrets generated into
    `credentials`) and ACLs; return what was done (empty when nothing was needed)."""
    done: list[Planned] = list(await apply_topics(catalogue, kafka))
    if kafka.sasl:
        done += await security.apply(catalogue, kafka, credentials)
    return [c for c in done if c.action not in DRIFT] + [c for c in done if c.action in DRIFT]


async def apply_topics(catalogue: Catalogue, kafka: KafkaAccess) -> list[Change]:
    """The catalogue's topics only (created, grown, configured)."""
    async with _admin(kafka) as admin:
        changes = await _plan(admin, catalogue)
        creates = [c.spec for c in changes if c.action == "create"]
        if creates:
            resp = await admin.create_topics(
                [NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=t.config) for t in creates]
            )
            for topic, code, *msg in resp.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise ClusterError(f"create {topic}: {for_code(code).__name__} {msg[0] if msg else ''}")
        grow = {c.topic: NewPartitions(c.spec.partitions) for c in changes if c.action == "add-partitions"}
        if grow:
            try:
                await admin.create_partitions(grow)
            except KafkaError as exc:
                raise ClusterError(f"add partitions: {exc}") from exc
        alter = [ConfigResource(ConfigResourceType.TOPIC, c.topic, c.spec.config) for c in changes if c.action == "set-config"]
        if alter:
            # AlterConfigs replaces the topic's whole override set: exactly the catalogue's
            for resp in await admin.alter_configs(alter):
                for res in resp.to_object()["resources"]:
                    if res["error_code"]:
                        raise ClusterError(f"set config of {res['resource_name']}: {res['error_message']}")
        if creates or grow or alter:
            await _await_metadata(admin, catalogue)
        return changes


async def _await_metadata(admin: AIOKafkaAdminClient, catalogue: Catalogue, timeout: float = 30.0) -> None:
    """Metadata propagates asynchronously: return once the cluster shows what was created."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pending = [c.topic for c in await _plan(admin, catalogue) if c.action != "drift"]
        described = await admin.describe_topics(list(catalogue.topics))
        pending += [t["topic"] for t in described if any(p["leader"] < 0 for p in t["partitions"]) or t["error_code"]]
        if not pending:
            return
        if loop.time() > deadline:
            raise ClusterError(f"cluster metadata still lacks {sorted(set(pending))} (or their leaders) after {timeout:.0f}s")
        await asyncio.sleep(0.1)


class _admin:
    def __init__(self, kafka: KafkaAccess) -> None:
        self.client = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=15000)

    async def __aenter__(self) -> AIOKafkaAdminClient:
        try:
            await self.client.start()
        except KafkaError as exc:
            raise ClusterError(f"cannot reach Kafka: {exc}") from exc
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
