"""The composition root: each service's real parts (`adapter`, `validator`, `processor`, the
webhook redelivery), built from the settings, and where this process finds Kafka and who it is
there. `cli` parses the arguments and calls these; tests call the `build_*` functions with parts of
their own. Engines (FastAPI, Quix Streams) are imported by the builder of the service that runs them.

The cluster is PARCOURS_KAFKA_BOOTSTRAP (with PARCOURS_KAFKA_SECURITY_PROTOCOL), else the embedded
broker of this folder. Each command runs as one principal: a service as its own (catalogue
`services`), the administrative tools as `admin`. Its secret comes from PARCOURS_KAFKA_USERNAME and
PARCOURS_KAFKA_PASSWORD when the platform provides them (production), else from the development
credential store. Child processes get `Cluster.env()`: where the cluster and the store are, never
a secret in their environment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parcours.bus.kafkaio import KafkaAccess
from parcours.devbroker.broker import BrokerInfo, EmbeddedBroker
from parcours.devbroker.config import REPLICAS
from parcours.devbroker.errors import BrokerError
from parcours.errors import ParcoursError
from parcours.security.credentials import CredentialStore
from parcours.security.errors import CredentialError
from parcours.security.identity import DEV_INDEX_KEY_ENTRY, DEV_KEK_ENTRY, IdentitySecrets
from parcours.security.sealing import DEV_KEY_ENTRY, Sealer
from parcours.settings import Settings, get_settings, inherited_environment
from parcours.topology.catalogue import Catalogue, catalogue_for, default_catalogue

if TYPE_CHECKING:
    from quixstreams import Application

    from parcours.adapters.http.deps import Adapter
    from parcours.adapters.retention import Retention
    from parcours.adapters.webhooks import RetryPolicy
    from parcours.bus.publisher import Publisher
    from parcours.ops.metrics import ProcessorMetrics, ValidatorMetrics
    from parcours.processors.validator import Validator
    from parcours.readmodel.store import EdgeStore
    from parcours.security.identity import IdentityVault


@dataclass(frozen=True)
class Cluster:
    base: KafkaAccess  # the address and protocol, no identity
    credentials: CredentialStore | None
    settings: Settings

    def access(self, principal: str) -> KafkaAccess:
        """How `principal` connects (an explicit PARCOURS_KAFKA_USERNAME takes precedence)."""
        s = self.settings
        if s.kafka_username:
            if s.kafka_password is None:
                raise CredentialError("PARCOURS_KAFKA_USERNAME is set without PARCOURS_KAFKA_PASSWORD")
            return self.base.as_user(s.kafka_username, s.kafka_password)
        if self.base.sasl and self.credentials is not None:
            return self.base.as_user(principal, self.credentials.secret(principal))
        if self.base.sasl:
            raise CredentialError(f"no secret for {principal}: set PARCOURS_KAFKA_USERNAME/_PASSWORD or PARCOURS_CREDENTIALS_FILE")
        return self.base

    def sealer(self) -> Sealer:
        """What seals webhook secrets on the bus: PARCOURS_WEBHOOK_KEY, else the dev store's key."""
        if self.settings.webhook_key is not None:
            return Sealer(self.settings.webhook_key)
        if self.credentials is None or self.settings.profile == "production":
            raise CredentialError("set PARCOURS_WEBHOOK_KEY: the key that seals webhook secrets on Kafka")
        return Sealer(self.credentials.ensure(DEV_KEY_ENTRY))

    def identity_secrets(self) -> IdentitySecrets:
        """The keys outside Kafka that protect identities: PARCOURS_IDENTITY_KEK and
        PARCOURS_IDENTITY_INDEX_KEY, else (development) the credential store's."""
        s = self.settings
        if s.identity_kek is not None and s.identity_index_key is not None:
            return IdentitySecrets.of(s.identity_kek, s.identity_index_key)
        if self.credentials is None or s.profile == "production":
            raise CredentialError("set PARCOURS_IDENTITY_KEK and PARCOURS_IDENTITY_INDEX_KEY: the keys that protect identities")
        return IdentitySecrets.of(s.identity_kek or self.credentials.ensure(DEV_KEK_ENTRY),
                                  s.identity_index_key or self.credentials.ensure(DEV_INDEX_KEY_ENTRY))

    def env(self) -> dict[str, str]:
        """The environment that tells a child process where this cluster and its store are."""
        out = {"PARCOURS_KAFKA_BOOTSTRAP": self.base.bootstrap, "PARCOURS_KAFKA_SECURITY_PROTOCOL": self.base.security_protocol}
        if self.credentials is not None:
            out["PARCOURS_CREDENTIALS_FILE"] = str(self.credentials.path)
        if self.base.cafile:
            out["PARCOURS_KAFKA_CA_FILE"] = self.base.cafile
        if self.settings.topic_replication:
            out["PARCOURS_TOPIC_REPLICATION"] = self.settings.topic_replication
        return out

    def catalogue(self, prefix: str | None = None) -> Catalogue:
        """The catalogue as this cluster replicates it (of another topic `prefix` if given)."""
        s = self.settings if prefix is None else self.settings.model_copy(update={"topic_prefix": prefix})
        return catalogue_for(s)


def embedded_broker(settings: Settings | None = None) -> EmbeddedBroker:
    s = settings or get_settings()
    return EmbeddedBroker(s.broker_dir, s.cache_dir)


def _store(s: Settings, default: CredentialStore | None) -> CredentialStore | None:
    return CredentialStore(s.credentials_file) if s.credentials_file else default


def cluster(settings: Settings | None = None) -> Cluster:
    s = settings or get_settings()
    if s.kafka_bootstrap:
        base = KafkaAccess(s.kafka_bootstrap, s.kafka_security_protocol or "PLAINTEXT", cafile=s.kafka_ca_file or None)
        return Cluster(base, _store(s, None), s)
    broker = embedded_broker(s)
    info = broker.status()
    if info is None:
        raise BrokerError(f"no Kafka: set PARCOURS_KAFKA_BOOTSTRAP or run `parcours broker start` (folder {s.broker_dir})")
    return embedded_cluster(broker, info, s)


def embedded_cluster(broker: EmbeddedBroker, info: BrokerInfo, settings: Settings) -> Cluster:
    """The embedded broker as its clients see it: every node's address, its protocol and credential
    store, and a cluster of 3 nodes or more replicating the topics as production does."""
    s = settings
    if len(info.pids) >= REPLICAS and not s.topic_replication:
        s = s.model_copy(update={"topic_replication": "production"})
    return Cluster(KafkaAccess(info.bootstrap, info.security_protocol, cafile=info.cafile), _store(s, broker.credentials), s)


def resolve_kafka(principal: str, settings: Settings | None = None) -> KafkaAccess:
    return cluster(settings).access(principal)


def cluster_or_start(settings: Settings | None = None) -> tuple[Cluster, EmbeddedBroker | None]:
    """The cluster to use, starting the embedded broker if none runs. The broker is returned only
    when this call started it (the caller stops it); someone else's is left running."""
    s = settings or get_settings()
    if s.kafka_bootstrap:
        return cluster(s), None
    broker = embedded_broker(s)
    if (running := broker.status()) is not None:
        if s.broker_nodes and s.broker_nodes != len(running.pids):
            raise BrokerError(f"a {len(running.pids)}-node broker already runs in {broker.folder}, not {s.broker_nodes}: "
                              "`parcours broker stop` it first, or use another PARCOURS_BROKER_DIR")
        return cluster(s), None
    nodes = s.broker_nodes or broker.formatted_nodes() or 1
    print(f"starting the embedded Apache Kafka {'broker' if nodes == 1 else f'cluster of {nodes} nodes'} in {broker.folder} ...",
          flush=True)
    broker.start(tls=s.broker_tls, nodes=nodes)
    return cluster(s), broker


def child_env(where: Cluster, **extra: str) -> dict[str, str]:
    """The environment of a service started as a child process: this one's, where the cluster is, `extra`."""
    return {**inherited_environment(), **where.env(), **extra}


# --- the services ----------------------------------------------------------------------------

def build_adapter(kind: str, catalogue: Catalogue, kafka: KafkaAccess, sealer: Sealer, retry: RetryPolicy | None = None,  # noqa: PLR0913 - the settings an adapter is built from
                  rate_limit_per_s: float = 100.0, *, webhook_https_only: bool = False,
                  webhook_private_networks: bool = True, store_path: Path | None = None,
                  identity: IdentitySecrets | None = None, retention: Retention | None = None) -> Adapter:
    """The real collaborators of an adapter of `kind`, on `kafka` as the kind's own principal;
    `store_path`: its read model's file (one per instance; default: a temporary one); `identity`:
    the keys that protect identities (default: this process's own)."""
    from parcours.adapters.guard import TokenBucket
    from parcours.adapters.http.deps import VIEW_WAIT_S, Adapter
    from parcours.adapters.http.metrics import AdapterMetrics
    from parcours.adapters.retention import Retention
    from parcours.adapters.webhooks import RetryPolicy, WebhookDelivery
    from parcours.bus.idempotency import IdempotencyClaims
    from parcours.bus.publisher import Publisher
    from parcours.publishing.accept import Acceptance
    from parcours.readmodel.store import EdgeStore

    metrics = AdapterMetrics()
    publisher = Publisher(kafka, catalogue)
    slugs = [s.slug for s in catalogue.registry.of_kind(kind)]
    store = EdgeStore(kafka, catalogue, slugs, path=store_path, observatory=kind in catalogue.topic("observatory").readers,
                      audit=True, territory=True)
    store.on_discard = lambda reason: metrics.cache_discarded.labels("read_model", reason).inc()
    retry = retry or RetryPolicy()
    delivery = WebhookDelivery(store, kafka, publisher, catalogue, metrics, retry, sealer, kind)
    claims = IdempotencyClaims(kafka, catalogue.topic("idempotency").name, publisher)
    vault = identity_vault(store, catalogue, publisher, identity)
    acceptance = Acceptance(catalogue, store, metrics.accepted, claims, wait=VIEW_WAIT_S, sealing=vault)
    return Adapter(kind, catalogue, publisher, store, metrics, sealer, delivery,
                   TokenBucket(rate_limit_per_s, 2 * rate_limit_per_s), claims, acceptance, retry,
                   webhook_https_only=webhook_https_only, webhook_private_networks=webhook_private_networks,
                   vault=vault, retention=retention or Retention())


def identity_vault(store: EdgeStore, catalogue: Catalogue, publisher: Publisher, identity: IdentitySecrets | None) -> IdentityVault:
    """What seals and opens identities at the edge, its data keys read by `store`, made through `publisher`."""
    import time

    from parcours.readmodel.keyring import StoreKeyRing
    from parcours.security.identity import IdentityVault

    secrets = identity or IdentitySecrets.ephemeral()
    ring = StoreKeyRing(store, catalogue.topic("identity-keys").name, publisher.send)
    return IdentityVault(secrets.kek, secrets.persons, ring, lambda: int(time.time() * 1000))


def adapter(kind: str, instance: int = 0, settings: Settings | None = None) -> Adapter:
    """Instance `instance` of the adapter of `kind`, as the settings say: its principal, the
    profile's rules (no dev token in production, webhook endpoints), its read model's file."""
    from parcours.adapters.retention import Retention
    from parcours.adapters.webhooks import RetryPolicy

    s = settings or get_settings()
    cat = default_catalogue()
    if s.profile == "production" and (dev := cat.registry.with_dev_tokens()):
        raise ParcoursError(f"production profile refuses dev tokens (structures {dev}): set real token hashes in the registry")
    where = cluster(s)
    return build_adapter(kind, cat, where.access(cat.service_principal("adapter", kind)), where.sealer(),
                         RetryPolicy(s.webhook_attempts, s.webhook_first_delay_s), rate_limit_per_s=s.rate_limit_per_s,
                         webhook_https_only=s.profile == "production",
                         webhook_private_networks=s.profile == "dev" if s.webhook_private_networks is None else s.webhook_private_networks,
                         store_path=s.edge_dir / f"{cat.prefix}-adapter-{kind}-{instance}.sqlite3",
                         identity=where.identity_secrets(),
                         retention=Retention(s.identity_retention_days * 86400.0, s.identity_sweep_s))


def build_validator(catalogue: Catalogue, kafka: KafkaAccess, metrics: ValidatorMetrics, store_path: Path | None = None,
                    identity: IdentitySecrets | None = None) -> Validator:
    """The Kafka ingress door's real parts: a read model of every structure's views (and the data
    keys), the use case on it, sealing identities with `identity`'s keys."""
    from parcours.bus.publisher import Publisher
    from parcours.processors.validator import VIEW_WAIT_S, Validator
    from parcours.publishing.accept import Acceptance
    from parcours.readmodel.store import EdgeStore

    store = EdgeStore(kafka, catalogue, list(catalogue.registry.structures), path=store_path, inbox=False,
                      observatory=False, webhooks=False)
    store.on_discard = lambda reason: metrics.cache_discarded.labels("read_model", reason).inc()
    vault = identity_vault(store, catalogue, Publisher(kafka, catalogue), identity)
    return Validator(catalogue, kafka, metrics, store, Acceptance(catalogue, store, metrics.accepted, wait=VIEW_WAIT_S, sealing=vault))


def validator(metrics: ValidatorMetrics, settings: Settings | None = None) -> Validator:
    """The validator as the settings say: its principal, its read model's file."""
    s = settings or get_settings()
    cat = default_catalogue()
    where = cluster(s)
    return build_validator(cat, where.access(cat.service_principal("validator")), metrics,
                           store_path=s.edge_dir / f"{cat.prefix}-validator.sqlite3", identity=where.identity_secrets())


@dataclass(frozen=True)
class ProcessorService:
    """The case-file processor: what makes its engine (a Quix application, the consent clock and the
    lag reporter started with the first), the state folder, the topics whose lineage that state must
    match, and the folder's lock (held as long as this object lives: the life of the process)."""

    build: Callable[[], Application]
    state_dir: Path
    kafka: KafkaAccess
    topics: list[str]
    on_discard: Callable[[str], None]
    lock: Any

    def run(self) -> None:
        """Until SIGTERM or SIGINT; an engine whose topics changed under it is started again on a new state."""
        from parcours.processors.statelineage import run_engine

        run_engine(self.build, self.state_dir, self.kafka, self.topics, self.on_discard)


def processor(metrics: ProcessorMetrics, *, state_dir: Path | None = None, commit_interval: float | None = None,
              settings: Settings | None = None) -> ProcessorService:
    """The case-file processor as the settings say (`state_dir`, `commit_interval`: the command's own)."""
    from parcours.processors.app import claim_state_dir, create_app
    from parcours.processors.core import RecordProcessor
    from parcours.processors.statelineage import processor_topics
    from parcours.topology.registry import default_policy

    s = settings or get_settings()
    cat = default_catalogue()
    folder = state_dir or s.state_dir / f"{cat.prefix}-processor"
    lock = claim_state_dir(folder)
    kafka = resolve_kafka(cat.service_principal("processor"), s)
    core = RecordProcessor(cat, default_policy())
    started: list[threading.Thread] = []

    def build() -> Application:
        app, threads = create_app(cat, kafka, core, metrics, state_dir=folder, instance=s.processor_instance,
                                  commit_interval=s.processor_commit_interval_s if commit_interval is None else commit_interval)
        for t in threads if not started else []:  # the clock and the lag reporter outlive an engine started again
            t.start()
            started.append(t)
        metrics.up.set(1)
        return app

    return ProcessorService(build, folder, kafka, processor_topics(cat),
                            lambda reason: metrics.cache_discarded.labels("state", reason).inc(), lock)


async def redeliver_webhooks(structure: str | None = None) -> tuple[int, int]:
    """The webhook dead letters (of `structure`, or all) delivered again, as the ops principal: (sent, still failing)."""
    from parcours.adapters.webhooks import RetryPolicy, redeliver

    cat, where = default_catalogue(), cluster()
    return await redeliver(cat, where.access(cat.service_principal("ops")), RetryPolicy(), where.sealer(), structure)
