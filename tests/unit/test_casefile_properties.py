"""Property tests: over random histories of events, consents, revocations, duplicates and
reorderings, no view holds an item its structure may not see, and views do not depend on order.

The oracle below restates docs/consent-rules.md plainly and independently of parcours.casefile.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcours.casefile.policy import Policy, Viewer
from parcours.casefile.state import fold_all
from parcours.casefile.view import item_key, project
from parcours.contract.models import Event, build_event
from tests.factories import DEFAULTS, T0

VIEWERS = [Viewer("dac-31", "dac"), Viewer("cpts-31-nord", "cpts"), Viewer("cpts-31-sud", "cpts"),
           Viewer("crt-31-muret", "crt"), Viewer("crt-31-nord", "crt")]
SLUGS = [v.slug for v in VIEWERS]
HIDDEN = {"cpts": {"social", "medical", "functional"}}
POLICY = Policy({k: frozenset(v) for k, v in HIDDEN.items()})
CATS = ["administrative", "social", "medical", "functional", "discussion"]

minutes = st.integers(0, 600)


def _event(event_type: str, source: str, at: int, **fields: object) -> Event:
    base = {"event_id": str(uuid.uuid4()), "case_id": "case-p", "occurred_at": T0 + timedelta(minutes=at), "source": source}
    return build_event(event_type, {**base, **DEFAULTS[event_type], **fields})


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["ref", "status", "admission", "eval", "msg", "consent", "consent", "commission", "opinion"]))
    source, at = draw(st.sampled_from(SLUGS)), draw(minutes)
    ref = draw(st.sampled_from(["r1", "r2"]))
    if kind == "commission":
        invited = draw(st.lists(st.sampled_from([s for s in SLUGS if s != source]), min_size=1, max_size=2, unique=True))
        return _event("CommissionOpened", source, at, referral_id=ref, commission_id=draw(st.sampled_from(["k1", "k2"])),
                      invited=invited, opinion_deadline=T0 + timedelta(minutes=at + 60))
    if kind == "opinion":
        return _event("OpinionGiven", source, at, referral_id=ref, commission_id=draw(st.sampled_from(["k1", "k2"])),
                      opinion=draw(st.sampled_from(["favourable", "unfavourable", "reserved"])))
    if kind == "ref":
        to = draw(st.sampled_from([s for s in SLUGS if s != source]))
        return _event("ReferralSubmitted", source, at, referral_id=ref, to_structure=to)
    if kind == "status":
        status = draw(st.sampled_from(["acknowledged", "accepted", "declined", "redirected", "completed"]))
        redirect = draw(st.sampled_from(SLUGS)) if status == "redirected" else None
        return _event("ReferralStatusChanged", source, at, referral_id=ref, status=status, redirect_to=redirect)
    if kind == "admission":
        return _event("AdmissionDecided", source, at, referral_id=ref)
    if kind == "eval":
        return _event("EvaluationRecorded", source, at, evaluation_id=draw(st.sampled_from(["e1", "e2"])),
                      category=draw(st.sampled_from(CATS)))
    if kind == "msg":
        return _event("MessagePosted", source, at, message_id=draw(st.sampled_from(["m1", "m2", "m3"])),
                      category=draw(st.sampled_from(CATS)))
    until = draw(st.one_of(st.none(), minutes.map(lambda m: T0 + timedelta(minutes=m))))
    grantee = draw(st.sampled_from([*SLUGS, "dac", "cpts", "crt"]))
    # a permit its recorder grants itself is written and names its proof (the contract's rule)
    proof = {"method": "written", "proof": "doc-signed-form"} if grantee == source else {}
    return _event("ConsentRecorded", source, at, consent_id=draw(st.sampled_from(["c1", "c2", "c3"])), grantee=grantee,
                  categories=draw(st.lists(st.sampled_from(CATS), min_size=1, max_size=3, unique=True)),
                  decision=draw(st.sampled_from(["permit", "deny"])), valid_until=until, **proof)


def oracle(viewer: Viewer, e: Any, history: list[Any], now) -> bool:
    """The rules restated on the events' attributes, dispatched on `event_type` (hence `Any`)."""
    me = (viewer.slug, viewer.kind)
    if e.source == viewer.slug:
        return True
    ref = getattr(e, "referral_id", None)
    if ref is not None:
        parties = {x.source for x in history if x.event_type == "ReferralSubmitted" and x.referral_id == ref}
        parties |= {x.to_structure for x in history if x.event_type == "ReferralSubmitted" and x.referral_id == ref}
        parties |= {x.redirect_to for x in history if x.event_type == "ReferralStatusChanged" and x.referral_id == ref}
        parties |= {s for x in history if x.event_type == "CommissionOpened" and x.referral_id == ref for s in x.invited}
        if viewer.slug in parties:
            return True
    if e.event_type == "ConsentRecorded" and e.grantee in me:
        return True
    if e.category in HIDDEN.get(viewer.kind, set()):
        return False
    live = [c for c in history if c.event_type == "ConsentRecorded" and e.category in c.categories
            and (c.valid_until is None or now < c.valid_until)]
    latest = {}  # per grantee: the person's latest active declaration for this category
    for c in sorted(live, key=lambda c: (c.occurred_at, str(c.event_id))):
        latest[c.grantee] = c
    if any(latest[g].decision == "deny" for g in me if g in latest):
        return False
    return any(c.decision == "permit" and (c.grantee in me or c.source == viewer.slug) for c in latest.values())


def _shown_event_ids(view: dict) -> set[str]:
    ids = set()
    for section in ("evaluations", "messages", "consents", "ruptures"):
        ids |= {entry["event_id"] for entry in view[section]}
    for r in view["referrals"]:
        if "event_id" in r:
            ids.add(r["event_id"])
        for section in ("status_history", "admission_history", "commissions", "opinions"):
            ids |= {entry["event_id"] for entry in r[section]}
    return ids


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(events(), min_size=1, max_size=14), now_min=minutes, data=st.data())
def test_views_show_only_permitted_items_and_ignore_order_and_duplicates(history, now_min, data) -> None:
    now = T0 + timedelta(minutes=now_min)
    shuffled = data.draw(st.permutations(history + data.draw(st.lists(st.sampled_from(history), max_size=5))))
    state = fold_all("case-p", history)
    replayed = fold_all("case-p", list(shuffled))
    for viewer in VIEWERS:
        view = project(state, viewer, POLICY, now)
        assert view == project(replayed, viewer, POLICY, now), "order or duplicates changed the view"
        allowed = [e for e in history if oracle(viewer, e, history, now)]
        if view is None:
            assert not allowed, f"{viewer.slug} should see {allowed}"
            continue
        by_id = {str(e.event_id): e for e in history}
        for eid in _shown_event_ids(view):
            assert oracle(viewer, by_id[eid], history, now), f"{viewer.slug} sees forbidden {by_id[eid]}"
        assert set(view["items"]) == {item_key(e) for e in allowed}
