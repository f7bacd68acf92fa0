"""The case-file processor as a faust-streaming worker. Thin: decode, call `CaseProcessor`, write.

- consumes every canonical topic and the clock-tick topic (co-partitioned by case_id) with one
  agent, `concurrency=1` (faust #606: out-of-order acks can commit past unprocessed messages);
- keeps `StoredCase` per case in a changelog-backed in-memory table (changelog: `case-state`);
- writes views to the compacted `case-views` topic, notifications to `inbox.<slug>`, rupture
  marks to `observatory`, undecodable or failing records to `deadletter` (the worker goes on);
- a timer sends clock ticks for cases whose consents expire, so views lose expired items.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust
from faust.serializers import codecs

from parcours.casefile.policy import Policy
from parcours.contract.codec import Codec
from parcours.contract.errors import DecodeError
from parcours.contract.models import Event, RuptureReported
from parcours.ops.metrics import ProcessorMetrics
from parcours.processors.core import CaseProcessor, StoredCase
from parcours.processors.deadletter import dead_letter_headers
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy

log = logging.getLogger("parcours.processor")

#: at most this many records per batch, waiting at most this long to fill one
BATCH_MAX = 500
BATCH_WITHIN_S = 0.01
LAG_INTERVAL_S = 10.0


class _StoredCaseCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return obj.to_json()

    def _loads(self, s: bytes) -> Any:
        return StoredCase.from_json(s)


codecs.register("parcours_case", _StoredCaseCodec())


def rupture_mark(e: RuptureReported) -> tuple[bytes, bytes]:
    year, week, _ = e.occurred_at.isocalendar()
    w = f"{year}-W{week:02d}"
    key = f"{e.territory}/{w}/{e.type}/{e.rupture_id}"
    value = {"territory": e.territory, "week": w, "type": e.type, "rupture_id": e.rupture_id}
    return key.encode(), json.dumps(value).encode()


def create_app(catalogue: Catalogue, bootstrap: str, policy: KindPolicy, metrics: ProcessorMetrics, tick_interval: float = 5.0) -> faust.App:
    app = faust.App(
        f"{catalogue.prefix}-processor",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=catalogue.canonical()[0].partitions,
        topic_replication_factor=catalogue.canonical()[0].replication_factor,
        # the catalogue creates our topics; faust still declares its own leader-election topic
        topic_allow_declare=True,
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=100,
    )
    kinds = {s.slug: s.kind for s in catalogue.registry.structures.values()}
    core = CaseProcessor(kinds, Policy(policy.hidden))
    codec = Codec()
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    canonical = [t.name for t in catalogue.canonical()]
    ticks_name = catalogue.topic("clock-ticks").name
    source = app.topic(*canonical, ticks_name, **raw)
    ticks = app.topic(ticks_name, **raw)
    views = app.topic(catalogue.topic("case-views").name, **raw)
    observatory = app.topic(catalogue.topic("observatory").name, **raw)
    deadletter = app.topic(catalogue.topic("deadletter").name, **raw)
    inboxes = {slug: app.topic(catalogue.per_structure("inbox", slug).name, **raw) for slug in kinds}
    state_topic = catalogue.topic("case-state")
    state_schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="parcours_case")
    table = app.Table(
        "case-state",
        default=None,
        partitions=state_topic.partitions,
        schema=state_schema,
        # our own changelog topic: the catalogue's name, and acks (faust's default sends without)
        changelog_topic=app.topic(state_topic.name, schema=state_schema, partitions=state_topic.partitions,
                                  compacting=True, acks=True, internal=True),
    )
    # faust derives a table's serializers from its key/value types only (json for plain types)
    table.key_serializer, table.value_serializer = "raw", "parcours_case"
    ticks_sent: dict[str, datetime] = {}

    async def to_deadletter(msg: Any, reason: str, detail: str) -> None:
        metrics.dead_letters.labels("processor", reason).inc()
        log.warning("dead letter", extra={"reason": reason, "topic": msg.topic, "partition": msg.partition, "offset": msg.offset})
        headers = dead_letter_headers(
            list(msg.headers or []), reason=reason, detail=detail, service="processor",
            topic=msg.topic, partition=msg.partition, offset=msg.offset,
        )
        await deadletter.send(key=msg.key, value=msg.value, headers=headers)

    @app.agent(source, concurrency=1)
    async def process(stream: Any) -> None:
        # one event at a time: batching with take_events + hand-written changelog records made a
        # worker restarted after SIGKILL hang in recovery (see the closing note); kept simple
        async for ev in stream.events():
            msg = ev.message
            try:
                decoded = await decode(msg)
                if decoded is not None:
                    case_id, event = decoded
                    await apply_case(case_id, msg.partition, [event], datetime.now(UTC))
            except Exception as exc:  # one bad record must not stall the partition
                log.exception("processing failed")
                await to_deadletter(msg, "processing_failed", f"{type(exc).__name__}: {exc}")

    async def decode(msg: Any) -> tuple[str, Event | None] | None:
        """(case id, event) of a record; None when it was dead-lettered or needs no case."""
        if msg.topic == ticks_name:
            return msg.key.decode(), None
        try:
            event = codec.decode(msg.value, msg.headers, topic=msg.topic, partition=msg.partition, offset=msg.offset)
        except DecodeError as exc:
            await to_deadletter(msg, "undecodable", str(exc))
            return None
        if msg.key != event.key.encode():
            await to_deadletter(msg, "key_mismatch", f"record key differs from the event's key {event.key!r}")
            return None
        if isinstance(event, RuptureReported):
            key, value = rupture_mark(event)
            await observatory.send(key=key, value=value)
            if event.case_id is None:
                metrics.events.labels(event.event_type).inc()
                return None
        return event.key, event

    async def apply_case(case_id: str, partition: int, events: list[Event | None], now: datetime) -> None:
        result = core.step_many(table.get(case_id), events, now, case_id)
        if result.duplicate:
            for e in events:
                metrics.duplicates.labels(e.event_type if e else "tick").inc()
        else:
            table[case_id] = result.stored
        for v in result.views:
            await views.send(key=v.key.encode(), value=v.value)
            metrics.view_writes.labels(v.key.split("/", 1)[0]).inc()
        for n in result.notifications:
            await inboxes[n.structure].send(key=n.case_id.encode(), value=n.encode())
            metrics.notifications.labels(n.structure, n.body["type"]).inc()
            if n.body["type"] == "redaction":
                metrics.redactions.labels(n.structure).inc()
        if not result.duplicate:
            done = time.time()
            for e in events:
                if e is not None:
                    metrics.events.labels(e.event_type).inc()
                    metrics.latency.observe(max(0.0, done - e.occurred_at.timestamp()))

    @app.timer(interval=tick_interval)
    async def expire_consents() -> None:
        now = datetime.now(UTC)
        for case_id, stored in list(table.data.items()):
            if stored is None:
                continue
            due = _earliest_passed(stored, now)
            if due is not None and ticks_sent.get(case_id) != due:
                ticks_sent[case_id] = due
                await ticks.send(key=case_id.encode(), value=b"")

    def _earliest_passed(stored: StoredCase, now: datetime) -> datetime | None:
        """The latest consent expiry already passed that the views may not reflect yet."""
        from parcours.contract.models import ConsentRecorded

        passed = [e.valid_until for e in stored.state.events.values()
                  if isinstance(e, ConsentRecorded) and e.valid_until is not None and e.valid_until <= now]
        if not passed:
            return None
        return max(passed)

    lag_clients: dict[str, Any] = {}

    @app.timer(interval=LAG_INTERVAL_S)
    async def report_lag() -> None:
        """Consumer lag per canonical partition: the end offset minus the group's committed one."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        try:
            if not lag_clients:
                lag_clients["admin"] = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
                lag_clients["consumer"] = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
                await lag_clients["admin"].start()
                await lag_clients["consumer"].start()
            parts = [TopicPartition(t.name, p) for t in catalogue.canonical() for p in range(t.partitions)]
            committed = await lag_clients["admin"].list_consumer_group_offsets(app.conf.id)
            end = await lag_clients["consumer"].end_offsets(parts)
            for tp in parts:
                done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
                metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end[tp] - done))
        except KafkaError as exc:
            log.warning("lag report failed", extra={"error": type(exc).__name__})

    metrics.up.set(1)
    return app
