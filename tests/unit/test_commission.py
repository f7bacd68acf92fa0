"""The admission commission, pure: its events' rules, who sees it (consent rule 2 with the invited
structures as parties), its states, the edge's checks and the observatory's count of refusals
without an alternative."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from parcours.casefile.incremental import DictStore, IncrementalCaseFile
from parcours.casefile.policy import Policy, Viewer
from parcours.casefile.records import assemble
from parcours.casefile.state import fold_all
from parcours.casefile.view import project
from parcours.contract.errors import EventValidationError
from parcours.contract.models import OpinionGiven
from parcours.publishing.errors import BadReference, NotPermitted, NotVisible, TooLate
from parcours.publishing.rules import check_opening, check_opinion, check_stateful, check_stateless
from parcours.territory import commission
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Structure
from tests.factories import T0, ev

DAC, CPTS, CPTS2, CRT, CRT2 = (Viewer("dac-31", "dac"), Viewer("cpts-31-nord", "cpts"), Viewer("cpts-31-sud", "cpts"),
                               Viewer("crt-31-muret", "crt"), Viewer("crt-31-nord", "crt"))
ALL = (DAC, CPTS, CPTS2, CRT, CRT2)
POLICY = Policy({"cpts": frozenset({"social", "medical", "functional"})})
KINDS = {v.slug: v.kind for v in ALL}
DEADLINE = T0 + timedelta(days=2)


def referral():
    return ev("ReferralSubmitted", source="cpts-31-nord", to_structure="crt-31-muret", referral_id="ref-1")


def opened(at: int = 10, **kw):
    fields = {"commission_id": "com-1", "referral_id": "ref-1", "invited": ["dac-31", "cpts-31-nord"],
              "opinion_deadline": DEADLINE, **kw}
    return ev("CommissionOpened", source="crt-31-muret", at=at, **fields)


def opinion(source: str, verdict: str = "favourable", at: int = 20, **kw) -> OpinionGiven:
    e = ev("OpinionGiven", source=source, at=at, **{"commission_id": "com-1", "referral_id": "ref-1", "opinion": verdict, **kw})
    assert isinstance(e, OpinionGiven)
    return e


def decided(decision: str = "refused", at: int = 3 * 24 * 60, **kw):
    reasons = ["places complètes"] if decision == "refused" else []
    return ev("AdmissionDecided", source="crt-31-muret", at=at, referral_id="ref-1", decision=decision, reasons=reasons, **kw)


def view_of(events, viewer, now=T0 + timedelta(days=4)):
    return project(fold_all("case-1", events), viewer, POLICY, now)


# --- the events ------------------------------------------------------------------------

def test_a_commission_needs_invitations_a_deadline_after_it_opens_and_no_self_invitation() -> None:
    with pytest.raises(EventValidationError) as exc:
        opened(opinion_deadline=T0)
    assert ("opinion_deadline", "must be after the commission opens") in exc.value.errors
    with pytest.raises(EventValidationError) as exc:
        opened(invited=["crt-31-muret"])
    assert exc.value.errors[0][0] == "invited"
    with pytest.raises(EventValidationError) as exc:
        opened(invited=["dac-31", "dac-31"])
    assert ("invited", "each structure once") in exc.value.errors
    with pytest.raises(EventValidationError) as exc:
        opened(invited=[])
    assert exc.value.errors[0][0] == "invited"
    with pytest.raises(EventValidationError) as exc:
        opened(opinion_deadline=T0 + timedelta(days=61))
    assert ("opinion_deadline", "at most 60 days after the commission opens") in exc.value.errors


def test_only_a_refusal_proposes_an_alternative() -> None:
    assert decided(alternative="crt-31-nord").alternative == "crt-31-nord"
    with pytest.raises(EventValidationError) as exc:
        decided("admitted", alternative="crt-31-nord")
    assert ("alternative", "only a refusal proposes an alternative") in exc.value.errors


# --- who sees it -----------------------------------------------------------------------

def test_invited_structures_become_parties_of_the_referral_and_nobody_else_sees_it() -> None:
    message = ev("MessagePosted", source="crt-31-muret", message_id="m-1", category="medical", at=5)
    events = [referral(), message, opened(), opinion("dac-31"), opinion("cpts-31-nord", "reserved"), decided()]
    dac = view_of(events, DAC)
    assert dac is not None
    ref = dac["referrals"][0]
    assert ref["from"] == "cpts-31-nord"  # the DAC, invited, now sees the referral it gives an opinion on
    assert [c["commission_id"] for c in ref["commissions"]] == ["com-1"]
    assert {o["by"]: o["opinion"] for o in ref["opinions"]} == {"dac-31": "favourable", "cpts-31-nord": "reserved"}
    assert ref["admission"]["decision"] == "refused"
    assert "message:m-1" not in dac["items"]  # an invitation is no consent: the CRT's medical message stays hidden
    assert view_of(events, CPTS2) is None
    assert view_of(events, CRT2) is None
    # the CRT sees every opinion; the referrer (invited too) as well
    for viewer in (CRT, CPTS):
        seen = view_of(events, viewer)
        assert seen is not None
        assert len(seen["referrals"][0]["opinions"]) == 2


def test_a_later_opinion_of_the_same_structure_replaces_its_earlier_one() -> None:
    events = [referral(), opened(), opinion("dac-31", "unfavourable", at=20), opinion("dac-31", "favourable", at=30)]
    ref = view_of(events, CRT)["referrals"][0]
    assert [(o["by"], o["opinion"]) for o in ref["opinions"]] == [("dac-31", "favourable")]


def test_the_incremental_case_file_shows_the_commission_as_the_projection_does_and_notifies_the_invited() -> None:
    core, store = IncrementalCaseFile(KINDS, POLICY), DictStore()
    records: dict[str, dict[str, dict]] = {v.slug: {} for v in ALL}
    notices: dict[str, list[str]] = {v.slug: [] for v in ALL}
    events = [referral(), opened(), opinion("dac-31"), decided()]
    now = T0 + timedelta(days=4)
    for e in events:
        out = core.apply(store, "case-1", e, now)
        for r in out.items:
            if r.value is None:
                records[r.structure].pop(r.item, None)
            else:
                records[r.structure][r.item] = json.loads(r.value)
        for n in out.notices:
            notices[n.structure].append(n.body["item"])
    for v in ALL:
        assembled = assemble("case-1", v.slug, records[v.slug].values()) if records[v.slug] else None
        assert assembled == project(fold_all("case-1", events), v, POLICY, now), v.slug
    # the DAC learns of the referral when invited, then of each item of it
    assert notices["dac-31"][:2] == ["referral:ref-1", "commission:com-1"]
    assert "opinion:com-1:dac-31" in notices["crt-31-muret"]
    assert notices["cpts-31-sud"] == []


# --- its states ------------------------------------------------------------------------

def test_a_commission_is_open_until_its_deadline_then_deliberates_until_a_decision() -> None:
    ref = view_of([referral(), opened()], CRT)["referrals"][0]
    com = ref["commissions"][0]
    assert commission.status(com, ref, DEADLINE - timedelta(seconds=1)) == "open"
    assert commission.status(com, ref, DEADLINE) == "open"  # the deadline itself is still in time
    assert commission.status(com, ref, DEADLINE + timedelta(milliseconds=1)) == "deliberating"
    ref = view_of([referral(), opened(), decided("waitlisted", at=60)], CRT)["referrals"][0]
    assert commission.status(ref["commissions"][0], ref, T0) == "decided"  # decided early: closed
    # a referral that leaves its recipient undecided closes the commission, which then frees the next one
    withdrawn = ev("ReferralStatusChanged", source="cpts-31-nord", referral_id="ref-1", status="withdrawn", at=30)
    ref = view_of([referral(), opened(), withdrawn], CRT)["referrals"][0]
    assert commission.status(ref["commissions"][0], ref, T0 + timedelta(minutes=40)) == "closed"
    assert commission.pending(ref, T0 + timedelta(minutes=40)) is None
    # a decision before the commission opened does not close it
    ref = view_of([referral(), decided("waitlisted", at=1), opened(at=10)], CRT)["referrals"][0]
    assert commission.status(ref["commissions"][0], ref, T0 + timedelta(minutes=11)) == "open"


def test_the_view_served_names_each_commissions_state_and_who_has_not_answered() -> None:
    ref = view_of([referral(), opened(), opinion("dac-31")], CRT)["referrals"][0]
    shown = commission.annotated(ref, T0 + timedelta(hours=1))["commissions"][0]
    assert shown["status"] == "open"
    assert shown["awaiting"] == ["cpts-31-nord"]
    assert commission.annotated(ref, DEADLINE + timedelta(hours=1))["commissions"][0]["status"] == "deliberating"


# --- the edge's checks -----------------------------------------------------------------

CAT = Catalogue.load(prefix="t")
CRT_S, DAC_S, CPTS_S, CPTS2_S = (CAT.registry.structures[s] for s in ("crt-31-muret", "dac-31", "cpts-31-nord", "cpts-31-sud"))


class Views:
    """`CaseViews` over the projection of a list of events."""

    def __init__(self, events, now) -> None:
        self.events, self.now = events, now

    def view(self, slug: str, case_id: str):
        return project(fold_all(case_id, self.events), Viewer(slug, KINDS[slug]), POLICY, self.now)

    def has_case(self, slug: str, case_id: str) -> bool:
        return self.view(slug, case_id) is not None

    def referral(self, slug: str, referral_id: str):
        v = self.view(slug, "case-1")
        return next((("case-1", r) for r in (v or {}).get("referrals", []) if r["referral_id"] == referral_id), None)

    async def until(self, probe, wait: float):
        return probe()


def stateful(events, caller: Structure, event) -> None:
    """The edge's checks, at the instant the event says (the edge judges at its own clock)."""
    asyncio.run(check_stateful(Views(events, event.occurred_at), caller, event, now=event.occurred_at))


def test_a_cpts_cannot_open_a_commission_and_only_the_recipient_crt_can() -> None:
    with pytest.raises(NotPermitted) as exc:
        check_stateless(CAT, CPTS_S, ev("CommissionOpened", source="cpts-31-nord", commission_id="c", referral_id="ref-1",
                                        invited=["dac-31"], opinion_deadline=DEADLINE))
    assert "CommissionOpened may be published by ['crt']" in str(exc.value.rule)
    other_crt = CAT.registry.structures["crt-31-nord"]
    with pytest.raises(NotVisible):  # a CRT that is not a party does not even see the referral
        stateful([referral()], other_crt, ev("CommissionOpened", source="crt-31-nord", commission_id="c", referral_id="ref-1",
                                             invited=["dac-31"], opinion_deadline=DEADLINE))
    stateful([referral()], CRT_S, opened())  # the recipient may
    with pytest.raises(BadReference) as bad:
        check_stateless(CAT, CRT_S, opened(invited=["dac-99"]))
    assert bad.value.fields == [{"field": "invited", "rule": "dac-99: not registered structures"}]


def test_one_commission_at_a_time_and_none_after_a_final_decision() -> None:
    with pytest.raises(TooLate) as exc:
        stateful([referral(), opened()], CRT_S, opened(commission_id="com-2", at=30))
    assert "one at a time" in str(exc.value.rule)
    stateful([referral(), opened(), decided("waitlisted", at=40)], CRT_S, opened(commission_id="com-2", at=50))
    first = opened()
    stateful([referral(), first], CRT_S, first)  # the very event again (a retry): accepted
    with pytest.raises(TooLate) as reuse:  # another event reusing a commission's id (Kafka ingress) is not
        stateful([referral(), first, decided("refused", at=40)], CRT_S, opened(at=50, invited=["crt-31-nord"]))
    assert reuse.value.rule == "commission: a new commission has a new id"
    with pytest.raises(TooLate) as exc:
        stateful([referral(), opened(), decided("refused", at=40)], CRT_S, opened(commission_id="com-2", at=50))
    assert "none after an admission or a refusal" in str(exc.value.rule)


def test_an_opinion_comes_from_an_invited_structure_before_the_deadline() -> None:
    events = [referral(), opened(invited=["dac-31"])]
    stateful(events, DAC_S, opinion("dac-31"))
    with pytest.raises(NotPermitted) as refused:  # the referrer sees the commission but was not invited this time
        stateful(events, CPTS_S, opinion("cpts-31-nord"))
    assert refused.value.rule == "opinion: by a structure the commission invited"
    with pytest.raises(NotVisible):
        stateful(events, CPTS2_S, opinion("cpts-31-sud"))
    late = opinion("dac-31", at=3 * 24 * 60)
    with pytest.raises(TooLate) as exc:
        stateful(events, DAC_S, late)
    assert str(exc.value.rule).startswith("opinion_deadline: opinions are accepted until ")
    assert exc.value.fields
    assert exc.value.fields[0]["field"] == "opinion_deadline"
    ref = Views([*events, decided("waitlisted", at=30)], T0).referral("dac-31", "ref-1")[1]
    with pytest.raises(TooLate, match="has decided"):
        check_opinion(ref, DAC_S, opinion("dac-31", at=40))
    with pytest.raises(NotVisible):
        check_opinion(ref, DAC_S, opinion("dac-31", commission_id="com-9"))
    check_opening(Views([referral()], T0).referral("crt-31-muret", "ref-1")[1], opened())


# --- the observatory -------------------------------------------------------------------

def test_the_observatory_counts_refusals_without_an_alternative_once() -> None:
    from parcours.contract.codec import Codec
    from parcours.processors.core import MemoryState, RecordProcessor
    from parcours.topology.registry import default_policy

    core, codec, state = RecordProcessor(CAT, default_policy()), Codec(), MemoryState()

    def marks(e) -> list[dict]:
        enc = codec.encode(e)
        step = core.process(CAT.for_event(e.event_type).name, 0, 0, enc.key, enc.value, enc.headers, lambda: state)
        return [m for o in step.outputs if o.topic == "t.observatory" and o.value
                and (m := json.loads(o.value))["type"] == "refused_admission_without_alternative"]

    assert marks(referral()) == []
    refused = decided()
    [mark] = marks(refused)
    assert mark["type"] == "refused_admission_without_alternative"
    assert mark["territory"] == "31"
    assert mark["automatic"]
    assert mark["rupture_id"] == f"admission:{refused.event_id}"  # no person data, keyed by the decision
    assert marks(refused) == []  # the same decision again: a duplicate, no second mark
    assert marks(decided(alternative="crt-31-nord", at=3 * 24 * 60 + 1)) == []
    assert marks(decided("waitlisted", at=3 * 24 * 60 + 2)) == []
