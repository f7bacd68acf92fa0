"""The consent rules of docs/consent-rules.md, as pure functions: the one place they are written.

1. Author: a structure always sees the items it authored.
2. Referral parties: sender, recipient (and a redirection's target, and the structures an admission
   commission invites) see the referral, its status changes, its admission decisions, its
   commissions and their opinions.
3. Consent: any other item of category X is visible to S only while a permit for X in force covers S
   (by slug or by kind) and no deny for X in force covers S. For one grantee (a slug, or a kind) and
   one category, the person's latest active declaration (by `occurred_at`, then `event_id`) is the
   one in force: a renewed permit replaces an earlier deny, a deny withdraws an earlier permit.
   Between the declarations in force for S's slug and for its kind, deny wins. Past `valid_until` a
   consent is inactive (an earlier declaration is then in force again). The recorder of a permit in
   force holds it too.
4. Kind ceiling: categories hidden from S's kind are never shown to S (except its own items).
Also decided here: a consent is visible to the structures it names (they must know what they may
see), like a referral to its parties.

The rules work on plain values (`Terms` of a consent, an item's source, type, referral and
category), so that the projection of a whole case (`view.project`, the specification) and the
incremental case file (`incremental`, what the processor runs) apply the very same code.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from parcours.casefile.state import CaseState
from parcours.contract.models import (
    CATEGORIES,
    AdmissionDecided,
    CommissionOpened,
    ConsentRecorded,
    Event,
    OpinionGiven,
    ReferralStatusChanged,
    ReferralSubmitted,
)

#: the events whose item belongs to a referral (rule 2): each carries the referral's id
REFERRAL_EVENTS = (ReferralSubmitted, ReferralStatusChanged, AdmissionDecided, CommissionOpened, OpinionGiven)
REFERRAL_TYPES = frozenset(e.event_type for e in REFERRAL_EVENTS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch (event times are whole milliseconds)."""
    return (dt - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + _MS * ms


@dataclass(frozen=True)
class Viewer:
    slug: str
    kind: str


@dataclass(frozen=True)
class Policy:
    """Kind ceilings: categories never shown to a kind; referral deadlines: how long a referral of
    each urgency may wait for its first answer, in ms (topics/policy.yaml)."""

    hidden: Mapping[str, frozenset[str]] = field(default_factory=dict)
    deadlines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Terms:
    """What the rules need of a consent."""

    grantee: str
    source: str
    categories: tuple[str, ...]
    decision: str
    until_ms: int | None
    #: when the person declared it, and the event's id: the order of declarations (rule 3)
    at_ms: int = 0
    event_id: str = ""
    consent_id: str = ""

    @classmethod
    def of(cls, c: ConsentRecorded) -> Terms:
        return cls(c.grantee, c.source, tuple(c.categories), c.decision,
                   to_ms(c.valid_until) if c.valid_until else None, to_ms(c.occurred_at), str(c.event_id), c.consent_id)

    @property
    def order(self) -> tuple[int, str]:
        return (self.at_ms, self.event_id)

    def active(self, now_ms: int) -> bool:
        return self.until_ms is None or now_ms < self.until_ms


def covers(grantee: str, viewer: Viewer) -> bool:
    return grantee in (viewer.slug, viewer.kind)


def in_force(consents: Iterable[Terms], category: str, now_ms: int) -> dict[str, Terms]:
    """Per grantee (slug or kind), the declaration in force for `category`: the latest active one."""
    out: dict[str, Terms] = {}
    for c in consents:
        if category in c.categories and c.active(now_ms):
            current = out.get(c.grantee)
            if current is None or c.order > current.order:
                out[c.grantee] = c
    return out


class Basis(NamedTuple):
    """Why an item is shown to a structure (`author`, `referral_party` with the referral id,
    `consent` with the consent id), or why not (`no_consent`, `denied` with the deny's consent id,
    `kind_ceiling`). Views and notifications carry ids only; the audit carries this."""

    shown: bool
    reason: str
    ref: str | None = None


def by_consent(viewer: Viewer, consents: Iterable[Terms], policy: Policy, now_ms: int) -> dict[str, Basis]:
    """Per category, what rules 3 to 5 decide for `viewer` about others' items, and on which basis."""
    hidden = policy.hidden.get(viewer.kind, frozenset())
    consents = list(consents)
    out: dict[str, Basis] = {}
    for cat in CATEGORIES:
        if cat in hidden:
            out[cat] = Basis(False, "kind_ceiling")
            continue
        force = in_force(consents, cat, now_ms)
        mine = [force[g] for g in (viewer.slug, viewer.kind) if g in force]
        deny = next((c for c in mine if c.decision == "deny"), None)
        permit = next((c for c in mine if c.decision == "permit"), None) or next(
            (c for c in force.values() if c.decision == "permit" and c.source == viewer.slug), None)
        if deny is not None:  # deny wins between the slug's and the kind's declarations
            out[cat] = Basis(False, "denied", deny.consent_id)
        elif permit is not None:
            out[cat] = Basis(True, "consent", permit.consent_id)
        else:
            out[cat] = Basis(False, "no_consent")
    return out


def permitted(viewer: Viewer, consents: Iterable[Terms], policy: Policy, now_ms: int) -> frozenset[str]:
    """The categories `viewer` may see of others' items by consent, under its kind's ceiling
    (rules 3, 4 and 5)."""
    return frozenset(cat for cat, b in by_consent(viewer, consents, policy, now_ms).items() if b.shown)


def own(viewer: Viewer, source: str, event_type: str, parties: Collection[str], referral_id: str | None,
         grantee: str | None, consent_id: str | None) -> Basis | None:
    """Rules that need no consent: the author (1), a referral's parties (2), a consent's grantee;
    None when only consent can decide (`by_consent`, for the item's category)."""
    if source == viewer.slug:
        return Basis(True, "author")
    if event_type in REFERRAL_TYPES and viewer.slug in parties:
        return Basis(True, "referral_party", referral_id)
    if event_type == "ConsentRecorded" and grantee is not None and covers(grantee, viewer):
        return Basis(True, "consent", consent_id)  # a consent is visible to the structures it names
    return None


def sees(viewer: Viewer, *, source: str, event_type: str, category: str, parties: Collection[str],
         grantee: str | None, allowed: frozenset[str]) -> bool:
    """Whether `viewer` sees an item. `parties`: those of the item's referral (rule 2);
    `grantee`: a consent's; `allowed`: `permitted(viewer, ...)` at the instant considered."""
    return own(viewer, source, event_type, parties, None, grantee, None) is not None or category in allowed


def basis(viewer: Viewer, *, source: str, event_type: str, category: str, parties: Collection[str],
          referral_id: str | None, grantee: str | None, consent_id: str | None, consented: Mapping[str, Basis]) -> Basis:
    """`sees`, with its reason: `consented` is `by_consent(viewer, ...)` at the instant considered."""
    return own(viewer, source, event_type, parties, referral_id, grantee, consent_id) or consented[category]


def concerned_by(source: str, named: Iterable[str | None], grantee: str | None, kinds: Mapping[str, str]) -> set[str]:
    """The registered structures an item may make see something: its author, the structures it
    names (a referral's recipient, a redirection's target) and those a consent's grantee covers."""
    out = {source, *(s for s in named if s)}
    if grantee is not None:
        out.update(slug for slug, kind in kinds.items() if grantee in (slug, kind))
    return {s for s in out if s in kinds}


def next_expiry(consents: Iterable[Terms], now_ms: int) -> int | None:
    """The next instant (ms) at which a consent expires, strictly after `now_ms`."""
    return min((c.until_ms for c in consents if c.until_ms is not None and c.until_ms > now_ms), default=None)


# --- the rules over a whole case state (the specification's path) ---------------------
@dataclass(frozen=True)
class CaseIndex:
    """What the rules need from a state, computed once per state."""

    referral_parties: dict[str, frozenset[str]]
    consents: tuple[Terms, ...]

    @classmethod
    def of(cls, state: CaseState) -> CaseIndex:
        parties: dict[str, set[str]] = {}
        consents = []
        for e in state.events.values():
            if isinstance(e, ReferralSubmitted):
                parties.setdefault(e.referral_id, set()).update({e.source, e.to_structure})
            elif isinstance(e, ReferralStatusChanged) and e.redirect_to:
                parties.setdefault(e.referral_id, set()).add(e.redirect_to)
            elif isinstance(e, CommissionOpened):
                parties.setdefault(e.referral_id, set()).update(e.invited)
            elif isinstance(e, ConsentRecorded):
                consents.append(Terms.of(e))
        # a status change or decision without its referral: its author is the only party known
        return cls({k: frozenset(v) for k, v in parties.items()}, tuple(consents))

    def parties(self, referral_id: str) -> frozenset[str]:
        return self.referral_parties.get(referral_id, frozenset())


def may_see(event: Event, viewer: Viewer, index: CaseIndex, allowed: frozenset[str]) -> bool:
    """`sees` for an event of a case; `allowed`: `permitted(viewer, index.consents, ...)`."""
    referral = event.referral_id if isinstance(event, REFERRAL_EVENTS) else None
    return sees(viewer, source=event.source, event_type=event.event_type, category=event.category,
                parties=index.parties(referral) if referral else frozenset(),
                grantee=event.grantee if isinstance(event, ConsentRecorded) else None, allowed=allowed)


def next_change(state: CaseState, now: datetime) -> datetime | None:
    """The next instant at which a view may change without a new event (a consent expiring)."""
    due = next_expiry(CaseIndex.of(state).consents, to_ms(now))
    return None if due is None else from_ms(due)


def concerned(state: CaseState, kinds: Mapping[str, str]) -> set[str]:
    """Every registered structure that may see something of the case (kinds: slug -> kind)."""
    out: set[str] = set()
    for e in state.events.values():
        out |= concerned_by(e.source, named_by(e), e.grantee if isinstance(e, ConsentRecorded) else None, kinds)
    return out


def named_by(e: Event) -> tuple[str | None, ...]:
    """The structures an event names besides its author: a referral's recipient, a redirection's
    target, the structures a commission invites (each becomes a party of the referral)."""
    if isinstance(e, ReferralSubmitted):
        return (e.to_structure,)
    if isinstance(e, ReferralStatusChanged):
        return (e.redirect_to,)
    if isinstance(e, CommissionOpened):
        return tuple(e.invited)
    return ()
