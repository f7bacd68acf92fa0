"""Event <-> Kafka record, in the CloudEvents Kafka binding's binary mode.

The record value is the schemaless Avro body; attributes travel as `ce_*` headers, and
`ce_schemafingerprint` carries the writer schema's CRC-64-AVRO fingerprint so a reader resolves
the writer schema from the shipped set and reads it with the newest version of the type.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer

from parcours.contract.errors import DecodeError, EventValidationError
from parcours.contract.models import Event, build_event
from parcours.contract.schemas import SchemaSet, default_schema_set

CE_TYPE_PREFIX = "fr.parcours."
CONTENT_TYPE = "application/avro"
H_FINGERPRINT = "ce_schemafingerprint"

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class EncodedEvent:
    key: bytes
    value: bytes
    headers: Headers


def ce_type(event_type: str) -> str:
    return CE_TYPE_PREFIX + event_type


class Codec:
    def __init__(self, schemas: SchemaSet | None = None) -> None:
        self.schemas = schemas or default_schema_set()

    def encode(self, event: Event) -> EncodedEvent:
        sv = self.schemas.latest(event.event_type)
        buf = io.BytesIO()
        schemaless_writer(buf, sv.parsed, event.model_dump(mode="python"))
        headers: Headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", str(event.event_id).encode()),
            ("ce_source", f"/structures/{event.source}".encode()),
            ("ce_type", ce_type(event.event_type).encode()),
            ("ce_time", event.occurred_at.isoformat().replace("+00:00", "Z").encode()),
            ("ce_subject", event.key.encode()),
            ("content-type", CONTENT_TYPE.encode()),
            ("ce_dataschema", sv.ref.encode()),
            (H_FINGERPRINT, sv.fingerprint.encode()),
        ]
        return EncodedEvent(event.key.encode(), buf.getvalue(), headers)

    def decode(
        self,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | dict[str, bytes] | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Event:
        where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        h = dict(headers.items() if isinstance(headers, dict) else (headers or []))
        if value is None:
            raise DecodeError("empty record (tombstone) on an event topic", **where)
        fp = _text(h.get(H_FINGERPRINT))
        if not fp:
            raise DecodeError(f"missing header {H_FINGERPRINT}", field=H_FINGERPRINT, **where)
        writer = self.schemas.by_fingerprint.get(fp)
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {fp}", field=H_FINGERPRINT, **where)
        declared = _text(h.get("ce_type"))
        if declared != ce_type(writer.event_type):
            raise DecodeError(
                f"ce_type {declared!r} does not match the writer schema {writer.event_type}",
                field="ce_type",
                **where,
            )
        reader = self.schemas.latest(writer.event_type)
        buf = io.BytesIO(value)
        try:
            datum = schemaless_reader(buf, writer.parsed, None if reader is writer else reader.parsed)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on garbage: wrap them all
            raise DecodeError(f"body is not {writer.event_type} Avro ({type(exc).__name__}: {exc})", **where) from None
        if buf.tell() != len(value):
            raise DecodeError(f"{len(value) - buf.tell()} trailing bytes after the Avro body", **where)
        try:
            event = build_event(writer.event_type, cast("dict[str, object]", datum))  # event schemas are records
        except EventValidationError as exc:
            field, _ = exc.errors[0]
            raise DecodeError(str(exc), field=field, **where) from None
        if _text(h.get("ce_id")) not in (None, str(event.event_id)):
            raise DecodeError("ce_id differs from event_id", field="ce_id", **where)
        return event


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
