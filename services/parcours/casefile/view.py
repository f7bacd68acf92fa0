"""Projection of a case state into one structure's view: the specification of a view.

A view is plain JSON-ready data. Every item carries its own id; `items` lists the keys of what is
visible (`<kind>:<id>`), which is what notifications and redaction notices talk about.
`render` gives an item's entry; the incremental case file uses it too, so an entry is shaped in
one place. `incremental.assemble` must give exactly what `project` gives (a property test).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from parcours.casefile.policy import CaseIndex, Policy, Viewer, may_see, permitted, to_ms
from parcours.casefile.state import CaseState, order_key
from parcours.contract.models import (
    AdmissionDecided,
    CommissionOpened,
    ConsentRecorded,
    EvaluationRecorded,
    Event,
    MessagePosted,
    OpinionGiven,
    Person,
    ReferralStatusChanged,
    ReferralSubmitted,
    RuptureReported,
)

View = dict[str, Any]


def item_key(e: Event) -> str:
    """Status changes and admission decisions are history entries: their id is the event id. A
    structure has one opinion per commission: a later one replaces it."""
    if isinstance(e, ReferralStatusChanged):
        return f"status:{e.event_id}"
    if isinstance(e, AdmissionDecided):
        return f"admission:{e.event_id}"
    if isinstance(e, OpinionGiven):
        return f"opinion:{e.commission_id}:{e.source}"
    return f"{_KIND[type(e)]}:{e.item_id}"


_KIND: dict[type, str] = {
    ReferralSubmitted: "referral",
    EvaluationRecorded: "evaluation",
    MessagePosted: "message",
    ConsentRecorded: "consent",
    RuptureReported: "rupture",
    CommissionOpened: "commission",
}

#: items that belong to a referral's entry, and the list of the entry each goes to
REFERRAL_LISTS = {"status": "status_history", "admission": "admission_history", "commission": "commissions", "opinion": "opinions"}


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")


def person_entry(person: Person) -> dict[str, Any]:
    """A referral's person in a view: the pseudonymous fields, and the identity only sealed (with
    the person key); an identity in clear is never shown (the edge seals it before it publishes)."""
    return person.model_dump(mode="json", exclude_none=True, exclude={"identity"})


def render(e: Event) -> dict[str, Any]:
    """An item's entry in a view, as the event gives it. A referral gets its status and histories
    from its status and admission items; a consent's `active` flag depends on the clock
    (`with_clock`); statuses, admissions, commissions and opinions name their referral."""
    meta = {"event_id": str(e.event_id), "by": e.source, "at": iso(e.occurred_at), "category": e.category}
    return {**_FIELDS[type(e)](e), **meta}


_FIELDS: dict[type, Callable[[Any], dict[str, Any]]] = {
    ReferralSubmitted: lambda e: {
        "referral_id": e.referral_id, "from": e.source, "to": e.to_structure, "person": person_entry(e.person),
        "reasons": list(e.reasons), "urgency": e.urgency, "context": e.context.model_dump(mode="json") if e.context else None,
        "summary": e.summary},
    ReferralStatusChanged: lambda e: {"referral_id": e.referral_id, "status": e.status, "reason": e.reason, "redirect_to": e.redirect_to},
    AdmissionDecided: lambda e: {
        "referral_id": e.referral_id, "decision": e.decision, "volet": e.volet,
        "start_date": e.start_date.isoformat() if e.start_date else None, "reasons": list(e.reasons),
        # only when a refusal proposes one: the entries of decisions recorded before it existed stay as they were
        **({"alternative": e.alternative} if e.alternative else {})},
    CommissionOpened: lambda e: {
        "referral_id": e.referral_id, "commission_id": e.commission_id, "invited": list(e.invited),
        "opinion_deadline": iso(e.opinion_deadline), "question": e.question},
    OpinionGiven: lambda e: {"referral_id": e.referral_id, "commission_id": e.commission_id, "opinion": e.opinion, "comment": e.comment},
    EvaluationRecorded: lambda e: {"evaluation_id": e.evaluation_id, "type": e.type, "results": dict(e.results), "gir": e.gir},
    MessagePosted: lambda e: {"message_id": e.message_id, "body": e.body, "reply_to": e.reply_to},
    ConsentRecorded: lambda e: {
        "consent_id": e.consent_id, "grantee": e.grantee, "categories": list(e.categories), "decision": e.decision,
        "valid_until": iso(e.valid_until), "method": e.method},
    RuptureReported: lambda e: {"rupture_id": e.rupture_id, "territory": e.territory, "type": e.type, "description": e.description},
}


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
            referrals[e.referral_id] = referral_entry(render(e))
    for key, e in latest.items():
        kind = key.split(":", 1)[0]
        if kind in REFERRAL_LISTS:
            add_to_referral(referrals, kind, render(e))
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


def referral_entry(rendered: dict[str, Any], status: str | None = "submitted") -> dict[str, Any]:
    """A referral's entry before its statuses, decisions, commissions and opinions are added."""
    return {**rendered, "status": status, "admission": None, **{field: [] for field in REFERRAL_LISTS.values()}}


def unknown_referral(referral_id: str) -> dict[str, Any]:
    """A status, decision, commission or opinion the viewer may see whose referral it may not (or
    that is not in yet)."""
    return referral_entry({"referral_id": referral_id}, status=None)


def add_to_referral(referrals: dict[str, dict[str, Any]], kind: str, entry: dict[str, Any]) -> None:
    """A referral item (`kind`: status, admission, commission, opinion) into its referral's entry,
    in the order given (the items' order in the case)."""
    ref = referrals.get(entry["referral_id"])
    if ref is None:
        ref = referrals[entry["referral_id"]] = unknown_referral(entry["referral_id"])
    entry = {k: v for k, v in entry.items() if k != "referral_id"}
    ref[REFERRAL_LISTS[kind]].append(entry)
    if kind == "status":
        ref["status"] = entry["status"]
    elif kind == "admission":
        ref["admission"] = entry
