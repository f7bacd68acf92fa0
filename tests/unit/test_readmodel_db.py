"""The edge's read model on disk (SQLite): batches and positions commit together, a reopened
file resumes where it stopped, lookups follow tombstones. No Kafka."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from parcours.readmodel import db
from parcours.readmodel.db import Reader, Record, Writer

VIEWS, INBOX = "p.views.dac-31", "p.inbox.dac-31"


def item(case_id: str, item_key: str, offset: int, value: dict[str, object] | None) -> Record:
    return Record("items", "dac-31", VIEWS, 0, offset, f"{case_id}/{item_key}",
                  None if value is None else json.dumps(value).encode())


def note(offset: int, notification_id: str) -> Record:
    return Record("inbox", "dac-31", INBOX, 0, offset, "case-1", json.dumps({"notification_id": notification_id}).encode())


def test_a_batch_and_its_positions_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    w = Writer(path)
    added = w.apply([item("case-1", "referral:r1", 0, {"item": "referral:r1"}), note(0, "n1"), note(1, "n2")],
                    {(VIEWS, 0): 1, (INBOX, 0): 2}, frozenset({"dac-31"}))
    assert added == 2
    w.close()

    w2, r = Writer(path), Reader(path)
    assert w2.positions() == {(VIEWS, 0): 1, (INBOX, 0): 2}
    assert r.items("dac-31", "case-1") == [{"item": "referral:r1"}]
    assert r.referral_case("dac-31", "r1") == "case-1"
    assert [n["sequence"] for n in r.notifications("dac-31", 0, 10)] == [1, 2]  # offset + 1
    assert [n["notification_id"] for n in r.notifications("dac-31", 1, 10)] == ["n2"]
    assert list(r.inbox_counts()) == [("dac-31", 2, 2)]


def test_a_tombstone_removes_the_item_and_its_referral_index(tmp_path: Path) -> None:
    w, r = Writer(tmp_path / "s"), Reader(tmp_path / "s")
    w.apply([item("case-1", "referral:r1", 0, {"item": "referral:r1"}), item("case-1", "message:m1", 1, {"item": "m"})],
            {(VIEWS, 0): 2}, frozenset())
    w.apply([item("case-1", "referral:r1", 2, None)], {(VIEWS, 0): 3}, frozenset())
    assert r.referral_case("dac-31", "r1") is None
    assert r.items("dac-31", "case-1") == [{"item": "m"}]
    assert r.cases("dac-31") == ["case-1"]
    assert r.case_exists("case-1")
    assert not r.case_exists("case-2")
    w.apply([item("case-1", "message:m1", 3, None)], {(VIEWS, 0): 4}, frozenset())
    assert r.cases("dac-31") == []
    assert not r.case_exists("case-1")


def test_a_failed_batch_leaves_neither_its_records_nor_its_positions(tmp_path: Path) -> None:
    w, r = Writer(tmp_path / "s"), Reader(tmp_path / "s")
    w.apply([note(0, "n1")], {(INBOX, 0): 1}, frozenset())
    bad = Record("audit", "", "p.audit", 0, 7, "case-1", b"not json")
    with pytest.raises(ValueError, match="Expecting value"):
        w.apply([note(1, "n2"), bad], {(INBOX, 0): 2}, frozenset({"dac-31"}))
    assert w.positions() == {(INBOX, 0): 1}
    assert [n["notification_id"] for n in r.notifications("dac-31", 0, 10)] == ["n1"]


def test_disclosures_keep_the_records_of_their_authors_in_order(tmp_path: Path) -> None:
    w, r = Writer(tmp_path / "s"), Reader(tmp_path / "s")

    def audit(offset: int, author: str, change: str) -> Record:
        return Record("audit", "", "p.audit", 0, offset, "case-1",
                      json.dumps({"author": author, "change": change, "n": offset}).encode())

    w.apply([audit(5, "dac-31", "received"), audit(3, "cpts-31-nord", "received"), audit(9, "dac-31", "accessed"),
             audit(12, "dac-31", "withdrawn")], {("p.audit", 0): 13}, frozenset({"dac-31"}))
    assert [d["n"] for d in r.disclosures("dac-31", "case-1")] == [5, 12]  # theirs, never `accessed`
    assert r.disclosures("cpts-31-nord", "case-1") == []


def test_an_older_schema_is_emptied_and_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s"
    Writer(path).apply([note(0, "n1")], {(INBOX, 0): 1}, frozenset())
    monkeypatch.setattr(db, "SCHEMA_VERSION", db.SCHEMA_VERSION + 1)
    w = Writer(path)
    assert w.positions() == {}
    assert w.synced_at() is None
    assert Reader(path).notifications("dac-31", 0, 10) == []


def test_the_observatory_is_counted_in_the_database(tmp_path: Path) -> None:
    w, r = Writer(tmp_path / "s"), Reader(tmp_path / "s")
    marks = [Record("observatory", "", "p.observatory", 0, i, f"m{i}",
                    json.dumps({"territory": "31", "week": "2026-W48", "type": t}).encode())
             for i, t in enumerate(["unanswered_referral", "unanswered_referral", "no_gp"])]
    w.apply(marks, {("p.observatory", 0): 3}, frozenset())
    assert r.observatory_counts() == [("31", "2026-W48", "no_gp", 1), ("31", "2026-W48", "unanswered_referral", 2)]


def test_lookups_use_indexes(tmp_path: Path) -> None:
    """The edge's lookups by referral and by case never scan a table."""
    Writer(tmp_path / "s")
    conn = sqlite3.connect(tmp_path / "s")
    plans = [" ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {q}", args)) for q, args in (
        ("SELECT case_id FROM referrals WHERE slug=? AND referral_id=?", ("a", "b")),
        ("SELECT record FROM items WHERE slug=? AND case_id=?", ("a", "b")),
        ("SELECT 1 FROM items WHERE case_id=? LIMIT 1", ("a",)),
        ("SELECT sequence, note FROM inbox WHERE slug=? AND sequence>? ORDER BY sequence LIMIT ?", ("a", 0, 5)),
    )]
    assert all("SCAN" not in p for p in plans), plans


def test_only_a_caught_up_tail_stamps_the_last_sync(tmp_path: Path) -> None:
    """`synced_at` means "held everything up to then": a batch halfway through a catch-up does not
    renew it (a file behind by more than the tombstones' lifetime is read again)."""
    w = Writer(tmp_path / "s")
    w.apply([note(0, "n1")], {(INBOX, 0): 1}, frozenset())
    assert w.synced_at() is None
    w.stamp()
    assert w.synced_at() is not None


def test_notifications_kafka_no_longer_holds_are_forgotten(tmp_path: Path) -> None:
    w, r = Writer(tmp_path / "s"), Reader(tmp_path / "s")
    w.apply([note(0, "n1"), note(1, "n2"), note(2, "n3")], {(INBOX, 0): 3}, frozenset())
    assert w.prune_inbox("dac-31", 3) == 2  # the topic now begins at offset 2: sequence 3
    assert [n["notification_id"] for n in r.notifications("dac-31", 0, 10)] == ["n3"]
