"""`parcours state rebuild`: the processor's state recomputed from its input topics with its own
step, written where a restarted processor restores it from.

When: a lost or truncated changelog (`case-state`), a state layout change on an upgrade, a state
from another cluster. Every processor instance stopped first (the command refuses otherwise):

1. The cut, per input partition (the canonical topics and the clock ticks): the processor group's
   committed offset, or the partition's end where the group has none. The processor sent the
   notifications and audit records of what precedes it; the restarted processor resumes there and
   processes the rest as usual. (Reading to the end instead would leave the records it had not
   reached without their notifications: those are logs, never sent again here.)
2. `rebuild.rebuild` with the whole step (not `views_only`), each record at its own time (its
   timestamp, never earlier than the oldest consent tick the clock topic still keeps: the ticks
   older than that are gone, and the live processor had applied them), into one store per case
   and input partition, as Quix keeps them.
3. The changelog. Kafka refuses DeleteRecords on a compact-only topic (PolicyViolation, checked on
   4.3.1), so it is not truncated: it is read, and what differs is written: the rebuilt value of
   every key whose latest record is not it, a tombstone for every key the rebuild does not have.
   The latest record of every key is then the rebuilt state, so Quix's recovery, which applies the
   changelog from the store's saved position (an empty store: from its first offset), ends on it.
   Records are keyed as Quix keys RocksDB (`quixstate.store_key`), on the input partition of the
   case, with the column-family header recovery requires and no `__processed_tp_offsets__` header
   (recovery reads it as "apply").
4. In the same Kafka transaction: the views, the follow-up index and the clock schedule where they
   differ (never inbox, audit or observatory records), and the group's offsets at the cut
   (`send_offsets_to_transaction`: accepted for a group without members).
5. The local state (RocksDB, now stale) and its recorded lineage are removed: the processor
   restores the state from the changelog on start. A state folder elsewhere (another instance's)
   needs nothing: built from this changelog, it restores the records written here after its own
   position, which end on the rebuilt state; built from another (a changelog created again since,
   another cluster), its lineage check discards it at start (statelineage.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import KafkaAccess, committed_offsets, end_offsets, read_latest, read_to_end
from parcours.processors import rebuild as rb
from parcours.processors.app import claim_state_dir, group_id
from parcours.processors.core import RecordProcessor
from parcours.processors.errors import ProcessorError
from parcours.processors.quixstate import store_key
from parcours.processors.statelineage import LINEAGE_FILE, discard_state
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy

#: the column family of the processor's store, in the header Quix's recovery requires
CHANGELOG_HEADERS = [("__column_family__", b"default")]
#: a processor stopped cleanly stays in its group this long (a static member sends no LeaveGroup:
#: the session timeout, 10 s in app.py): the command waits that long for the group to empty
MEMBERS_WAIT_S = 15.0
#: the transaction holds the whole state: allow it the broker's longest (transaction.max.timeout.ms)
TRANSACTION_TIMEOUT_MS = 900_000
ATTEMPTS, RETRY_S = 10, 0.5
GROUP_ID_NOT_FOUND = 69  # a group that never existed: no member
#: (partition, changelog key) -> value
Changelog = dict[tuple[int, bytes], bytes]


class StateRebuildError(ProcessorError):
    """The state cannot be rebuilt now (a processor instance running)."""


@dataclass
class StateRebuild:
    events: int
    cases: int
    state_records: int  # values and tombstones written to the changelog
    view_records: int  # views, follow-up index and schedule records written
    offsets: int  # partitions whose offset was committed
    read_to_end: int  # of which the group had no offset: read to their end
    removed: Path | None  # the local state folder removed (None: there was none)
    seconds: float

    def summary(self) -> str:
        local = f"local state {self.removed} removed" if self.removed else "no local state to remove"
        return (f"state rebuilt: {self.events} events read, {self.cases} cases, {self.state_records} state records written, "
                f"{self.view_records} views records written, {self.offsets} offsets committed "
                f"({self.read_to_end} without a previous offset: read to their end); {local} ({self.seconds:.1f}s)")


def cut(committed: Mapping[tuple[str, int], int], ends: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Where the rebuild stops and the processor resumes, per partition of `ends`: the committed
    offset, or the end where there is none (-1) or it is past the end (a topic created again)."""
    return {tp: end if committed.get(tp, -1) < 0 else min(committed[tp], end) for tp, end in ends.items()}


def changelog_of(states: rb.States) -> Changelog:
    """The rebuilt stores as the changelog records Quix restores them from."""
    return {(partition, store_key(case, key)): value for (partition, case), data in states.items() for key, value in data.items()}


def floor_ms(catalogue: Catalogue, now: datetime) -> int:
    """The time no record is processed before: the oldest tick the clock topic may still hold."""
    retention = int(catalogue.topic("clock-ticks").config.get("retention.ms", "-1"))
    return int(now.timestamp() * 1000) - retention if retention > 0 else 0


async def group_members(kafka: KafkaAccess, group: str) -> list[str]:
    """The members of `group` (client id and host), through an admin request (never a member)."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    try:
        await admin.start()
        for _ in range(ATTEMPTS):
            try:
                groups = [g for r in await admin.describe_consumer_groups([group]) for g in r.to_object()["groups"]]
            except KafkaError as exc:  # its coordinator moving: ask again
                if not getattr(exc, "retriable", False):
                    raise
            else:  # an error of the group itself: its coordinator loading, most likely
                if not any(g["error_code"] not in (0, GROUP_ID_NOT_FOUND) for g in groups):
                    return [f"{m['client_id']}@{m['client_host']}" for g in groups for m in g["members"]]
            await asyncio.sleep(RETRY_S)
    except KafkaError as exc:
        raise ClusterError(f"describing the group {group}: {exc}") from exc
    finally:
        await admin.close()
    raise ClusterError(f"describing the group {group}: no answer after {ATTEMPTS} attempts")


async def wait_without_members(kafka: KafkaAccess, group: str, wait_s: float = MEMBERS_WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while members := await group_members(kafka, group):
        if time.monotonic() > deadline:
            raise StateRebuildError(f"the processor's consumer group {group} has active members ({', '.join(members)}): "
                                    f"stop every processor instance first")
        await asyncio.sleep(RETRY_S)


async def read_changelog(kafka: KafkaAccess, topic: str) -> Changelog:
    """The latest committed value per (partition, key) of the processor's store in the changelog."""
    out: Changelog = {}
    async for records in read_to_end(kafka, [topic]):
        for r in records:
            if dict(r.headers or []).get("__column_family__") != b"default":
                continue
            if r.value is None:
                out.pop((r.partition, r.key), None)
            else:
                out[(r.partition, r.key)] = r.value
    return out


async def rebuild_state(catalogue: Catalogue, kafka: KafkaAccess, policy: KindPolicy, state_dir: Path, *,
                        wait_s: float = MEMBERS_WAIT_S, workers: int | None = None,
                        progress: rb.Progress | None = None) -> StateRebuild:
    """Steps 1-5 of the module docstring. The state folder is locked from the start (a processor
    using it makes this fail) and its store removed once the transaction has committed."""
    t0 = time.monotonic()
    group = group_id(catalogue)
    lock = claim_state_dir(state_dir)
    try:
        await wait_without_members(kafka, group, wait_s)
        core = RecordProcessor(catalogue, policy)
        topics = core.input_topics(catalogue)
        ends = await end_offsets(kafka, topics)
        committed = await committed_offsets(kafka, group, ends)
        until = cut(committed, ends)
        now = datetime.now(UTC)
        scope = rb.Scope(tuple(topics), until, whole_step=True, floor_ms=floor_ms(catalogue, now),
                         kept=frozenset({core.followups, core.schedule}))
        result = await rb.rebuild(catalogue, kafka, policy, progress=progress, workers=workers, scope=scope)
        changelog = catalogue.topic("case-state").name
        state = rb.changed(await read_changelog(kafka, changelog), changelog_of(result.states))
        views = {(catalogue.per_structure("views", slug).name, key): v for (slug, key), v in result.views.items()}
        outputs = rb.changed(await read_latest(kafka, [*core.views.values(), *scope.kept]), {**views, **result.latest})
        await _publish(catalogue, kafka, group, changelog, state, outputs, until)
        removed = _remove_local(state_dir, group)
    finally:
        lock.close()
    return StateRebuild(result.events, result.cases, len(state), len(outputs), len(until),
                        sum(1 for tp, end in ends.items() if committed.get(tp, -1) < 0 and end > 0), removed, time.monotonic() - t0)


async def _publish(catalogue: Catalogue, kafka: KafkaAccess, group: str, changelog: str,
                   state: Iterable[tuple[tuple[int, bytes], bytes | None]],
                   outputs: Iterable[tuple[tuple[str, bytes], bytes | None]], offsets: Mapping[tuple[str, int], int]) -> None:
    """One transaction: the changelog records, the outputs, the group's offsets."""
    producer = kafka.producer(transactional_id=catalogue.group_id("processor", "-state-rebuild"), linger_ms=50,
                              max_request_size=16 * 1024 * 1024, transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
    try:
        await producer.start()
        async with producer.transaction():
            for (partition, key), value in state:
                await producer.send(changelog, value, key=key, partition=partition, headers=CHANGELOG_HEADERS)
            for (topic, key), value in outputs:
                await producer.send(topic, value, key=key)
            await producer.send_offsets_to_transaction({TopicPartition(t, p): n for (t, p), n in offsets.items()}, group)
    except KafkaError as exc:
        raise ClusterError(f"writing the rebuilt state: {exc} (nothing was committed: run it again)") from exc
    finally:
        await producer.stop()


def _remove_local(state_dir: Path, group: str) -> Path | None:
    """The local state (Quix's stores are in `<state_dir>/<group>`) and the lineage it recorded (the
    processor records the cluster's on start); the stores' folder if there was one."""
    stores = state_dir / group
    found = stores.exists()
    discard_state(state_dir)
    (state_dir / LINEAGE_FILE).unlink(missing_ok=True)
    return stores if found else None
