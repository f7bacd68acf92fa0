"""The topic catalogue (topics/catalogue.yaml), loaded once and used everywhere.

It answers: which topics exist (names, partitions, replication, configs), which topic carries an
event type, which structure kinds may publish it, and which ACLs follow. Nothing else in the code
names a topic or a producer right.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from parcours.contract.schemas import SchemaSet, default_schema_set
from parcours.paths import topics_dir
from parcours.topology.errors import CatalogueError
from parcours.topology.registry import Registry, default_registry
from parcours.topology.yamlfile import fields, line, load

ROLES = {"canonical", "internal", "deadletter", "views", "inbox", "ingress"}
SERVICES = {"processor", "validator", "adapter", "ops", "owner"}
KINDS = {"dac", "cpts", "crt"}

#: the broker refuses smaller segments
_MIN_SEGMENT_BYTES = 14

# Topic configs the catalogue may set, with a check for each value.
_CONFIG_RULES: dict[str, Any] = {
    "cleanup.policy": lambda v: v in ("delete", "compact", "compact,delete"),
    "retention.ms": lambda v: isinstance(v, int) and v >= -1,
    "retention.bytes": lambda v: isinstance(v, int) and v >= -1,
    "segment.ms": lambda v: isinstance(v, int) and v > 0,
    "segment.bytes": lambda v: isinstance(v, int) and v >= _MIN_SEGMENT_BYTES,
    "min.compaction.lag.ms": lambda v: isinstance(v, int) and v >= 0,
    "min.cleanable.dirty.ratio": lambda v: isinstance(v, (int, float)) and 0 <= v <= 1,
    "max.message.bytes": lambda v: isinstance(v, int) and v > 0,
    "delete.retention.ms": lambda v: isinstance(v, int) and v >= 0,
}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    role: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    key: str
    value: str
    #: event type -> kinds allowed to publish it (canonical topics)
    events: dict[str, frozenset[str]] = field(default_factory=dict)
    producers: frozenset[str] = frozenset()
    consumers: frozenset[str] = frozenset()
    owner: str | None = None  # the structure of a per-structure topic
    readers: frozenset[str] = frozenset()  # structure kinds that may read it through the API


@dataclass(frozen=True)
class Acl:
    principal: str
    operation: str  # READ / WRITE / DESCRIBE
    topic: str

    def __str__(self) -> str:
        return f"{self.principal} {self.operation} topic:{self.topic}"


@dataclass
class Catalogue:
    prefix: str
    profile: str
    topics: dict[str, TopicSpec]
    registry: Registry
    #: logical name ("referrals") -> spec, for the shared topics
    logical: dict[str, TopicSpec]
    event_topic: dict[str, TopicSpec]

    @classmethod
    def load(  # noqa: C901, PLR0912, PLR0915 - checks every key of the catalogue, each with its own message
        cls,
        path: Path | None = None,
        *,
        prefix: str = "parcours",
        profile: str = "dev",
        registry: Registry | None = None,
        schemas: SchemaSet | None = None,
    ) -> Catalogue:
        path = path or topics_dir() / "catalogue.yaml"
        registry = registry or default_registry()
        schemas = schemas or default_schema_set()
        data = load(path)
        profiles = data.get("profiles") or {}
        if profile not in profiles:
            raise CatalogueError(path, line(profiles), f"unknown profile {profile!r}; defined: {sorted(fields(profiles))}")
        prof = profiles[profile]
        rf, min_isr = prof.get("replication_factor"), prof.get("min_insync_replicas")
        if not (isinstance(rf, int) and rf >= 1 and isinstance(min_isr, int) and 1 <= min_isr <= rf):
            raise CatalogueError(path, line(prof), "replication_factor >= 1 and 1 <= min_insync_replicas <= replication_factor")
        canon_parts = data.get("canonical_partitions")
        if not isinstance(canon_parts, int) or canon_parts < 1:
            raise CatalogueError(path, line(data), "canonical_partitions must be a positive integer")
        raw_topics = data.get("topics")
        if not isinstance(raw_topics, dict) or len(fields(raw_topics)) == 0:
            raise CatalogueError(path, line(data), "`topics` must be a non-empty mapping")

        topics: dict[str, TopicSpec] = {}
        logical: dict[str, TopicSpec] = {}
        event_topic: dict[str, TopicSpec] = {}
        for lname, spec in fields(raw_topics).items():
            if not isinstance(spec, dict):
                raise CatalogueError(path, line(raw_topics), f"topic {lname}: must be a mapping")
            ln = line(spec)
            unknown = set(fields(spec)) - {"role", "key", "value", "events", "partitions", "producers", "consumers", "config", "per_structure", "readers"}
            if unknown:
                raise CatalogueError(path, ln, f"topic {lname}: unknown settings {sorted(unknown)}")
            role = spec.get("role")
            if role not in ROLES:
                raise CatalogueError(path, ln, f"topic {lname}: role must be one of {sorted(ROLES)}")
            if "key" not in spec:
                raise CatalogueError(path, ln, f"topic {lname}: key is required")
            config = _config(path, lname, spec.get("config") or {}, ln)
            config["min.insync.replicas"] = str(min_isr)
            events: dict[str, frozenset[str]] = {}
            for et, kinds in fields(spec.get("events") or {}).items():
                if et not in schemas.versions:
                    raise CatalogueError(path, line(spec.get("events")), f"topic {lname}: unknown schema {et!r}; schemas/ has {schemas.event_types()}")
                if not isinstance(kinds, list) or not set(kinds) <= KINDS:
                    raise CatalogueError(path, line(spec.get("events")), f"topic {lname}: producers of {et} must be a list of {sorted(KINDS)}")
                if et in event_topic:
                    raise CatalogueError(path, line(spec.get("events")), f"event {et} is carried by two topics")
                events[et] = frozenset(kinds)
            if role == "canonical":
                if not events:
                    raise CatalogueError(path, ln, f"topic {lname}: a canonical topic lists its events")
                if "partitions" in spec and spec["partitions"] != canon_parts:
                    raise CatalogueError(path, ln, f"topic {lname}: canonical topics must all have {canon_parts} partitions (co-partitioning)")
                partitions = canon_parts
            else:
                declared = spec.get("partitions")
                if not isinstance(declared, int) or declared < 1:
                    raise CatalogueError(path, ln, f"topic {lname}: partitions must be a positive integer")
                partitions = declared
                if role == "internal" and partitions != canon_parts:
                    raise CatalogueError(path, ln, f"topic {lname}: internal topics are co-partitioned: {canon_parts} partitions")
            producers = frozenset(spec.get("producers") or [])
            consumers = frozenset(spec.get("consumers") or [])
            bad = (producers | consumers) - SERVICES - KINDS
            if bad:
                raise CatalogueError(path, ln, f"topic {lname}: unknown producers/consumers {sorted(bad)}")
            readers = frozenset(spec.get("readers") or [])
            if not readers <= KINDS:
                raise CatalogueError(path, ln, f"topic {lname}: readers must be structure kinds {sorted(KINDS)}")
            value = spec.get("value") or "avro: " + ", ".join(events)
            owners = list(registry.structures) if spec.get("per_structure") else [None]
            for owner in owners:
                name = f"{prefix}.{lname}" + (f".{owner}" if owner else "")
                t = TopicSpec(name, role, partitions, rf, dict(config), str(spec["key"]), value,
                              events, producers, consumers, owner, readers)
                topics[name] = t
                if owner is None:
                    logical[lname] = t
            for et in events:
                event_topic[et] = logical[lname]
        missing = set(schemas.versions) - set(event_topic)
        if missing:
            raise CatalogueError(path, line(raw_topics), f"no topic carries {sorted(missing)}")
        return cls(prefix, profile, topics, registry, logical, event_topic)

    # --- questions the services ask -----------------------------------------------------
    def topic(self, logical_name: str) -> TopicSpec:
        return self.logical[logical_name]

    def canonical(self) -> list[TopicSpec]:
        return [t for t in self.logical.values() if t.role == "canonical"]

    def for_event(self, event_type: str) -> TopicSpec:
        return self.event_topic[event_type]

    def may_publish(self, kind: str, event_type: str) -> bool:
        t = self.event_topic.get(event_type)
        return t is not None and kind in t.events.get(event_type, frozenset())

    def publishable(self, kind: str) -> list[str]:
        return sorted(et for et in self.event_topic if self.may_publish(kind, et))

    def per_structure(self, role: str, slug: str) -> TopicSpec:
        for t in self.topics.values():
            if t.role == role and t.owner == slug:
                return t
        raise KeyError(f"no {role} topic for {slug}")

    def acls(self) -> list[Acl]:
        """Kafka ACLs derived from producers/consumers: services are User:<service>, structures User:<slug>."""
        out: list[Acl] = []
        for t in self.topics.values():
            for who in sorted(t.producers):
                principal = t.owner if who == "owner" else who
                out.append(Acl(f"User:{principal}", "WRITE", t.name))
            for who in sorted(t.consumers):
                principal = t.owner if who == "owner" else who
                out.append(Acl(f"User:{principal}", "READ", t.name))
        return out


def _config(path: Path, lname: str, raw: dict[str, Any], ln: int | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields(raw).items():
        rule = _CONFIG_RULES.get(key)
        if rule is None:
            raise CatalogueError(path, line(raw) or ln, f"topic {lname}: unknown config {key!r}; allowed: {sorted(_CONFIG_RULES)}")
        if not rule(value):
            raise CatalogueError(path, line(raw) or ln, f"topic {lname}: bad value {value!r} for {key}")
        out[key] = str(value)
    return out


@lru_cache(maxsize=8)
def _cached(prefix: str, profile: str) -> Catalogue:
    return Catalogue.load(prefix=prefix, profile=profile)


def default_catalogue() -> Catalogue:
    """The catalogue for this process's settings (prefix and profile), loaded once."""
    from parcours.settings import get_settings

    s = get_settings()
    return _cached(os.environ.get("PARCOURS_TOPIC_PREFIX", s.topic_prefix), s.profile)
