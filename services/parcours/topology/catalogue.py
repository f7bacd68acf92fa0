"""The topic catalogue (topics/catalogue.yaml), loaded once and used everywhere.

It answers: which topics exist (names, partitions, replication, configs), which topic carries an
event type, which structure kinds may publish it, and which ACLs follow. Nothing else in the code
names a topic or a producer right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from parcours.contract.models import KINDS as CONTRACT_KINDS
from parcours.contract.schemas import SchemaSet, default_schema_set
from parcours.paths import topics_dir
from parcours.settings import Settings, get_settings
from parcours.topology.errors import CatalogueError
from parcours.topology.registry import Registry, default_registry
from parcours.topology.yamlfile import fields, line, load

ROLES = {"canonical", "internal", "deadletter", "views", "inbox", "ingress", "directory", "registry"}
SERVICES = {"processor", "validator", "adapter", "ops", "owner"}
KINDS = frozenset(CONTRACT_KINDS)  # the structure kinds, from the contract

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


#: what a record's key, headers and Kafka framing may add to a value, kept free under a topic's limit
FRAMING_BYTES = 16 * 1024
#: Kafka's default max.message.bytes, for topics whose catalogue entry does not set one
KAFKA_DEFAULT_MAX_BYTES = 1048588


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

    @property
    def max_value_bytes(self) -> int:
        """The largest value a record of this topic may carry (its limit less the framing)."""
        return int(self.config.get("max.message.bytes", KAFKA_DEFAULT_MAX_BYTES)) - FRAMING_BYTES


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: `principal` may `operation` on a resource (any host)."""

    principal: str  # User:<name>
    operation: str  # READ / WRITE / DESCRIBE / DESCRIBE_CONFIGS
    resource: str  # topic / group / transactional_id
    name: str
    pattern: str = "literal"  # literal / prefixed

    def __str__(self) -> str:
        star = "*" if self.pattern == "prefixed" else ""
        return f"{self.principal} {self.operation} {self.resource}:{self.name}{star}"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    groups: tuple[str, ...] = ()
    transactional_ids: tuple[str, ...] = ()
    per_kind: bool = False
    #: may read the configs of the topics it reads or writes
    describe_configs: bool = False


SERVICE_PRINCIPAL_PREFIX = "svc-"


@dataclass
class Catalogue:
    prefix: str
    profile: str
    topics: dict[str, TopicSpec]
    registry: Registry
    #: logical name ("referrals") -> spec, for the shared topics
    logical: dict[str, TopicSpec]
    event_topic: dict[str, TopicSpec]
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    #: the file it was read from
    source: Path | None = None
    #: the profile whose replication factor and min ISR its topics get ("": `profile`'s)
    replication: str = ""

    def with_registry(self, registry: Registry) -> Catalogue:
        """The same catalogue for another registry (structures joined or left)."""
        return Catalogue.load(self.source, prefix=self.prefix, profile=self.profile, registry=registry,
                              replication=self.replication or None)

    def adopt(self, other: Catalogue) -> None:
        """Become `other` in place: every part of a running service holding this catalogue sees
        the registry's change at once (one assignment per field, on one thread)."""
        self.__dict__.update(other.__dict__)

    @classmethod
    def load(  # noqa: C901, PLR0912, PLR0915 - checks every key of the catalogue, each with its own message
        cls,
        path: Path | None = None,
        *,
        prefix: str = "parcours",
        profile: str = "dev",
        registry: Registry | None = None,
        schemas: SchemaSet | None = None,
        replication: str | None = None,
    ) -> Catalogue:
        """`replication`: the profile whose replication factor and min ISR the topics get (default: `profile`)."""
        path = path or topics_dir() / "catalogue.yaml"
        registry = registry or default_registry()
        schemas = schemas or default_schema_set()
        data = load(path)
        profiles = data.get("profiles") or {}
        for name in (profile, replication or profile):
            if name not in profiles:
                raise CatalogueError(path, line(profiles), f"unknown profile {name!r}; defined: {sorted(fields(profiles))}")
        prof = profiles[replication or profile]
        rf, min_isr = prof.get("replication_factor"), prof.get("min_insync_replicas")
        if not (isinstance(rf, int) and rf >= 1 and isinstance(min_isr, int) and 1 <= min_isr <= rf):
            raise CatalogueError(path, line(prof), "replication_factor >= 1 and 1 <= min_insync_replicas <= replication_factor")
        canon_parts = data.get("canonical_partitions")
        if not isinstance(canon_parts, int) or canon_parts < 1:
            raise CatalogueError(path, line(data), "canonical_partitions must be a positive integer")
        retention = data.get("retention") or {}
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
            unknown = set(fields(spec)) - {"role", "key", "value", "events", "partitions", "producers", "consumers", "config",
                                           "per_structure", "readers", "retention"}
            if unknown:
                raise CatalogueError(path, ln, f"topic {lname}: unknown settings {sorted(unknown)}")
            role = spec.get("role")
            if role not in ROLES:
                raise CatalogueError(path, ln, f"topic {lname}: role must be one of {sorted(ROLES)}")
            if "key" not in spec:
                raise CatalogueError(path, ln, f"topic {lname}: key is required")
            config = _config(path, lname, spec.get("config") or {}, ln)
            config["min.insync.replicas"] = str(min_isr)
            if "retention" in spec:
                config["retention.ms"] = str(_retention(path, retention, spec["retention"], profile, lname, role, ln))
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
            owners = registry.known() if spec.get("per_structure") else [None]
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
        return cls(prefix, profile, topics, registry, logical, event_topic, _services(path, data.get("services")), path,
                   replication or "")

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

    # --- principals and ACLs -------------------------------------------------------------
    def service_principal(self, service: str, kind: str | None = None) -> str:
        """The Kafka user a service runs as: svc-<service>, svc-adapter-<kind> for an adapter."""
        spec = self.services.get(service)
        if spec is None:
            raise KeyError(f"no service {service!r} in the catalogue; defined: {sorted(self.services)}")
        if spec.per_kind:
            if kind not in KINDS:
                raise KeyError(f"service {service!r} runs per structure kind: one of {sorted(KINDS)}")
            return f"{SERVICE_PRINCIPAL_PREFIX}{service}-{kind}"
        return f"{SERVICE_PRINCIPAL_PREFIX}{service}"

    def principals(self) -> list[str]:
        """Every Kafka user the catalogue gives rights to: the structures, then the services."""
        out = sorted(self.registry.structures)
        for name, spec in sorted(self.services.items()):
            out += [self.service_principal(name, k) for k in sorted(KINDS)] if spec.per_kind else [self.service_principal(name)]
        return out

    def group_id(self, service: str, suffix: str = "", kind: str | None = None) -> str:
        """A consumer group (or transactional id) of a service, within its ACL prefix."""
        spec = self.services[service]
        return f"{self.prefix}-{(spec.groups or spec.transactional_ids)[0]}{f'-{kind}' if spec.per_kind else ''}{suffix}"

    def _who(self, who: str, t: TopicSpec, writing: bool) -> list[str]:
        """The principals behind a producer/consumer entry of topic `t` (of a structure that left:
        the processor's only, which keeps its views as they stand)."""
        if t.owner and t.owner not in self.registry.structures and who != "processor":
            return []
        if who == "owner":
            return [t.owner] if t.owner else []
        if who in KINDS:  # a structure kind: each structure of that kind
            return sorted(s.slug for s in self.registry.structures.values() if s.kind == who)
        spec = self.services.get(who)
        if spec is None:
            return []
        if not spec.per_kind:
            return [self.service_principal(who)]
        if t.owner:  # a structure's own topic: the adapter of its kind
            kinds = {self.registry.kind_of(t.owner)}
        elif writing and t.events:  # a canonical topic: the kinds that may publish one of its events
            kinds = set().union(*t.events.values())
        elif t.readers:
            kinds = set(t.readers)
        else:
            kinds = set(KINDS)
        return [self.service_principal(who, k) for k in sorted(kinds)]

    def acls(self) -> list[Acl]:
        """The cluster's ALLOW rules, all derived from this file: topic rights from producers and
        consumers, consumer groups and transactional ids from `services`; nothing else is allowed."""
        out: set[Acl] = set()
        for t in self.topics.values():
            for who in t.producers:
                out |= {Acl(f"User:{p}", "WRITE", "topic", t.name) for p in self._who(who, t, True)}
            for who in t.consumers:
                out |= {Acl(f"User:{p}", "READ", "topic", t.name) for p in self._who(who, t, False)}
        for name, spec in self.services.items():
            users = [self.service_principal(name, k) for k in sorted(KINDS)] if spec.per_kind else [self.service_principal(name)]
            for user, kind in zip(users, sorted(KINDS) if spec.per_kind else [None], strict=False):
                own = f"-{kind}" if kind else ""
                if spec.describe_configs:
                    used = {a.name for a in out if a.principal == f"User:{user}" and a.resource == "topic"}
                    out |= {Acl(f"User:{user}", "DESCRIBE_CONFIGS", "topic", t) for t in used}
                out |= {Acl(f"User:{user}", "READ", "group", f"{self.prefix}-{g}{own}", "prefixed") for g in spec.groups}
                for tid in spec.transactional_ids:
                    out |= {Acl(f"User:{user}", op, "transactional_id", f"{self.prefix}-{tid}", "prefixed")
                            for op in ("WRITE", "DESCRIBE")}
        for slug in self.registry.structures:
            out.add(Acl(f"User:{slug}", "READ", "group", f"{self.prefix}-{slug}", "prefixed"))
        return sorted(out)

    def owns(self, resource_name: str) -> bool:
        """Whether a topic, group or transactional id belongs to this catalogue's prefix (the ACLs
        `topics apply` manages; other prefixes on the same cluster are left alone)."""
        return resource_name.startswith((f"{self.prefix}.", f"{self.prefix}-"))


def _retention(path: Path, policies: Any, name: Any, profile: str, lname: str, role: Any, ln: int | None) -> int:
    """retention.ms of a topic from its named policy, for the profile (production keeps no
    canonical event forever)."""
    policy = policies.get(name) if isinstance(policies, dict) else None
    if not isinstance(policy, dict):
        raise CatalogueError(path, ln, f"topic {lname}: unknown retention policy {name!r}; defined: {sorted(fields(policies or {}))}")
    value = policy.get(profile)
    if not isinstance(value, int) or value < -1:
        raise CatalogueError(path, line(policy), f"retention policy {name}: no retention.ms (>= -1) for the {profile} profile")
    if profile == "production" and role == "canonical" and value == -1:
        raise CatalogueError(path, line(policy), f"retention policy {name}: canonical topic {lname} may not keep events forever in production")
    return value


def _services(path: Path, raw: Any) -> dict[str, ServiceSpec]:
    if not isinstance(raw, dict) or not fields(raw):
        raise CatalogueError(path, line(raw) if raw else None, "`services` must map each service to its groups")
    out: dict[str, ServiceSpec] = {}
    for name, given in fields(raw).items():
        if name not in SERVICES - {"owner"}:
            raise CatalogueError(path, line(raw), f"unknown service {name!r}; known: {sorted(SERVICES - {'owner'})}")
        spec = given or {}
        unknown = set(fields(spec)) - {"groups", "transactional_ids", "per_kind", "describe_configs"}
        if unknown:
            raise CatalogueError(path, line(spec) or line(raw), f"service {name}: unknown settings {sorted(unknown)}")
        out[name] = ServiceSpec(name, tuple(spec.get("groups") or ()), tuple(spec.get("transactional_ids") or ()),
                                bool(spec.get("per_kind")), bool(spec.get("describe_configs")))
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
def _cached(prefix: str, profile: str, replication: str) -> Catalogue:
    return Catalogue.load(prefix=prefix, profile=profile, replication=replication)


def catalogue_for(settings: Settings) -> Catalogue:
    """The catalogue for these settings (prefix, profile, replication), loaded once."""
    return _cached(settings.topic_prefix, settings.profile, settings.topic_replication or settings.profile)


def default_catalogue() -> Catalogue:
    """The catalogue for this process's settings, loaded once."""
    return catalogue_for(get_settings())
