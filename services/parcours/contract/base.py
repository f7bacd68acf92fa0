"""What every model of the contract is (`ContractModel`), and the UTC-milliseconds rule of its times."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, field_validator


def utc_ms(value: datetime) -> datetime:
    """Aware UTC datetime truncated to milliseconds, as Avro timestamp-millis stores it."""
    if value.tzinfo is None:
        raise ValueError("must carry a timezone (UTC)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


#: C0 control characters and DEL, except tab, line feed and carriage return (text keeps its lines)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control(value: object) -> None:
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ValueError("control characters (NUL and other C0 but tab and newlines) are not allowed")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_control(k)
            _no_control(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _no_control(v)


class ContractModel(BaseModel):
    """What every model of the contract is: closed (no extra field), frozen, stripped text without control characters."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _text_without_control_characters(cls, value: object) -> object:
        _no_control(value)
        return value
