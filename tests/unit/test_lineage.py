"""A cache's lineage: which differences between what it was built from and the live cluster make
it unusable (`lineage.mismatch`), and the processor's state folder discarded for them."""

from __future__ import annotations

from pathlib import Path

from parcours.bus.lineage import Lineage, adopt, change, mismatch
from parcours.processors.statelineage import LINEAGE_FILE, discard_state

BUILT = Lineage("cluster-A", {"views.dac-31": "id-1", "inbox.dac-31": "id-2"})


def test_the_same_cluster_and_topics_match() -> None:
    assert mismatch(BUILT, Lineage("cluster-A", dict(BUILT.topics))) is None


def test_a_topic_that_appeared_since_is_no_mismatch_and_joins_the_lineage() -> None:
    live = Lineage("cluster-A", {**BUILT.topics, "audit": "id-3"})
    assert mismatch(BUILT, live) is None
    assert BUILT.covering(live).topics == live.topics


def test_another_cluster_is_a_mismatch() -> None:
    why = mismatch(BUILT, Lineage("cluster-B", dict(BUILT.topics)))
    assert why is not None
    assert why.reason == "cluster"


def test_a_topic_created_again_is_a_mismatch() -> None:
    why = mismatch(BUILT, Lineage("cluster-A", {**BUILT.topics, "inbox.dac-31": "id-9"}))
    assert why is not None
    assert why.reason == "topic"
    assert "inbox.dac-31" in why.detail


def test_a_topic_deleted_is_a_mismatch() -> None:
    why = mismatch(BUILT, Lineage("cluster-A", {"views.dac-31": "id-1"}))
    assert why is not None
    assert why.reason == "topic"
    assert "no longer exists" in why.detail


def test_a_cache_that_recorded_nothing_is_a_mismatch() -> None:
    why = mismatch(None, Lineage("cluster-A", {}))
    assert why is not None
    assert why.reason == "unrecorded"


def test_a_lineage_survives_its_text_and_bad_text_is_none() -> None:
    assert Lineage.loads(BUILT.dumps()) == BUILT
    assert Lineage.loads("not json") is None
    assert Lineage.loads('{"cluster_id": "x"}') is None
    assert Lineage.loads(None) is None


def test_discarding_the_state_keeps_the_lock_and_the_lineage(tmp_path: Path) -> None:
    (tmp_path / "default" / "case-state" / "0").mkdir(parents=True)
    (tmp_path / "default" / "case-state" / "0" / "CURRENT").write_text("x")
    (tmp_path / ".instance.lock").write_text("")
    (tmp_path / LINEAGE_FILE).write_text(BUILT.dumps())
    discard_state(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".instance.lock", LINEAGE_FILE]


def test_a_new_cache_adopts_the_live_lineage_and_a_matching_one_keeps_its_own() -> None:
    live = Lineage("cluster-A", {**BUILT.topics, "audit": "id-3"})
    assert adopt(None, live, has_data=False) == (None, live)
    assert adopt(BUILT, live, has_data=True) == (None, BUILT.covering(live))
    foreign, lineage = adopt(None, live, has_data=True)
    assert foreign is not None
    assert foreign.reason == "unrecorded"
    assert lineage == live


def test_a_running_reader_starts_again_on_a_mismatch_or_a_topic_that_appeared() -> None:
    assert change(BUILT, Lineage("cluster-A", dict(BUILT.topics))) is None
    assert change(BUILT, Lineage("cluster-A", {**BUILT.topics, "audit": "id-3"})) == "topic audit appeared"
    assert change(BUILT, Lineage("cluster-B", dict(BUILT.topics))) is not None
