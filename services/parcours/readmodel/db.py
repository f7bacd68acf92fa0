"""The edge's read model on disk: SQLite in WAL mode, one file per adapter instance.

What the tail reads from Kafka is applied in batches, each in one SQLite transaction that also
stores the Kafka position reached on every partition of the batch: after a restart (or a crash
at any instant) the file holds exactly the records before those positions, so the tail resumes
there instead of at offset 0. Kafka stays the truth; the file is a cache that can be deleted.

One writer (a single worker thread: `apply` blocks) and any number of readers (WAL: a reader
never waits for the writer and sees whole batches only). Memory is SQLite's page cache, whatever
the number of cases; every lookup the HTTP edge makes goes through an index.

Tables:
- `items(slug, case_id, item)`: the view item records (`views.<slug>`, key `<case_id>/<item>`);
- `referrals(slug, referral_id)`: the case of each referral item, maintained with `items`;
- `inbox(slug, sequence)`: the notifications (sequence = offset + 1 on `inbox.<slug>`);
- `observatory(key)`, `webhooks(key)`: the compacted topics of the same names;
- `disclosures(author, case_id, n)`: audit records of the items each structure authored;
- `datakeys(key_id)`: the persons' wrapped data keys (`identity-keys`); a destroyed key keeps its
  row without its record (person and record NULL), so it is known destroyed, not awaited;
- `activity(key_id, case_id)`: the last activity of each case under each data key (`person-activity`);
- `positions(topic, partition)`: the next offset to read; `meta`: schema version, last sync, and
  the lineage (cluster and topic ids) of what was read.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parcours.contract.directory import decode_offer
from parcours.contract.errors import DecodeError
from parcours.readmodel.errors import StoreError

log = logging.getLogger("parcours.adapter.store")

#: bump when the tables change: an older file is emptied and read again from Kafka
SCHEMA_VERSION = 2  # the directory and followups tables came in without a bump: created if missing, their topics read from their beginning

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions(topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
                                     PRIMARY KEY(topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items(slug TEXT NOT NULL, case_id TEXT NOT NULL, item TEXT NOT NULL, record TEXT NOT NULL,
                                 PRIMARY KEY(slug, case_id, item)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_case ON items(case_id);
CREATE TABLE IF NOT EXISTS referrals(slug TEXT NOT NULL, referral_id TEXT NOT NULL, case_id TEXT NOT NULL,
                                     PRIMARY KEY(slug, referral_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox(slug TEXT NOT NULL, sequence INTEGER NOT NULL, note TEXT NOT NULL,
                                 PRIMARY KEY(slug, sequence)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS observatory(key TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhooks(key TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS directory(key TEXT PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS followups(person TEXT NOT NULL, case_id TEXT NOT NULL, followers TEXT NOT NULL,
                                     PRIMARY KEY(person, case_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datakeys(key_id TEXT PRIMARY KEY, person TEXT, record TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS datakeys_by_person ON datakeys(person);
CREATE TABLE IF NOT EXISTS activity(key_id TEXT NOT NULL, case_id TEXT NOT NULL, last_ms INTEGER NOT NULL,
                                    PRIMARY KEY(key_id, case_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS disclosures(author TEXT NOT NULL, case_id TEXT NOT NULL, n INTEGER NOT NULL, record TEXT NOT NULL,
                                       PRIMARY KEY(author, case_id, n)) WITHOUT ROWID;
"""
_TABLES = ("positions", "items", "referrals", "inbox", "observatory", "webhooks", "disclosures", "directory", "followups",
           "datakeys", "activity")


@dataclass(frozen=True)
class Record:
    """What the tail hands over: one Kafka record, already routed to its table."""

    table: str  # items | inbox | observatory | webhooks | audit | directory | followups | datakeys
    slug: str  # the structure of a views/inbox topic ("" otherwise)
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes | None


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a process crash loses nothing committed; a power loss may lose the last
        # batches, with their positions: they are read again from Kafka
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the read model at {path}: {exc}") from exc
    return conn


class Writer:
    """The one connection that writes (used from a single thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = _connect(path)
        self.conn.executescript(_DDL)
        if self._meta("schema") != str(SCHEMA_VERSION):
            self.reset(f"schema {self._meta('schema')} -> {SCHEMA_VERSION}")

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def reset(self, why: str) -> None:
        """Forget everything: the tail reads every topic again from the beginning."""
        del why  # the caller logs it
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        for t in _TABLES:
            c.execute(f"DELETE FROM {t}")  # noqa: S608 - table names are constants
        c.execute("INSERT OR REPLACE INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
        c.execute("DELETE FROM meta WHERE key IN ('synced_at', 'lineage')")
        c.execute("COMMIT")

    def lineage(self) -> str | None:
        """What the file was read from (`lineage.Lineage`, as JSON), None before it is recorded."""
        return self._meta("lineage")

    def record_lineage(self, lineage: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES('lineage', ?)", (lineage,))

    def positions(self) -> dict[tuple[str, int], int]:
        return {(t, p): o for t, p, o in self.conn.execute("SELECT topic, partition, next_offset FROM positions")}

    def synced_at(self) -> float | None:
        value = self._meta("synced_at")
        return float(value) if value else None

    def prune_inbox(self, slug: str, first_sequence: int) -> int:
        """Forget the notifications Kafka no longer holds (its retention deleted them): the cache
        keeps nothing longer than the topic it mirrors. Returns the rows deleted."""
        cur = self.conn.execute("DELETE FROM inbox WHERE slug=? AND sequence<?", (slug, first_sequence))
        return cur.rowcount

    def stamp(self) -> None:
        """Record that the file held every record up to the end offsets at this time (`synced_at`:
        a file whose stamp is older than the tombstones' lifetime may have missed a deletion)."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES('synced_at', ?)", (repr(time.time()),))

    def apply(self, records: Iterable[Record], positions: dict[tuple[str, int], int], authors: frozenset[str]) -> int:
        """Apply `records` and store `positions`, in one transaction. Returns the inbox rows added."""
        c = self.conn
        added = 0
        c.execute("BEGIN IMMEDIATE")
        try:
            for r in records:
                added += self._apply(r, authors)
            c.executemany("INSERT OR REPLACE INTO positions VALUES(?, ?, ?)", [(t, p, o) for (t, p), o in positions.items()])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return added

    def _apply(self, r: Record, authors: frozenset[str]) -> int:
        c = self.conn
        if r.table == "items":
            case_id, _, item = r.key.partition("/")
            referral = item[len("referral:"):] if item.startswith("referral:") else None
            if r.value is None:
                c.execute("DELETE FROM items WHERE slug=? AND case_id=? AND item=?", (r.slug, case_id, item))
                if referral is not None:
                    c.execute("DELETE FROM referrals WHERE slug=? AND referral_id=?", (r.slug, referral))
            else:
                c.execute("INSERT OR REPLACE INTO items VALUES(?, ?, ?, ?)", (r.slug, case_id, item, r.value.decode()))
                if referral is not None:
                    c.execute("INSERT OR REPLACE INTO referrals VALUES(?, ?, ?)", (r.slug, referral, case_id))
        elif r.table == "inbox":
            if r.value is not None:
                c.execute("INSERT OR REPLACE INTO inbox VALUES(?, ?, ?)", (r.slug, r.offset + 1, r.value.decode()))
                return 1
        elif r.table in ("observatory", "webhooks"):
            if r.value is None:
                c.execute(f"DELETE FROM {r.table} WHERE key=?", (r.key,))  # noqa: S608 - two constant names
            else:
                c.execute(f"INSERT OR REPLACE INTO {r.table} VALUES(?, ?)", (r.key, r.value.decode()))
        elif r.table in ("directory", "followups", "datakeys", "activity"):  # the territory's shared topics
            {"directory": self._offer, "followups": self._follow_up}.get(r.table, self._identity)(r)
        elif r.table == "audit" and r.value is not None:
            record = json.loads(r.value)
            if record.get("author") in authors and record.get("change") != "accessed":
                # n: the record's place on the audit topic, so disclosures keep Kafka's order
                c.execute("INSERT OR REPLACE INTO disclosures VALUES(?, ?, ?, ?)",
                          (record["author"], r.key, r.partition * 2**40 + r.offset, r.value.decode()))
        return 0

    def _identity(self, r: Record) -> None:
        """A person's data key (a tombstone: destroyed, its row kept without the key), or a case's
        last activity under a data key."""
        c = self.conn
        if r.table == "datakeys":
            person = json.loads(r.value).get("person") if r.value is not None else None
            c.execute("INSERT OR REPLACE INTO datakeys VALUES(?, ?, ?)", (r.key, person, r.value.decode() if r.value else None))
            return
        key_id, _, case_id = r.key.partition("/")
        if r.value is None:
            c.execute("DELETE FROM activity WHERE key_id=? AND case_id=?", (key_id, case_id))
        elif r.value.isdigit():
            c.execute("INSERT OR REPLACE INTO activity VALUES(?, ?, ?)", (key_id, case_id, int(r.value)))

    def _offer(self, r: Record) -> None:
        """An offer of the directory (Avro), kept as JSON; a tombstone withdraws it. A record that
        is not an offer (the adapters validate what they publish) is skipped, and said."""
        if r.value is None:
            self.conn.execute("DELETE FROM directory WHERE key=?", (r.key,))
            return
        try:
            offer = decode_offer(r.value)
        except DecodeError:
            log.warning("a directory record that is not an offer was skipped", extra={"offset": r.offset})
            return
        if offer.key != r.key:  # an offer is only its own structure's: a value claiming another key is not kept
            log.warning("a directory record whose key is not its offer's was skipped", extra={"offset": r.offset})
            return
        self.conn.execute("INSERT OR REPLACE INTO directory VALUES(?, ?)", (r.key, offer.model_dump_json()))

    def _follow_up(self, r: Record) -> None:
        """An entry of the follow-up index (`<person digest>/<case_id>`: the structures following);
        a tombstone: nobody follows that case any more."""
        person, _, case_id = r.key.partition("/")
        if r.value is None:
            self.conn.execute("DELETE FROM followups WHERE person=? AND case_id=?", (person, case_id))
            return
        try:
            followers = [str(s) for s in json.loads(r.value)["followers"]]
        except (ValueError, KeyError, TypeError):
            log.warning("a follow-up record that is not one was skipped", extra={"offset": r.offset})
            return
        self.conn.execute("INSERT OR REPLACE INTO followups VALUES(?, ?, ?)", (person, case_id, json.dumps(followers)))

    def close(self) -> None:
        self.conn.close()


class Reader:
    """Queries, on a connection of their own (each statement sees the last committed batch)."""

    def __init__(self, path: Path) -> None:
        self.conn = _connect(path)

    def items(self, slug: str, case_id: str) -> list[dict[str, Any]]:
        return [json.loads(v) for (v,) in self.conn.execute(
            "SELECT record FROM items WHERE slug=? AND case_id=?", (slug, case_id))]

    def cases(self, slug: str, after: str = "", limit: int = -1) -> list[str]:
        return [c for (c,) in self.conn.execute(
            "SELECT DISTINCT case_id FROM items WHERE slug=? AND case_id>? ORDER BY case_id LIMIT ?", (slug, after, limit))]

    def has_case(self, slug: str, case_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM items WHERE slug=? AND case_id=? LIMIT 1", (slug, case_id)).fetchone() is not None

    def case_exists(self, case_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM items WHERE case_id=? LIMIT 1", (case_id,)).fetchone() is not None

    def referral_case(self, slug: str, referral_id: str) -> str | None:
        row = self.conn.execute("SELECT case_id FROM referrals WHERE slug=? AND referral_id=?", (slug, referral_id)).fetchone()
        return str(row[0]) if row else None

    def notifications(self, slug: str, after: int, limit: int) -> list[dict[str, Any]]:
        out = []
        for seq, note in self.conn.execute(
                "SELECT sequence, note FROM inbox WHERE slug=? AND sequence>? ORDER BY sequence LIMIT ?", (slug, after, limit)):
            n = json.loads(note)
            n["sequence"] = seq
            out.append(n)
        return out

    def inbox_counts(self) -> Iterator[tuple[str, int, int]]:
        """(slug, notifications held, last sequence) per structure."""
        yield from self.conn.execute("SELECT slug, COUNT(*), MAX(sequence) FROM inbox GROUP BY slug")

    def observatory_counts(self) -> list[tuple[str, str, str, int]]:
        return list(self.conn.execute(
            "SELECT json_extract(record, '$.territory') AS t, json_extract(record, '$.week') AS w, "
            "json_extract(record, '$.type') AS ty, COUNT(*) FROM observatory GROUP BY t, w, ty ORDER BY t, w, ty"))

    def webhook(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT record FROM webhooks WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def followups(self, person: str) -> list[tuple[str, list[str]]]:
        """The follow-up index's entries of a person (digest): (case_id, structures following)."""
        return [(c, json.loads(f)) for c, f in self.conn.execute(
            "SELECT case_id, followers FROM followups WHERE person=? ORDER BY case_id", (person,))]

    def data_key(self, key_id: str) -> tuple[str | None] | None:
        """A data key's record (None inside: destroyed); None: never seen."""
        row = self.conn.execute("SELECT record FROM datakeys WHERE key_id=?", (key_id,)).fetchone()
        return (row[0],) if row else None

    def person_keys(self, person: str) -> list[tuple[str, str]]:
        """(key id, record) of a person's live data keys."""
        return list(self.conn.execute("SELECT key_id, record FROM datakeys WHERE person=? AND record IS NOT NULL", (person,)))

    def idle_keys(self, before_ms: int) -> list[str]:
        """The live data keys of every person whose last activity (in any case under any of their
        keys, or the making of their newest key) is before `before_ms`."""
        return [k for (k,) in self.conn.execute(
            "WITH last AS (SELECT d.person, MAX(MAX(json_extract(d.record, '$.created_ms'), COALESCE(a.last_ms, 0))) AS ms "
            "FROM datakeys d LEFT JOIN activity a ON a.key_id = d.key_id WHERE d.record IS NOT NULL GROUP BY d.person) "
            "SELECT d.key_id FROM datakeys d JOIN last ON last.person = d.person WHERE d.record IS NOT NULL AND last.ms < ? "
            "ORDER BY d.key_id", (before_ms,))]

    def directory(self) -> list[str]:
        """Every offer of the directory, as JSON."""
        return [v for (v,) in self.conn.execute("SELECT record FROM directory ORDER BY key")]

    def disclosures(self, author: str, case_id: str) -> list[dict[str, Any]]:
        return [json.loads(v) for (v,) in self.conn.execute(
            "SELECT record FROM disclosures WHERE author=? AND case_id=? ORDER BY n", (author, case_id))]

    def close(self) -> None:
        self.conn.close()
