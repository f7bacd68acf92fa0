"""The consent rules of DESIGN.md section 3, as pure functions.

1. Author: a structure always sees the items it authored.
2. Referral parties: sender, recipient (and a redirection's target) see the referral, its status
   changes and its admission decisions.
3. Consent: any other item of category X is visible to S only while an active permit for X covers S
   (by slug or by kind) and no active deny for X covers S. Deny wins. Past `valid_until` a consent
   is inactive. The recorder of a permit holds the same permit.
4. Kind ceiling: categories hidden from S's kind are never shown to S (except its own items).
Also decided here: a consent is visible to the structures it names (they must know what they may
see), like a referral to its parties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from parcours.contract.models import (
    AdmissionDecided,
    ConsentRecorded,
    Event,
    ReferralStatusChanged,
    ReferralSubmitted,
)
from parcours.casefile.state import CaseState


@dataclass(frozen=True)
class Viewer:
    slug: str
    kind: str


@dataclass(frozen=True)
class Policy:
    """Kind ceilings: categories never shown to a kind (topics/policy.yaml)."""

    hidden: Mapping[str, frozenset[str]] = field(default_factory=dict)


def covers(grantee: str, viewer: Viewer) -> bool:
    return grantee in (viewer.slug, viewer.kind)


def active(consent: ConsentRecorded, now: datetime) -> bool:
    return consent.valid_until is None or now < consent.valid_until


@dataclass(frozen=True)
class CaseIndex:
    """What the rules need from a state, computed once per state."""

    referral_parties: dict[str, frozenset[str]]
    consents: tuple[ConsentRecorded, ...]

    @classmethod
    def of(cls, state: CaseState) -> CaseIndex:
        parties: dict[str, set[str]] = {}
        consents = []
        for e in state.events.values():
            if isinstance(e, ReferralSubmitted):
                parties.setdefault(e.referral_id, set()).update({e.source, e.to_structure})
            elif isinstance(e, ReferralStatusChanged) and e.redirect_to:
                parties.setdefault(e.referral_id, set()).add(e.redirect_to)
            elif isinstance(e, ConsentRecorded):
                consents.append(e)
        # a status change or decision without its referral: its author is the only party known
        return cls({k: frozenset(v) for k, v in parties.items()}, tuple(consents))

    def parties(self, referral_id: str) -> frozenset[str]:
        return self.referral_parties.get(referral_id, frozenset())

    def consented(self, viewer: Viewer, category: str, now: datetime) -> bool:
        permitted = denied = False
        for c in self.consents:
            if category not in c.categories or not active(c, now):
                continue
            if c.decision == "deny":
                if covers(c.grantee, viewer):
                    denied = True
            elif covers(c.grantee, viewer) or c.source == viewer.slug:
                permitted = True
        return permitted and not denied


def may_see(event: Event, viewer: Viewer, index: CaseIndex, policy: Policy, now: datetime) -> bool:
    if event.source == viewer.slug:
        return True  # rule 1
    if isinstance(event, (ReferralSubmitted, ReferralStatusChanged, AdmissionDecided)):
        if viewer.slug in index.parties(event.referral_id):
            return True  # rule 2
    if isinstance(event, ConsentRecorded) and covers(event.grantee, viewer):
        return True
    if event.category in policy.hidden.get(viewer.kind, frozenset()):
        return False  # rule 4
    return index.consented(viewer, event.category, now)  # rules 3 and 5


def next_change(state: CaseState, now: datetime) -> datetime | None:
    """The next instant at which a view may change without a new event (a consent expiring)."""
    upcoming = [
        e.valid_until
        for e in state.events.values()
        if isinstance(e, ConsentRecorded) and e.valid_until is not None and e.valid_until > now
    ]
    return min(upcoming, default=None)


def concerned(state: CaseState, kinds: Mapping[str, str]) -> set[str]:
    """Every registered structure that may see something of the case (kinds: slug -> kind)."""
    out: set[str] = set()
    for e in state.events.values():
        out.add(e.source)
        if isinstance(e, ReferralSubmitted):
            out.add(e.to_structure)
        elif isinstance(e, ReferralStatusChanged) and e.redirect_to:
            out.add(e.redirect_to)
        elif isinstance(e, ConsentRecorded):
            out.update(slug for slug, kind in kinds.items() if e.grantee in (slug, kind))
    return {s for s in out if s in kinds}
