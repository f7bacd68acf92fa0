"""What the incremental case file (`incremental`) writes, and how a view is read back from it:
one record per item of a structure's view (`ItemRecord`), notifications (`Notice`), audit records
(`AuditRecord`), all of one step's outputs (`Outcome`), and `assemble`, which turns a structure's
item records back into its view (equal to `view.project` of the same events)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from parcours.casefile.deadlines import LateAnswer, Overdue
from parcours.casefile.followups import FollowUp
from parcours.casefile.policy import from_ms
from parcours.casefile.view import REFERRAL_LISTS, View, add_to_referral, iso, referral_entry


class ItemRecord(NamedTuple):
    """One item of one structure's view of a case; `value` None: the item left the view."""

    structure: str
    case_id: str
    item: str
    value: bytes | None

    @property
    def key(self) -> str:
        return f"{self.case_id}/{self.item}"


class Notice(NamedTuple):
    """A notification: ids only, never content."""

    structure: str
    case_id: str
    body: dict[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS)


class AuditRecord(NamedTuple):
    """A change in what a structure may see (`disclosed`, `withdrawn`) and its legal basis: ids,
    kinds and reasons only, never content; `audit_id` is deterministic (a replay writes the same)."""

    case_id: str
    body: dict[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS)


@dataclass
class Outcome:
    items: list[ItemRecord] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    #: the case's next consent expiry or referral deadline changed: (case_id, due ms or None)
    schedule: tuple[str, int | None] | None = None
    duplicate: bool = False
    #: referrals a tick found past their deadline without an answer (each reported once)
    overdue: list[Overdue] = field(default_factory=list)
    #: a referral's first answer, after its deadline
    late: LateAnswer | None = None
    #: an overdue referral whose answer turned out to be in time: its mark is withdrawn
    retract: Overdue | None = None
    #: the case's entries in the territory's follow-up index changed (followups.py)
    follow_up: FollowUp | None = None
    #: the case's activity under the data keys of its sealed identities (the retention clock):
    #: (key ids, last activity ms), at most once a day (followups.activity)
    activity: tuple[tuple[str, ...], int] | None = None


def assemble(case_id: str, structure: str, records: Iterable[dict[str, Any]]) -> View | None:
    """A structure's view of a case from its item records: equal to `project` of the same events."""
    recs = sorted(records, key=lambda r: (r["first"][0], r["first"][1]))
    if not recs:
        return None
    referrals: dict[str, dict[str, Any]] = {}
    lists: dict[str, list[dict[str, Any]]] = {"evaluation": [], "message": [], "consent": [], "rupture": []}
    for r in recs:
        if r["item"].startswith("referral:"):
            e = r["entry"]
            referrals[e["referral_id"]] = referral_entry(e)
    for r in recs:
        kind = r["item"].split(":", 1)[0]
        if kind in REFERRAL_LISTS:
            add_to_referral(referrals, kind, r["entry"])
        elif kind in lists:
            lists[kind].append(r["entry"])
    last = max(recs, key=lambda r: (r["last"][0], r["last"][1]))
    return {
        "case_id": case_id,
        "structure": structure,
        "version": sum(r["n"] for r in recs),
        "updated_at": iso(from_ms(last["last"][0])),
        "referrals": list(referrals.values()),
        "evaluations": lists["evaluation"],
        "messages": lists["message"],
        "consents": lists["consent"],
        "ruptures": lists["rupture"],
        "items": sorted(r["item"] for r in recs),
    }
