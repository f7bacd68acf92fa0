"""Errors of the bus (Kafka): what a client of the cluster, the publisher or the idempotency
claims raise. Each is a `ParcoursError`; none knows about HTTP (the edge maps them to a status)."""

from __future__ import annotations

from parcours.errors import ParcoursError


class BusError(ParcoursError):
    """Base of the bus's errors."""


class ClusterError(BusError):
    """The cluster refused or failed an operation (wraps aiokafka and librdkafka errors)."""


class KafkaUnavailable(BusError):
    """Kafka did not take a record in time (unreachable, no acknowledgement): nothing was written."""


class NotCaughtUp(BusError):
    """What a decision needs is not read from Kafka yet (the idempotency claims loading); retry."""


class KeyReused(BusError):
    """An idempotency key already stands for another request."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule
