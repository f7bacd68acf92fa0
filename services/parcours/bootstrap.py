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

from pydantic import SecretStr

from parcours.auth.keys import DEV_ISSUER_ENTRY
from parcours.bus.kafkaio import KafkaAccess
from parcours.bus.reachability import until_reachable
from parcours.devbroker.broker import BrokerInfo, EmbeddedBroker
from parcours.devbroker.config import REPLICAS
from parcours.devbroker.errors import BrokerError
from parcours.security.credentials import CredentialStore
from parcours.security.errors import CredentialError
from parcours.security.identity import DEV_INDEX_KEY_ENTRY, DEV_KEK_ENTRY, IdentitySecrets
from parcours.security.sealing import DEV_KEY_ENTRY, Sealer
from parcours.settings import Settings, get_settings, inherited_environment
from parcours.topology.catalogue import Catalogue, catalogue_for, default_catalogue
from parcours.topology.registry import Registry, hash_token

#: the operators' token of the development profile (operator API), when PARCOURS_ADMIN_TOKEN_SHA256 is unset
DEV_ADMIN_TOKEN = "dev-admin"  # noqa: S105 - documented, development profile only

if TYPE_CHECKING:
    from quixstreams import Application

    from parcours.adapters.auth import EdgeAuth
    from parcours.adapters.http.deps import Adapter
    from parcours.adapters.retention import Retention
    from parcours.adapters.webhooks import RetryPolicy
    from parcours.auth.tokens import JtiLedger
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

    def issuer_secret(self) -> SecretStr:
        """The embedded token issuer's secret: PARCOURS_TOKEN_KEY, else the dev store's."""
        if self.settings.token_key is not None:
            return self.settings.token_key
        if self.credentials is None or self.settings.profile == "production":
            raise CredentialError("set PARCOURS_TOKEN_KEY (the token issuer's signing secret) or PARCOURS_OIDC_ISSUER")
        return self.credentials.ensure(DEV_ISSUER_ENTRY)

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


def live_catalogue(kafka: KafkaAccess) -> Catalogue:
    """This process's catalogue, with the structure registry its topic holds now (a service
    starting; it follows the topic from then on)."""
    import asyncio

    from parcours.topology import live

    cat = default_catalogue()
    # a service starting while the cluster is away or overloaded waits for it rather than dying
    cat.adopt(until_reachable(lambda: asyncio.run(live.live_catalogue(kafka, cat)), "reading the structure registry"))
    return cat


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

@dataclass(frozen=True)
class AuthConfig:
    """How an adapter authenticates partners: the embedded issuer's secret (or an external
    OpenID issuer), its public URL, whether static development tokens are accepted."""

    issuer_secret: SecretStr
    public_url: str = "http://127.0.0.1:0"
    #: other issuer secrets whose tokens are accepted (a key being rotated in or out), never used to sign
    accepted_secrets: tuple[SecretStr, ...] = ()
    static_tokens: bool = True
    oidc_issuer: str = ""
    audience: str = "urn:parcours:{prefix}:adapter-{kind}"
    ttl_s: int = 300
    #: the SHA-256 of the operators' token (the operator API); empty: none accepted
    admin_token_sha256: str = ""


def build_edge_auth(kind: str, catalogue: Catalogue, claims: JtiLedger, config: AuthConfig) -> EdgeAuth:
    """The edge's authentication: the embedded issuer (token endpoint, offline check of its
    tokens), or an external issuer's tokens checked with the keys its discovery names."""
    from joserfc.jwk import KeySet

    from parcours.adapters.auth import TOKEN_PATH, EdgeAuth
    from parcours.auth.discovery import Discovery
    from parcours.auth.keys import IssuerKey
    from parcours.auth.tokens import EXTERNAL_ALGORITHMS, AccessTokens, TokenService

    audience = config.audience.format(prefix=catalogue.prefix, kind=kind)
    if config.oidc_issuer:
        discovery = Discovery(config.oidc_issuer)
        external = AccessTokens(lambda: discovery.keys, issuer=discovery.issuer, audience=audience, algorithms=EXTERNAL_ALGORITHMS)
        return EdgeAuth(kind, catalogue, external, None, config.static_tokens, config.public_url, discovery=discovery,
                        admin_token_sha256=config.admin_token_sha256)
    key = IssuerKey(config.issuer_secret)
    accepted = tuple(IssuerKey(s) for s in config.accepted_secrets if s.get_secret_value() != config.issuer_secret.get_secret_value())
    keys, issuer = KeySet([key.key, *(k.key for k in accepted)]), f"urn:parcours:{catalogue.prefix}"
    tokens = AccessTokens(lambda: keys, issuer=issuer, audience=audience)
    service = TokenService(catalogue, key, issuer, audience, config.public_url + TOKEN_PATH, claims, config.ttl_s, accepted=accepted)
    return EdgeAuth(kind, catalogue, tokens, service, config.static_tokens, config.public_url,
                    admin_token_sha256=config.admin_token_sha256)


def build_adapter(kind: str, catalogue: Catalogue, kafka: KafkaAccess, sealer: Sealer, retry: RetryPolicy | None = None,  # noqa: PLR0913 - the settings an adapter is built from
                  rate_limit_per_s: float = 100.0, *, webhook_https_only: bool = False,
                  webhook_private_networks: bool = True, store_path: Path | None = None,
                  identity: IdentitySecrets | None = None, retention: Retention | None = None,
                  auth: AuthConfig | None = None) -> Adapter:
    """The real collaborators of an adapter of `kind`, on `kafka` as the kind's own principal;
    `store_path`: its read model's file (one per instance; default: a temporary one); `identity`:
    the keys that protect identities (default: this process's own); `auth`: how partners
    authenticate (default: an embedded issuer of a random secret, static tokens accepted)."""
    import secrets

    from parcours.adapters.guard import TokenBucket
    from parcours.adapters.http.deps import VIEW_WAIT_S, Adapter
    from parcours.adapters.http.metrics import AdapterMetrics
    from parcours.adapters.retention import Retention
    from parcours.adapters.webhooks import RetryPolicy, WebhookDelivery
    from parcours.bus.idempotency import IdempotencyClaims
    from parcours.bus.publisher import Publisher
    from parcours.publishing.accept import Acceptance
    from parcours.readmodel.store import EdgeStore
    from parcours.topology.live import RegistryFollower

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
    edge_auth = build_edge_auth(kind, catalogue, claims, auth or AuthConfig(SecretStr(secrets.token_urlsafe(32))))

    async def joined_or_left(registry: Registry) -> None:  # every part holding the catalogue sees it at once
        catalogue.adopt(catalogue.with_registry(registry))
        store.follow([s.slug for s in registry.of_kind(kind)])
        await delivery.follow()

    return Adapter(kind, catalogue, publisher, store, metrics, sealer, delivery,
                   TokenBucket(rate_limit_per_s, 2 * rate_limit_per_s), claims, acceptance, edge_auth,
                   RegistryFollower(kafka, catalogue, joined_or_left), retry,
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


def adapter(kind: str, instance: int = 0, settings: Settings | None = None, port: int = 0) -> Adapter:
    """Instance `instance` of the adapter of `kind`, serving on `port`, as the settings say: its
    principal, the profile's rules (tokens from an issuer only in production, webhook endpoints),
    its read model's file."""
    from parcours.adapters.retention import Retention
    from parcours.adapters.webhooks import RetryPolicy

    s = settings or get_settings()
    where = cluster(s)
    cat = live_catalogue(where.access(default_catalogue().service_principal("adapter", kind)))
    production = s.profile == "production"
    secret = SecretStr("") if s.oidc_issuer else where.issuer_secret()
    auth = AuthConfig(secret, s.public_url.format(kind=kind, port=port).rstrip("/"), tuple(s.token_keys_accepted), static_tokens=not production,
                      oidc_issuer=s.oidc_issuer, audience=s.token_audience, ttl_s=s.access_token_ttl_s,
                      admin_token_sha256=s.admin_token_sha256 or ("" if production else hash_token(DEV_ADMIN_TOKEN)))
    return build_adapter(kind, cat, where.access(cat.service_principal("adapter", kind)), where.sealer(),
                         RetryPolicy(s.webhook_attempts, s.webhook_first_delay_s), rate_limit_per_s=s.rate_limit_per_s,
                         webhook_https_only=s.profile == "production",
                         webhook_private_networks=s.profile == "dev" if s.webhook_private_networks is None else s.webhook_private_networks,
                         store_path=s.edge_dir / f"{cat.prefix}-adapter-{kind}-{instance}.sqlite3",
                         identity=where.identity_secrets(),
                         retention=Retention(s.identity_retention_days * 86400.0, s.identity_sweep_s), auth=auth)


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
    where = cluster(s)
    kafka = where.access(default_catalogue().service_principal("validator"))
    cat = live_catalogue(kafka)
    return build_validator(cat, kafka, metrics, store_path=s.edge_dir / f"{cat.prefix}-validator.sqlite3",
                           identity=where.identity_secrets())


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
    from parcours.topology import live
    from parcours.topology.registry import default_policy

    s = settings or get_settings()
    folder = state_dir or s.state_dir / f"{default_catalogue().prefix}-processor"
    lock = claim_state_dir(folder)
    kafka = resolve_kafka(default_catalogue().service_principal("processor"), s)
    cat = live_catalogue(kafka)
    core = RecordProcessor(cat, default_policy())
    live.follow_on_a_thread(kafka, cat, core.learn)
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
