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
