"""docs/consent-rules.md, rule by rule, on the pure case file."""

from __future__ import annotations

import json
from datetime import timedelta

from parcours.casefile.incremental import DictStore, IncrementalCaseFile
from parcours.casefile.policy import Policy, Viewer, concerned, next_change
from parcours.casefile.records import assemble
from parcours.casefile.state import fold_all
from parcours.casefile.view import project
from tests.factories import T0, ev

DAC, CPTS, CPTS2, CRT, CRT2 = (
    Viewer("dac-31", "dac"), Viewer("cpts-31-nord", "cpts"), Viewer("cpts-31-sud", "cpts"),
    Viewer("crt-31-muret", "crt"), Viewer("crt-31-nord", "crt"),
)
POLICY = Policy({"cpts": frozenset({"social", "medical", "functional"})})
KINDS = {v.slug: v.kind for v in (DAC, CPTS, CPTS2, CRT, CRT2)}
NOW = T0 + timedelta(days=1)


def items(events, viewer, now=NOW, policy=POLICY):
    view = project(fold_all("case-1", events), viewer, policy, now)
    return set(view["items"]) if view else set()


def msg(mid: str, source: str, category: str = "discussion", at: int = 0):
    return ev("MessagePosted", message_id=mid, source=source, category=category, at=at)


def consent(cid: str, grantee: str, cats: list[str], decision: str = "permit", source: str = "dac-31", at: int = 0, **kw):
    return ev("ConsentRecorded", consent_id=cid, grantee=grantee, categories=cats, decision=decision, source=source, at=at, **kw)


def test_rule1_author_always_sees_its_items_even_hidden_categories() -> None:
    own = msg("m1", "cpts-31-nord", category="medical")
    assert items([own], CPTS) == {"message:m1"}


def test_rule2_referral_parties_see_referral_status_and_admission() -> None:
    events = [
        ev("ReferralSubmitted", source="dac-31", to_structure="crt-31-muret"),
        ev("ReferralStatusChanged", source="crt-31-muret", status="acknowledged", at=1),
        ev("AdmissionDecided", source="crt-31-muret", decision="admitted", volet=2, at=2),
    ]
    for party in (DAC, CRT):
        got = items(events, party)
        assert "referral:ref-1" in got
        assert len(got) == 3
    assert items(events, CRT2) == set()
    assert items(events, CPTS) == set()


def test_rule2_redirect_target_becomes_a_party() -> None:
    events = [
        ev("ReferralSubmitted", source="dac-31", to_structure="crt-31-muret"),
        ev("ReferralStatusChanged", source="crt-31-muret", status="redirected", redirect_to="crt-31-nord", at=1),
    ]
    assert "referral:ref-1" in items(events, CRT2)


def test_rule3_permit_by_slug_and_by_kind() -> None:
    m = msg("m1", "dac-31")
    assert items([m], CRT) == set()
    assert "message:m1" in items([m, consent("c1", "crt-31-muret", ["discussion"])], CRT)
    assert items([m, consent("c1", "crt-31-muret", ["discussion"])], CRT2) == set()
    by_kind = [m, consent("c1", "crt", ["discussion"])]
    assert "message:m1" in items(by_kind, CRT)
    assert "message:m1" in items(by_kind, CRT2)


def test_rule3_permit_is_per_category() -> None:
    events = [msg("m1", "dac-31", "social"), consent("c1", "crt-31-muret", ["discussion"])]
    assert "message:m1" not in items(events, CRT)


def test_rule3_the_latest_declaration_for_a_grantee_is_in_force_whatever_the_arrival_order() -> None:
    m = msg("m1", "dac-31")
    permit = consent("c1", "crt-31-muret", ["discussion"], at=0)
    withdrawal = consent("c2", "crt-31-muret", ["discussion"], decision="deny", at=5)
    renewal = consent("c3", "crt-31-muret", ["discussion"], at=10)
    again = consent("c4", "crt-31-muret", ["discussion"], decision="deny", at=15)
    history = [m, permit, withdrawal, renewal, again]
    for shown, upto in ((True, 2), (False, 3), (True, 4), (False, 5)):
        for order in (history[:upto], list(reversed(history[:upto]))):
            assert ("message:m1" in items(order, CRT)) is shown, [e.consent_id for e in order[1:] if hasattr(e, "consent_id")]


def test_rule3_an_older_deny_does_not_block_a_newer_permit_for_the_same_grantee() -> None:
    m = msg("m1", "dac-31")
    assert "message:m1" in items([m, consent("c2", "crt-31-muret", ["discussion"], decision="deny", at=-5),
                                  consent("c1", "crt-31-muret", ["discussion"], at=0)], CRT)


def test_rule3_between_slug_and_kind_declarations_in_force_deny_wins() -> None:
    m = msg("m1", "dac-31")
    permit = consent("c1", "crt", ["discussion"], at=0)
    deny_before = consent("c2", "crt-31-muret", ["discussion"], decision="deny", at=-5)
    deny_after = consent("c2", "crt-31-muret", ["discussion"], decision="deny", at=5)
    for deny in (deny_before, deny_after):
        assert "message:m1" not in items([m, permit, deny], CRT)
        assert "message:m1" in items([m, permit, deny], CRT2)  # the deny names crt-31-muret only


def test_rule3_expired_consent_is_inactive() -> None:
    m = msg("m1", "dac-31")
    c = consent("c1", "crt-31-muret", ["discussion"], valid_until=T0 + timedelta(hours=2))
    assert "message:m1" in items([m, c], CRT, now=T0 + timedelta(hours=1))
    assert "message:m1" not in items([m, c], CRT, now=T0 + timedelta(hours=2))
    assert next_change(fold_all("case-1", [m, c]), T0) == T0 + timedelta(hours=2)


def test_rule3_expired_deny_stops_blocking() -> None:
    m = msg("m1", "dac-31")
    events = [m, consent("c1", "crt", ["discussion"]),
              consent("c2", "crt-31-muret", ["discussion"], decision="deny", valid_until=T0 + timedelta(hours=1))]
    assert "message:m1" not in items(events, CRT, now=T0)
    assert "message:m1" in items(events, CRT, now=T0 + timedelta(hours=1))


def test_rule3_recorder_holds_the_permits_it_records() -> None:
    """A CRT records the person's consent for the DAC: the CRT sees the DAC's social items too."""
    events = [msg("m1", "dac-31", "social"), consent("c1", "dac-31", ["social"], source="crt-31-muret")]
    assert "message:m1" in items(events, CRT)
    assert "message:m1" not in items(events, CRT2)


def test_rule3_a_consent_is_visible_to_the_structures_it_names() -> None:
    c = consent("c1", "crt", ["discussion"])
    assert items([c], CRT) == {"consent:c1"} == items([c], CRT2)
    assert items([c], CPTS) == set()


def test_rule4_kind_ceiling_beats_consent() -> None:
    events = [msg("m1", "dac-31", "medical"), msg("m2", "dac-31", "discussion"),
              consent("c1", "cpts", ["medical", "discussion"])]
    assert items(events, CPTS) == {"consent:c1", "message:m2"}
    assert "message:m1" in items(events, CPTS, policy=Policy({}))  # the ceiling is configuration


def _changes(core: IncrementalCaseFile, store: DictStore, event, slug: str) -> tuple[list[str], list[str], list[dict]]:
    """(appeared, vanished, notification bodies) for `slug` when `event` is applied."""
    out = core.apply(store, "case-1", event, NOW)
    notes = [n.body for n in out.notices if n.structure == slug]
    return ([n["item"] for n in notes if n["type"] == "item_visible"],
            [n["item"] for n in notes if n["type"] == "redaction"], notes)


def test_rule5_a_later_deny_redacts_and_the_change_names_ids_only() -> None:
    m = ev("EvaluationRecorded", source="dac-31", category="functional")
    permit = consent("c1", "crt-31-muret", ["functional"])
    before = project(fold_all("case-1", [m, permit]), CRT, POLICY, NOW)
    assert before is not None
    assert "evaluation:eval-1" in before["items"]
    core, store = IncrementalCaseFile(KINDS, POLICY), DictStore()
    for e in (m, permit):
        core.apply(store, "case-1", e, NOW)
    appeared, vanished, notes = _changes(core, store, consent("c2", "crt-31-muret", ["functional"], decision="deny", at=10),
                                         "crt-31-muret")
    assert vanished == ["evaluation:eval-1"]
    assert appeared == ["consent:c2"]
    assert all(set(n) == {"notification_id", "type", "case_id", "item", "view_version"} for n in notes)


def test_rule6_nothing_visible_means_no_view() -> None:
    assert project(fold_all("case-1", [msg("m1", "dac-31", "medical")]), CRT, POLICY, NOW) is None
    core, store = IncrementalCaseFile(KINDS, POLICY), DictStore()
    core.apply(store, "case-1", msg("m1", "dac-31", "medical"), NOW)
    core.apply(store, "case-1", consent("c1", "crt-31-muret", ["medical"], source="dac-31"), NOW)
    out = core.apply(store, "case-1", consent("c2", "crt-31-muret", ["medical"], decision="deny", at=10), NOW)
    left = {r.item for r in out.items if r.structure == "crt-31-muret" and r.value is None}
    assert "message:m1" in left
    assert [n.body["item"] for n in out.notices if n.structure == "crt-31-muret" and n.body["type"] == "redaction"] == ["message:m1"]
    remaining = [json.loads(r.value) for r in out.items if r.structure == "crt-31-muret" and r.value]
    assert assemble("case-1", "crt-31-muret", remaining) is not None  # the consents it is named in stay visible
    assert assemble("case-1", "crt-31-muret", []) is None


def test_duplicates_and_order_do_not_change_the_view() -> None:
    events = [ev("ReferralSubmitted"), ev("ReferralStatusChanged", source="crt-31-muret", at=1),
              msg("m1", "dac-31", at=2), consent("c1", "crt", ["discussion"], at=3)]
    a = project(fold_all("case-1", events), CRT, POLICY, NOW)
    b = project(fold_all("case-1", list(reversed(events)) + events), CRT, POLICY, NOW)
    assert a == b
    assert a is not None
    assert a["version"] == 4  # every event here is visible to the CRT


def test_a_later_status_is_the_current_one_whatever_the_arrival() -> None:
    events = [ev("ReferralSubmitted"), ev("ReferralStatusChanged", source="crt-31-muret", status="acknowledged", at=1),
              ev("ReferralStatusChanged", source="crt-31-muret", status="accepted", at=2)]
    view = project(fold_all("case-1", [events[2], events[0], events[1]]), DAC, POLICY, NOW)
    assert view is not None
    assert view["referrals"][0]["status"] == "accepted"
    assert [s["status"] for s in view["referrals"][0]["status_history"]] == ["acknowledged", "accepted"]


def test_concerned_structures() -> None:
    events = [ev("ReferralSubmitted", source="cpts-31-nord", to_structure="dac-31"), consent("c1", "crt", ["discussion"])]
    assert concerned(fold_all("case-1", events), KINDS) == {"cpts-31-nord", "dac-31", "crt-31-muret", "crt-31-nord"}


def test_processor_step_handles_every_event_type_and_dead_letters_what_it_cannot_process() -> None:
    """The processor's step over an in-memory store: every event type, duplicates, bad records."""
    from parcours.contract.codec import Codec
    from parcours.processors.core import MemoryState, RecordProcessor
    from parcours.topology.catalogue import Catalogue
    from parcours.topology.registry import default_policy
    from tests.factories import one_of_each

    cat = Catalogue.load(prefix="t")
    class Counting(MemoryState):
        writes = 0

        def set_bytes(self, key: str, value: bytes) -> None:
            self.writes += 1
            super().set_bytes(key, value)

    core, codec, state = RecordProcessor(cat, default_policy()), Codec(), Counting()
    rebuilder, rebuilt = RecordProcessor(cat, default_policy(), views_only=True), MemoryState()
    views = set(core.views.values())  # views.<slug>
    for e in one_of_each():
        enc = codec.encode(e)
        written = state.writes
        step = core.process(cat.for_event(e.event_type).name, 0, 0, enc.key, enc.value, enc.headers, lambda: state)
        assert step.state_writes == state.writes - written >= 1, e.event_type  # what the changelog receives
        quiet = rebuilder.process(cat.for_event(e.event_type).name, 0, 0, enc.key, enc.value, enc.headers, lambda: rebuilt)
        assert quiet.outputs == [o for o in step.outputs if o.topic in views], e.event_type  # views only, the same
        assert step.dead_letter is None, e.event_type
        assert not step.duplicate, e.event_type
        assert step.outputs, e.event_type
        again = core.process(cat.for_event(e.event_type).name, 0, 1, enc.key, enc.value, enc.headers, lambda: state)
        assert again.duplicate
        assert not again.outputs
    bad = core.process("t.messages", 0, 2, b"case-1", b"garbage", [], lambda: state)
    assert bad.dead_letter == "undecodable"
    assert [o.topic for o in bad.outputs] == ["t.deadletter"]
    assert core.process("t.messages", 0, 3, None, b"x", [], lambda: state).dead_letter == "key_missing"


def _basis_of(events, viewer, item_event, now=NOW):
    """The legal basis of one event's item for `viewer`, through the policy's own functions."""
    from parcours.casefile.policy import CaseIndex, basis, by_consent, to_ms

    index = CaseIndex.of(fold_all("case-1", events))
    e = item_event
    referral = getattr(e, "referral_id", None)
    return basis(viewer, source=e.source, event_type=e.event_type, category=e.category,
                 parties=index.parties(referral) if referral else frozenset(), referral_id=referral,
                 grantee=getattr(e, "grantee", None), consent_id=getattr(e, "consent_id", None),
                 consented=by_consent(viewer, index.consents, POLICY, to_ms(now)))


def test_each_legal_basis_and_each_refusal_reason_is_named() -> None:
    from parcours.casefile.policy import Basis

    m = msg("m1", "dac-31")
    social = msg("m2", "dac-31", "social")
    permit = consent("c1", "crt-31-muret", ["discussion"], at=0)
    deny = consent("c2", "crt-31-muret", ["discussion"], decision="deny", at=5)
    ref = ev("ReferralSubmitted", source="dac-31", to_structure="crt-31-muret")
    assert _basis_of([m], DAC, m) == Basis(True, "author")
    assert _basis_of([m, permit], CRT, m) == Basis(True, "consent", "c1")
    assert _basis_of([m, permit], CRT, permit) == Basis(True, "consent", "c1")  # a consent names its grantee
    assert _basis_of([m, permit, deny], CRT, m) == Basis(False, "denied", "c2")
    assert _basis_of([m], CRT, m) == Basis(False, "no_consent")
    everything = consent("c3", "cpts", ["social"], at=0)
    assert _basis_of([social, everything], CPTS, social) == Basis(False, "kind_ceiling")
    assert _basis_of([ref], CRT, ref) == Basis(True, "referral_party", ref.item_id)
    assert _basis_of([ref], CRT2, ref) == Basis(False, "no_consent")


def test_every_change_in_what_a_structure_sees_is_audited_with_its_basis() -> None:
    """Withdrawal and renewed consent: disclosed (c1), withdrawn (denied by c2), disclosed (c3),
    for the message and for no one else's view; ids, kinds and reasons only."""
    core, store = IncrementalCaseFile(KINDS, POLICY), DictStore()
    m = msg("m1", "dac-31")
    steps = [m, consent("c1", "crt-31-muret", ["discussion"], at=1),
             consent("c2", "crt-31-muret", ["discussion"], decision="deny", at=2),
             consent("c3", "crt-31-muret", ["discussion"], at=3)]
    audits = []
    for e in steps:
        audits += [a.body for a in core.apply(store, "case-1", e, NOW).audits]
    about_m = [(a["structure"], a["change"], a["basis"], a["ref"], a["cause"]) for a in audits if a["item"] == "message:m1"]
    assert about_m == [("dac-31", "disclosed", "author", None, str(m.event_id)),
                       ("crt-31-muret", "disclosed", "consent", "c1", str(steps[1].event_id)),
                       ("crt-31-muret", "withdrawn", "denied", "c2", str(steps[2].event_id)),
                       ("crt-31-muret", "disclosed", "consent", "c3", str(steps[3].event_id))]
    assert len({a["audit_id"] for a in audits}) == len(audits)  # deterministic ids, never twice
    assert all(set(a) == {"audit_id", "change", "structure", "case_id", "item", "item_type", "category", "author",
                          "basis", "ref", "cause", "at"} for a in audits)  # no content, no person data
    # the same events again (a replay after a crash): nothing new to audit
    assert [core.apply(store, "case-1", e, NOW).audits for e in steps] == [[], [], [], []]
