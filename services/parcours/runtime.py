"""Where this process finds Kafka: PARCOURS_KAFKA_BOOTSTRAP, else the embedded broker's state."""

from __future__ import annotations

from parcours.devbroker.broker import EmbeddedBroker
from parcours.devbroker.errors import BrokerError
from parcours.settings import Settings, get_settings


def embedded_broker(settings: Settings | None = None) -> EmbeddedBroker:
    s = settings or get_settings()
    return EmbeddedBroker(s.broker_dir, s.cache_dir)


def resolve_bootstrap(settings: Settings | None = None) -> str:
    s = settings or get_settings()
    if s.kafka_bootstrap:
        return s.kafka_bootstrap
    info = embedded_broker(s).status()
    if info is None:
        raise BrokerError(
            f"no Kafka: set PARCOURS_KAFKA_BOOTSTRAP or run `parcours broker start` (folder {s.broker_dir})"
        )
    return info.bootstrap


def bootstrap_or_start(settings: Settings | None = None) -> tuple[str, EmbeddedBroker | None]:
    """The cluster to use, starting the embedded broker if none runs. The broker is returned only
    when this call started it (the caller stops it); someone else's is left running."""
    s = settings or get_settings()
    if s.kafka_bootstrap:
        return s.kafka_bootstrap, None
    broker = embedded_broker(s)
    info = broker.status()
    if info is not None:
        return info.bootstrap, None
    print(f"starting the embedded Apache Kafka broker in {broker.folder} ...", flush=True)
    return broker.start().bootstrap, broker
