"""Where this process finds Kafka and who it is there.

The cluster is PARCOURS_KAFKA_BOOTSTRAP (with PARCOURS_KAFKA_SECURITY_PROTOCOL), else the embedded
broker of this folder. Each command runs as one principal: a service as its own (catalogue
`services`), the administrative tools as `admin`. Its secret comes from PARCOURS_KAFKA_USERNAME and
PARCOURS_KAFKA_PASSWORD when the platform provides them (production), else from the development
credential store. Child processes get `Cluster.env()`: where the cluster and the store are, never
a secret in their environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from parcours.bus.kafkaio import KafkaAccess
from parcours.devbroker.broker import EmbeddedBroker
from parcours.devbroker.errors import BrokerError
from parcours.security.credentials import CredentialStore
from parcours.security.errors import CredentialError
from parcours.security.sealing import DEV_KEY_ENTRY, Sealer
from parcours.settings import Settings, get_settings


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

    def env(self) -> dict[str, str]:
        """The environment that tells a child process where this cluster and its store are."""
        out = {"PARCOURS_KAFKA_BOOTSTRAP": self.base.bootstrap, "PARCOURS_KAFKA_SECURITY_PROTOCOL": self.base.security_protocol}
        if self.credentials is not None:
            out["PARCOURS_CREDENTIALS_FILE"] = str(self.credentials.path)
        if self.base.cafile:
            out["PARCOURS_KAFKA_CA_FILE"] = self.base.cafile
        return out


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
    if broker.status() is not None:
        return cluster(s), None
    print(f"starting the embedded Apache Kafka broker in {broker.folder} ...", flush=True)
    broker.start(tls=s.broker_tls)
    return cluster(s), broker
