"""Projection of a case state into one structure's view, and what changed between two views.

A view is plain JSON-ready data. Every item carries its own id; `items` lists the keys of what is
visible (`<kind>:<id>`), which is what notifications and redaction notices talk about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from parcours.casefile.policy import CaseIndex, Policy, Viewer, may_see
from parcours.casefile.state import CaseState, order_key
from parcours.contract.models import (
    AdmissionDecided,
    ConsentRecorded,
    EvaluationRecorded,
    Event,
    MessagePosted,
    ReferralStatusChanged,
    ReferralSubmitted,
    RuptureReported,
)

View = dict[str, Any]


def item_key(e: Event) -> str:
    """Status changes and admission decisions are history entries: their id is the event id."""
    if isinstance(e, ReferralStatusChanged):
        return f"status:{e.event_id}"
    if isinstance(e, AdmissionDecided):
        return f"admission:{e.event_id}"
    return f"{_KIND[type(e)]}:{e.item_id}"


_KIND: dict[type, str] = {
    ReferralSubmitted: "referral",
    EvaluationRecorded: "evaluation",
    MessagePosted: "message",
    ConsentRecorded: "consent",
    RuptureReported: "rupture",
}


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")


def _meta(e: Event) -> dict[str, Any]:
    return {"event_id": str(e.event_id), "by": e.source, "at": _iso(e.occurred_at), "category": e.category}


def _entry(p: Prepared, e: Event, build: Any) -> dict[str, Any]:
    """An item's rendered entry, shared by every structure that sees it (copied: views mutate referrals)."""
    key = id(e)
    if key not in p.entries:
        p.entries[key] = build(e)
    return p.entries[key]


@dataclass
class Prepared:
    """What every structure's projection of one state shares: computed once per state."""

    ordered: list[Event]
    index: CaseIndex
    entries: dict[int, dict[str, Any]]  # id(event) -> rendered entry, filled lazily

    @classmethod
    def of(cls, state: CaseState) -> Prepared:
        return cls(state.ordered(), CaseIndex.of(state), {})


def project(state: CaseState, viewer: Viewer, policy: Policy, now: datetime, prepared: Prepared | None = None) -> View | None:
    """The view of `viewer`, or None when nothing of the case is visible to it (rule 6)."""
    p = prepared or Prepared.of(state)
    index = p.index
    visible = [e for e in p.ordered if may_see(e, viewer, index, policy, now)]
    if not visible:
        return None
    # one entry per item id: a later event with the same item id corrects the earlier one
    latest: dict[str, Event] = {}
    for e in visible:
        latest[item_key(e)] = e
    referrals: dict[str, dict[str, Any]] = {}
    evaluations, messages, consents, ruptures = [], [], [], []
    for e in latest.values():
        if isinstance(e, ReferralSubmitted):
            referrals[e.referral_id] = {
                "referral_id": e.referral_id, "from": e.source, "to": e.to_structure,
                "person": e.person.model_dump(mode="json"), "reasons": list(e.reasons),
                "urgency": e.urgency, "context": e.context.model_dump(mode="json") if e.context else None,
                "summary": e.summary, "status": "submitted", "status_history": [], "admission": None,
                "admission_history": [], **_meta(e),
            }
    for e in latest.values():
        if isinstance(e, ReferralStatusChanged):
            ref = referrals.setdefault(e.referral_id, _unknown_referral(e.referral_id))
            ref["status_history"].append({"status": e.status, "reason": e.reason, "redirect_to": e.redirect_to, **_meta(e)})
            ref["status"] = e.status
        elif isinstance(e, AdmissionDecided):
            ref = referrals.setdefault(e.referral_id, _unknown_referral(e.referral_id))
            decision = {"decision": e.decision, "volet": e.volet, "start_date": e.start_date.isoformat() if e.start_date else None,
                        "reasons": list(e.reasons), **_meta(e)}
            ref["admission_history"].append(decision)
            ref["admission"] = decision
        elif isinstance(e, EvaluationRecorded):
            evaluations.append(_entry(p, e, lambda e: {"evaluation_id": e.evaluation_id, "type": e.type,
                                                       "results": dict(e.results), "gir": e.gir, **_meta(e)}))
        elif isinstance(e, MessagePosted):
            messages.append(_entry(p, e, lambda e: {"message_id": e.message_id, "body": e.body, "reply_to": e.reply_to, **_meta(e)}))
        elif isinstance(e, ConsentRecorded):
            consents.append({"consent_id": e.consent_id, "grantee": e.grantee, "categories": list(e.categories),
                             "decision": e.decision, "valid_until": _iso(e.valid_until), "method": e.method,
                             "active": e.valid_until is None or now < e.valid_until, **_meta(e)})
        elif isinstance(e, RuptureReported):
            ruptures.append({"rupture_id": e.rupture_id, "territory": e.territory, "type": e.type,
                             "description": e.description, **_meta(e)})
    return {
        "case_id": state.case_id,
        "structure": viewer.slug,
        # events visible to this structure: the whole case's count would reveal hidden activity
        "version": len(visible),
        "updated_at": _iso(max(order_key(e) for e in visible)[0]),
        "referrals": list(referrals.values()),
        "evaluations": evaluations,
        "messages": messages,
        "consents": consents,
        "ruptures": ruptures,
        "items": sorted(latest),
    }


def _unknown_referral(referral_id: str) -> dict[str, Any]:
    """A status or decision the viewer may see whose referral it may not (or that is not in yet)."""
    return {"referral_id": referral_id, "status": None, "status_history": [], "admission": None, "admission_history": []}


@dataclass(frozen=True)
class ViewChange:
    structure: str
    view: View | None  # None: tombstone
    appeared: list[str]
    vanished: list[str]


def change(structure: str, before: set[str], view: View | None) -> ViewChange:
    after = set(view["items"]) if view else set()
    return ViewChange(structure, view, sorted(after - before), sorted(before - after))
