"""Errors of the event contract: schemas, models and the codec."""

from __future__ import annotations

from parcours.errors import ParcoursError


class ContractError(ParcoursError):
    """Base of every contract error."""


class SchemaError(ContractError):
    """A schema file is unreadable, or a schema set breaks compatibility."""


class IncompatibleSchemaError(SchemaError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("incompatible schema change:\n  " + "\n  ".join(problems))


class EventValidationError(ContractError):
    """An event violates a rule of its model. `errors` is a list of (field, rule) pairs."""

    def __init__(self, event_type: str, errors: list[tuple[str, str]]) -> None:
        self.event_type = event_type
        self.errors = errors
        detail = "; ".join(f"{field}: {rule}" for field, rule in errors)
        super().__init__(f"invalid {event_type}: {detail}")


class DecodeError(ContractError):
    """A Kafka record could not be turned into an event. Names where it came from and why."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.field = field
        where = f"{topic}[{partition}]@{offset}" if topic is not None else "record"
        what = f" field {field}:" if field else ""
        super().__init__(f"cannot decode {where}:{what} {reason}")
