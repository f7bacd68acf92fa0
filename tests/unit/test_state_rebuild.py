"""`state rebuild` without a broker: where it cuts, what it writes, and that Quix's own recovery
code, fed those records, puts in RocksDB exactly the bytes the live step had put there."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from quixstreams.state.recovery import RecoveryPartition
from quixstreams.state.rocksdb import RocksDBOptions, RocksDBStorePartition

from parcours.contract.codec import Codec
from parcours.processors import rebuild as rb
from parcours.processors.core import MemoryState, RecordProcessor
from parcours.processors.quixstate import CaseState
from parcours.processors.staterebuild import CHANGELOG_HEADERS, changelog_of, cut, floor_ms
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import default_policy
from tests.factories import T0, ev

NOW = datetime(2026, 11, 3, tzinfo=UTC)


class _Message:
    """A changelog record as Quix's recovery loop receives it from confluent-kafka."""

    def __init__(self, key: bytes, value: bytes | None, offset: int, headers: list[tuple[str, bytes]]) -> None:
        self._key, self._value, self._offset, self._headers = key, value, offset, headers

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


@pytest.fixture
def partitions(tmp_path: Path) -> Iterator[tuple[RocksDBStorePartition, RocksDBStorePartition]]:
    live = RocksDBStorePartition(str(tmp_path / "live"), RocksDBOptions())
    restored = RocksDBStorePartition(str(tmp_path / "restored"), RocksDBOptions())
    yield live, restored
    live.close()
    restored.close()


def _contents(partition: RocksDBStorePartition) -> dict[bytes, bytes]:
    return {k: v for k, v in partition.get_or_create_column_family("default").items() if isinstance(k, bytes)}


def _restore(partition: RocksDBStorePartition, records: list[tuple[bytes, bytes | None]], first_offset: int = 0) -> None:
    """Records through Quix's RecoveryPartition, as its recovery loop applies them."""
    rp = RecoveryPartition("p.case-state", 0, partition, committed_offsets={}, lowwater=first_offset,
                           highwater=first_offset + len(records))
    for i, (key, value) in enumerate(records):
        rp.recover_from_changelog_message(_Message(key, value, first_offset + i, list(CHANGELOG_HEADERS)))  # type: ignore[arg-type]
    rp.complete_recovery()


def _story() -> list[Any]:
    return [
        ev("ReferralSubmitted", case_id="case-1", source="cpts-31-nord", to_structure="dac-31", referral_id="r1"),
        ev("MessagePosted", case_id="case-1", source="dac-31", message_id="m1", at=1),
        ev("ConsentRecorded", case_id="case-1", source="dac-31", consent_id="c1", grantee="crt", at=2,
           categories=["functional"], decision="permit"),
        ev("EvaluationRecorded", case_id="case-1", source="dac-31", evaluation_id="e1", at=3),
        ev("ReferralSubmitted", case_id="case-2", source="dac-31", to_structure="crt-31-muret", referral_id="r2", at=4),
        ev("ReferralStatusChanged", case_id="case-2", source="crt-31-muret", referral_id="r2", status="accepted", at=5),
    ]


def test_the_restored_store_holds_the_live_steps_bytes(partitions: tuple[RocksDBStorePartition, RocksDBStorePartition]) -> None:
    live, restored = partitions
    cat = Catalogue.load(prefix="p")
    core = RecordProcessor(cat, default_policy())
    codec = Codec()
    memory: dict[tuple[int, bytes], MemoryState] = {}
    for offset, event in enumerate(_story()):
        enc = codec.encode(event)
        topic = cat.for_event(event.event_type).name
        # the live path: Quix's transaction over RocksDB, one checkpoint per record
        tx = live.begin()
        state = tx.as_state(prefix=enc.key)
        assert CaseState.supported(state)
        step = core.process(topic, 0, offset, enc.key, enc.value, enc.headers, partial(CaseState, state), NOW)
        assert not step.dead_letter
        tx.prepare(processed_offsets=None)
        tx.flush()
        # the rebuild's path: the same step over a MemoryState per (partition, case)
        again = core.process(topic, 0, offset, enc.key, enc.value, enc.headers,
                             partial(memory.setdefault, (0, enc.key), MemoryState()), NOW)
        assert again.outputs == step.outputs
    records = sorted(changelog_of({where: s.data for where, s in memory.items()}).items())
    _restore(restored, [(key, value) for (_, key), value in records])
    assert _contents(restored) == _contents(live)
    assert len(_contents(live)) > 10  # the story writes indexes, items and event ids
    # and read back as the processor reads it
    tx = restored.begin()
    assert CaseState(tx.as_state(prefix=b"case-1")).get_bytes("idx") == memory[(0, b"case-1")].data["idx"]


def test_writing_what_differs_over_an_old_changelog_ends_on_the_rebuilt_state(
        partitions: tuple[RocksDBStorePartition, RocksDBStorePartition]) -> None:
    _, store = partitions
    old = {(0, b'case-1|"idx"'): b"old", (0, b'case-1|"gone"'): b"x", (0, b'case-2|"same"'): b"s"}
    new = {(0, b'case-1|"idx"'): b"new", (0, b'case-2|"same"'): b"s", (0, b'case-3|"idx"'): b"3"}
    _restore(store, [(k, v) for (_, k), v in old.items()])  # a store that had read the old changelog
    todo = rb.changed(old, new)
    assert todo == [((0, b'case-1|"gone"'), None), ((0, b'case-1|"idx"'), b"new"), ((0, b'case-3|"idx"'), b"3")]
    _restore(store, [(k, v) for (_, k), v in todo], first_offset=len(old))
    assert _contents(store) == {k: v for (_, k), v in new.items()}


def test_the_cut_is_where_the_processor_stopped_or_the_end() -> None:
    ends = {("p.referrals", 0): 10, ("p.referrals", 1): 7, ("p.clock-ticks", 0): 5, ("p.messages", 0): 0}
    committed = {("p.referrals", 0): 4, ("p.referrals", 1): -1, ("p.clock-ticks", 0): 9, ("p.messages", 0): -1}
    # a committed offset past the end: the topic was created again since
    assert cut(committed, ends) == {("p.referrals", 0): 4, ("p.referrals", 1): 7, ("p.clock-ticks", 0): 5, ("p.messages", 0): 0}


def test_changelog_keys_are_quix_keys_on_the_cases_partition() -> None:
    states = {(3, b"case-1"): {"idx": b"{}", "e:ev-1": b'"k"'}, (0, b"case-2"): {"idx": b"[]"}}
    assert changelog_of(states) == {(3, b'case-1|"idx"'): b"{}", (3, b'case-1|"e:ev-1"'): b'"k"', (0, b'case-2|"idx"'): b"[]"}


def test_records_are_processed_no_earlier_than_the_oldest_tick_kept() -> None:
    cat = Catalogue.load(prefix="p")
    retention = int(cat.topic("clock-ticks").config["retention.ms"])
    assert floor_ms(cat, T0) == int(T0.timestamp() * 1000) - retention
