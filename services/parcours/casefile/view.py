"""Projection of a case state into one structure's view: the specification of a view.

A view is plain JSON-ready data. Every item carries its own id; `items` lists the keys of what is
visible (`<kind>:<id>`), which is what notifications and redaction notices talk about.
`render` gives an item's entry; the incremental case file uses it too, so an entry is shaped in
one place. `incremental.assemble` must give exactly what `project` gives (a property test).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from parcours.casefile.policy import CaseIndex, Policy, Viewer, may_see, permitted, to_ms
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


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")


def render(e: Event) -> dict[str, Any]:
    """An item's entry in a view, as the event gives it. A referral gets its status and histories
    from its status and admission items; a consent's `active` flag depends on the clock
    (`with_clock`); statuses and admissions name their referral."""
    meta = {"event_id": str(e.event_id), "by": e.source, "at": iso(e.occurred_at), "category": e.category}
    if isinstance(e, ReferralSubmitted):
        return {"referral_id": e.referral_id, "from": e.source, "to": e.to_structure,
                "person": e.person.model_dump(mode="json"), "reasons": list(e.reasons), "urgency": e.urgency,
                "context": e.context.model_dump(mode="json") if e.context else None, "summary": e.summary, **meta}
    if isinstance(e, ReferralStatusChanged):
        return {"referral_id": e.referral_id, "status": e.status, "reason": e.reason, "redirect_to": e.redirect_to, **meta}
    if isinstance(e, AdmissionDecided):
        return {"referral_id": e.referral_id, "decision": e.decision, "volet": e.volet,
                "start_date": e.start_date.isoformat() if e.start_date else None, "reasons": list(e.reasons), **meta}
    if isinstance(e, EvaluationRecorded):
        return {"evaluation_id": e.evaluation_id, "type": e.type, "results": dict(e.results), "gir": e.gir, **meta}
    if isinstance(e, MessagePosted):
        return {"message_id": e.message_id, "body": e.body, "reply_to": e.reply_to, **meta}
    if isinstance(e, ConsentRecorded):
        return {"consent_id": e.consent_id, "grantee": e.grantee, "categories": list(e.categories),
                "decision": e.decision, "valid_until": iso(e.valid_until), "method": e.method, **meta}
    if isinstance(e, RuptureReported):
        return {"rupture_id": e.rupture_id, "territory": e.territory, "type": e.type, "description": e.description, **meta}
    raise TypeError(f"no entry for {type(e).__name__}")  # pragma: no cover - every type is listed


def with_clock(entry: dict[str, Any], until_ms: int | None, now_ms: int) -> dict[str, Any]:
    """A consent's entry at `now`: whether it is still active."""
    return {**entry, "active": until_ms is None or now_ms < until_ms}


def project(state: CaseState, viewer: Viewer, policy: Policy, now: datetime) -> View | None:
    """The view of `viewer`, or None when nothing of the case is visible to it (rule 6)."""
    index = CaseIndex.of(state)
    now_ms = to_ms(now)
    allowed = permitted(viewer, index.consents, policy, now_ms)
    visible = [e for e in state.ordered() if may_see(e, viewer, index, allowed)]
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
            referrals[e.referral_id] = {**render(e), "status": "submitted", "status_history": [], "admission": None,
                                        "admission_history": []}
    for e in latest.values():
        if isinstance(e, (ReferralStatusChanged, AdmissionDecided)):
            ref = referrals.setdefault(e.referral_id, unknown_referral(e.referral_id))
            entry = {k: v for k, v in render(e).items() if k != "referral_id"}
            if isinstance(e, ReferralStatusChanged):
                ref["status_history"].append(entry)
                ref["status"] = e.status
            else:
                ref["admission_history"].append(entry)
                ref["admission"] = entry
        elif isinstance(e, EvaluationRecorded):
            evaluations.append(render(e))
        elif isinstance(e, MessagePosted):
            messages.append(render(e))
        elif isinstance(e, ConsentRecorded):
            consents.append(with_clock(render(e), to_ms(e.valid_until) if e.valid_until else None, now_ms))
        elif isinstance(e, RuptureReported):
            ruptures.append(render(e))
    return {
        "case_id": state.case_id,
        "structure": viewer.slug,
        # events visible to this structure: the whole case's count would reveal hidden activity
        "version": len(visible),
        "updated_at": iso(max(order_key(e) for e in visible)[0]),
        "referrals": list(referrals.values()),
        "evaluations": evaluations,
        "messages": messages,
        "consents": consents,
        "ruptures": ruptures,
        "items": sorted(latest),
    }


def unknown_referral(referral_id: str) -> dict[str, Any]:
    """A status or decision the viewer may see whose referral it may not (or that is not in yet)."""
    return {"referral_id": referral_id, "status": None, "status_history": [], "admission": None, "admission_history": []}
