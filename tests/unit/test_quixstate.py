"""The processor's fast case store against Quix's public State, on a real RocksDB partition: the
same answers for reads of staged, committed, deleted and missing keys, and the same bytes on disk
(a Quix upgrade that changes what the fast path relies on fails here, not in production)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from quixstreams.state.rocksdb import RocksDBOptions, RocksDBStorePartition

from parcours.processors.core import MemoryState
from parcours.processors.quixstate import CaseState


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[RocksDBStorePartition]:
    p = RocksDBStorePartition(str(tmp_path / "p"), RocksDBOptions())
    yield p
    p.close()


def _state(tx: Any, prefix: bytes) -> Any:
    """The public State of a case (Quix types its keys as bytes; the processor's are str, as JSON)."""
    return tx.as_state(prefix=prefix)


def _commit(tx: Any) -> None:
    tx.prepare(processed_offsets=None)
    tx.flush()


def test_the_fast_path_is_taken_on_this_quix(partition: RocksDBStorePartition) -> None:
    state = _state(partition.begin(), b"case-1")
    assert CaseState.supported(state)
    assert CaseState(state)._fast  # noqa: SLF001 - what this test is about


def test_fast_and_public_paths_agree(partition: RocksDBStorePartition) -> None:
    tx = partition.begin()
    public = _state(tx, b"case-1")
    assert CaseState.supported(public)
    fast = CaseState(public)
    fast.set_bytes("idx", b"one")
    public.set_bytes("k:message:m1", b"two")
    other_case = CaseState(_state(tx, b"case-2"))
    # read-your-writes within the checkpoint, both ways, and a key of another case is not seen
    assert public.get_bytes("idx") == b"one"
    assert fast.get_bytes("k:message:m1") == b"two"
    assert other_case.get_bytes("idx") is None
    assert fast.get_bytes("e:missing") is None
    assert fast.get_bytes("e:missing", b"default") == b"default"
    public.delete("k:message:m1")
    assert fast.get_bytes("k:message:m1") is None
    _commit(tx)
    # committed: read back from RocksDB by both, written under the same key bytes
    tx2 = partition.begin()
    public2 = _state(tx2, b"case-1")
    fast2 = CaseState(public2)
    assert fast2.get_bytes("idx") == public2.get_bytes("idx") == b"one"
    assert fast2.get_bytes("k:message:m1") is None
    fast2.set_bytes("idx", b"three")  # a staged write shadows the committed one
    assert public2.get_bytes("idx") == b"three"
    keys = [k for k, _ in partition.get_or_create_column_family("default").items() if isinstance(k, bytes) and k.startswith(b"case-1|")]
    assert keys == [b'case-1|"idx"']


def test_a_closed_transaction_is_refused_as_quix_refuses_it(partition: RocksDBStorePartition) -> None:
    from quixstreams.state.exceptions import StateTransactionError

    tx = partition.begin()
    state = _state(tx, b"case-1")
    assert CaseState.supported(state)
    fast = CaseState(state)
    _commit(tx)
    with pytest.raises(StateTransactionError):
        fast.get_bytes("idx")
    with pytest.raises(StateTransactionError):
        fast.set_bytes("idx", b"x")


def test_without_the_internals_the_public_state_is_used() -> None:
    assert not CaseState.supported(MemoryState())  # a BytesState with none of Quix's internals

def test_an_empty_prefix_gives_quix_key_bytes(partition: RocksDBStorePartition) -> None:
    tx = partition.begin()
    public = _state(tx, b"")
    assert CaseState.supported(public)
    CaseState(public).set_bytes("idx", b"one")
    assert public.get_bytes("idx") == b"one"
    _commit(tx)
    assert CaseState(_state(partition.begin(), b"")).get_bytes("idx") == b"one"
