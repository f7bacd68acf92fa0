"""`parcours record` / `parcours replay`: topics to an Avro container file and back.

A recording keeps each record's topic (by its logical catalogue name, so it replays under any
prefix), partition, offset, timestamp, key, value and headers. Replaying writes the records in
file order to the same partitions, batched, with a progress bar on stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, reader, writer

from parcours.bus.kafkaio import KafkaAccess, partition_counts, read_to_end
from parcours.topology.catalogue import Catalogue
from parcours.topology.errors import TopologyError

RECORD_SCHEMA = parse_schema({
    "type": "record", "name": "RecordedRecord", "namespace": "fr.parcours.recording",
    "doc": "One Kafka record as captured by `parcours record`.",
    "fields": [
        {"name": "topic", "type": "string", "doc": "logical catalogue name, without the prefix"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "key", "type": ["null", "bytes"]},
        {"name": "value", "type": ["null", "bytes"]},
        {"name": "headers", "type": {"type": "array", "items": {
            "type": "record", "name": "Header", "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": "bytes"}]}}},
    ],
})


class RecordingError(TopologyError):
    """A recording cannot be read or written."""


def _logical(catalogue: Catalogue, names: Iterable[str]) -> dict[str, str]:
    """topic name -> logical name, for logical names or full names of the catalogue."""
    out = {}
    for n in names:
        full = n if n in catalogue.topics else f"{catalogue.prefix}.{n}"
        if full not in catalogue.topics:
            raise RecordingError(f"unknown topic {n!r}; the catalogue has {sorted(catalogue.logical)}")
        out[full] = full.removeprefix(catalogue.prefix + ".")
    return out


async def record(catalogue: Catalogue, kafka: KafkaAccess, topics: list[str], out: Path) -> int:
    names = _logical(catalogue, topics)
    rows: list[dict[str, Any]] = []
    async for batch in read_to_end(kafka, list(names)):
        rows.extend({"topic": names[r.topic], "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp,
                     "key": r.key, "value": r.value, "headers": [{"key": k, "value": v} for k, v in (r.headers or [])]}
                    for r in batch)
    rows.sort(key=lambda row: (row["timestamp_ms"], row["topic"], row["partition"], row["offset"]))
    with out.open("wb") as fh:
        writer(fh, RECORD_SCHEMA, rows, codec="deflate", metadata={"parcours.prefix": catalogue.prefix})
    return len(rows)


async def replay(catalogue: Catalogue, kafka: KafkaAccess, path: Path, progress: bool = True) -> int:
    try:
        with path.open("rb") as fh:
            rows = cast("list[dict[str, Any]]", list(reader(fh)))  # RECORD_SCHEMA is a record
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: not a Parcours recording ({exc})") from None
    topics = {row["topic"] for row in rows}
    missing = [t for t in topics if t not in catalogue.logical]
    if missing:
        raise RecordingError(f"{path}: topics {missing} are not in the catalogue")
    counts = await partition_counts(kafka, [catalogue.topic(t).name for t in topics])
    producer = kafka.producer(linger_ms=10)
    await producer.start()
    t0, total = time.monotonic(), len(rows)
    try:
        for i, row in enumerate(rows, 1):
            name = catalogue.topic(row["topic"]).name
            partition = row["partition"] if row["partition"] < counts.get(name, 0) else None
            await producer.send(name, row["value"], key=row["key"], partition=partition, timestamp_ms=row["timestamp_ms"],
                                headers=[(h["key"], h["value"]) for h in row["headers"]])
            if progress and (i % 200 == 0 or i == total):
                _bar(i, total, time.monotonic() - t0)
        await producer.flush()
    finally:
        await producer.stop()
    if progress:
        sys.stderr.write("\n")
    return total


def _bar(done: int, total: int, secs: float) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / secs if secs > 0 else 0.0
    sys.stderr.write(f"\rreplay [{'#' * filled}{'.' * (width - filled)}] {done}/{total} records, {rate:,.0f}/s")
    sys.stderr.flush()
