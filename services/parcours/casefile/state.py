"""A case's state: the set of its events by `event_id`. Folding is commutative and idempotent."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from parcours.contract.models import Event


def order_key(e: Event) -> tuple[datetime, UUID]:
    """The one total order used everywhere: occurrence time, then event id (UUIDs compare by value)."""
    return (e.occurred_at, e.event_id)


@dataclass(frozen=True)
class CaseState:
    case_id: str
    events: dict[str, Event] = field(default_factory=dict)

    @property
    def version(self) -> int:
        """How many distinct events the case holds: grows with the case, independent of order."""
        return len(self.events)

    def ordered(self) -> list[Event]:
        return sorted(self.events.values(), key=order_key)

    def has(self, event_id: str) -> bool:
        return event_id in self.events


def fold(state: CaseState, event: Event) -> CaseState:
    """Add `event` to the state. A duplicate `event_id` changes nothing; if two different payloads
    share an id (a bad producer), the same one wins whatever the arrival order."""
    eid = str(event.event_id)
    known = state.events.get(eid)
    if known is not None and (known == event or canonical_digest(known) <= canonical_digest(event)):
        return state
    return CaseState(state.case_id, {**state.events, eid: event})


def fold_all(case_id: str, events: list[Event]) -> CaseState:
    state = CaseState(case_id)
    for e in events:
        state = fold(state, e)
    return state


def canonical_digest(e: Event) -> str:
    """Decides between two payloads sharing an event id: a digest, so that stores keep it small."""
    return hashlib.blake2b((e.event_type + e.model_dump_json(exclude=_unset_identity(e))).encode(), digest_size=16).hexdigest()


#: fields added by later schema versions (ReferralSubmitted v2's person identity, ConsentRecorded
#: v2's proof): left out of the digest when unset, so an event written before them keeps its
#: digest (a replay is still a duplicate, not a twin)
_PERSON_FIELDS = ("identity", "identity_sealed", "person_key")


def _unset_identity(e: Event) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    person = getattr(e, "person", None)
    if person is not None and (unset := {f for f in _PERSON_FIELDS if getattr(person, f) is None}):
        out["person"] = unset
    if getattr(e, "proof", "") is None:
        out["proof"] = True
    return out or None
