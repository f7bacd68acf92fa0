"""Referral deadlines (topics/policy.yaml): a referral unanswered past its urgency's delay is found
overdue by a clock tick, once; a late answer records its delay; the processor turns them into an
automatic observatory mark and a reminder in the sender's inbox, and schedules the tick."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from parcours.casefile.deadlines import LateAnswer, Overdue, Tracked, next_due, overdue, track
from parcours.casefile.incremental import DictStore, IncrementalCaseFile
from parcours.casefile.policy import Policy, to_ms
from parcours.contract.codec import Codec
from parcours.processors.core import MemoryState, RecordProcessor
from parcours.topology.catalogue import Catalogue
from parcours.topology.errors import CatalogueError
from parcours.topology.registry import KindPolicy, default_policy
from tests.factories import T0, ev

HOUR = 3_600_000
DEADLINES = {"urgent": 4 * HOUR, "soon": 48 * HOUR, "routine": 168 * HOUR}
KINDS = {"dac-31": "dac", "cpts-31-nord": "cpts", "crt-31-muret": "crt", "crt-31-nord": "crt"}


def referral(urgency: str = "urgent", at: int = 0, rid: str = "ref-1"):
    return ev("ReferralSubmitted", source="dac-31", at=at, urgency=urgency, referral_id=rid)


def test_an_unanswered_referral_is_overdue_once_after_its_deadline() -> None:
    refs: dict = {}
    assert track(refs, referral(), DEADLINES) == Tracked(changed=True)
    due = to_ms(T0) + 4 * HOUR
    assert next_due(refs) == due
    assert overdue(refs, due - 1) == []
    found = overdue(refs, due)
    assert [(o.referral_id, o.sender, o.recipient) for o in found] == [("ref-1", "dac-31", "crt-31-muret")]
    assert overdue(refs, due + HOUR) == []  # once
    assert next_due(refs) is None


def test_an_answer_in_time_or_a_withdrawal_ends_the_wait_and_a_late_one_records_its_delay() -> None:
    refs: dict = {}
    track(refs, referral(rid="r-in-time"), DEADLINES)
    track(refs, referral(rid="r-withdrawn"), DEADLINES)
    track(refs, referral(rid="r-late", urgency="soon"), DEADLINES)
    assert track(refs, ev("ReferralStatusChanged", source="crt-31-muret", at=60, referral_id="r-in-time",
                          status="acknowledged"), DEADLINES) == Tracked(changed=True)
    assert track(refs, ev("ReferralStatusChanged", source="dac-31", at=60, referral_id="r-withdrawn",
                          status="withdrawn"), DEADLINES) == Tracked(changed=True)
    # the sender writing anything else does not answer its own referral
    assert track(refs, ev("MessagePosted", source="dac-31", at=61), DEADLINES) == Tracked()
    late_at = 48 * 60 + 90  # 90 minutes after the 48 h of a `soon` referral
    tracked = track(refs, ev("AdmissionDecided", source="crt-31-muret", at=late_at, referral_id="r-late"), DEADLINES)
    assert tracked.changed
    late = tracked.late
    assert late is not None
    assert late == LateAnswer("r-late", "crt-31-muret", to_ms(T0) + 48 * HOUR, to_ms(T0) + late_at * 60_000)
    assert late.delay_ms == 90 * 60_000
    assert overdue(refs, to_ms(T0) + 1000 * HOUR) == []  # all answered: nothing is overdue
    # a second answer is not a first answer
    assert track(refs, ev("ReferralStatusChanged", source="crt-31-muret", at=late_at + 1, referral_id="r-late",
                          status="accepted"), DEADLINES) == Tracked()


def test_an_answer_in_time_processed_after_the_tick_withdraws_the_mark() -> None:
    """A processor behind its inputs may see the deadline's tick before an answer given in time."""
    refs: dict = {}
    track(refs, referral(), DEADLINES)
    due = to_ms(T0) + 4 * HOUR
    assert [o.referral_id for o in overdue(refs, due + HOUR)] == ["ref-1"]
    answer = ev("ReferralStatusChanged", source="crt-31-muret", at=4 * 60 - 1, status="acknowledged")
    assert track(refs, answer, DEADLINES) == Tracked(changed=True, retract=Overdue("ref-1", "dac-31", "crt-31-muret", due))


def test_the_case_file_schedules_the_deadline_and_reports_it_on_the_tick() -> None:
    core, store = IncrementalCaseFile(KINDS, Policy({}, DEADLINES)), DictStore()
    event = referral()
    first = core.apply(store, "case-1", event, T0)
    assert first.schedule == ("case-1", to_ms(T0) + 4 * HOUR)
    assert core.apply(store, "case-1", None, T0 + timedelta(hours=3)).overdue == []
    tick = core.apply(store, "case-1", None, T0 + timedelta(hours=4))
    assert [o.referral_id for o in tick.overdue] == ["ref-1"]
    assert tick.schedule == ("case-1", None)  # nothing left to wake up for
    assert core.apply(store, "case-1", None, T0 + timedelta(hours=5)).overdue == []
    # the same referral again (a redelivery) changes nothing: no new deadline
    again = core.apply(store, "case-1", event, T0 + timedelta(hours=6))
    assert again.duplicate
    assert again.schedule is None


def test_twin_referrals_keep_the_winners_deadline_whatever_the_order() -> None:
    """One event id, two payloads (a bad producer): the smaller canonical form wins the fold, and
    the deadline is the winner's, whichever twin came first."""
    from parcours.casefile.state import canonical_digest
    from parcours.contract.models import build_event

    urgent = referral("urgent")
    routine = build_event("ReferralSubmitted", {**urgent.model_dump(), "urgency": "routine"})
    winner = min((urgent, routine), key=canonical_digest)
    for order in ((urgent, routine), (routine, urgent)):
        core, store = IncrementalCaseFile(KINDS, Policy({}, DEADLINES)), DictStore()
        for e in order:
            core.apply(store, "case-1", e, T0)
        assert store.get("idx")["refs"]["ref-1"]["due"] == to_ms(T0) + DEADLINES[winner.urgency], order
        assert store.get("idx")["next"] == to_ms(T0) + DEADLINES[winner.urgency]


@pytest.mark.parametrize("other", [{"referral_id": "ref-2"}, {"urgency": "routine"}])
def test_a_losing_twins_deadline_goes_with_it_whatever_the_order(other: dict) -> None:
    """Twins naming another referral, or with an urgency that has no deadline: in both orders the
    case waits on the winner's deadline only (a tick reports nothing else)."""
    from parcours.casefile.state import canonical_digest
    from parcours.contract.models import build_event

    first = referral("urgent")
    second = build_event("ReferralSubmitted", {**first.model_dump(), **other})
    winner = min((first, second), key=canonical_digest)
    deadlines = {"urgent": 4 * HOUR, "soon": 48 * HOUR}  # routine: no deadline here
    outcomes = []
    for order in ((first, second), (second, first)):
        core, store = IncrementalCaseFile(KINDS, Policy({}, deadlines)), DictStore()
        for e in order:
            core.apply(store, "case-1", e, T0)
        tick = core.apply(store, "case-1", None, T0 + timedelta(days=30))
        outcomes.append((sorted(store.get("idx")["refs"]), [o.referral_id for o in tick.overdue]))
    assert outcomes[0] == outcomes[1]
    expected = [winner.referral_id] if winner.urgency in deadlines else []
    assert outcomes[0] == (expected, expected)


def test_the_processor_marks_the_rupture_and_reminds_the_sender_once() -> None:
    cat = Catalogue.load(prefix="p")
    proc = RecordProcessor(cat, KindPolicy(default_policy().hidden, DEADLINES))
    state, codec = MemoryState(), Codec()
    enc = codec.encode(referral())
    submitted = proc.process("p.referrals", 0, 0, enc.key, enc.value, enc.headers, lambda: state, now=T0)
    schedule = [o for o in submitted.outputs if o.topic == "p.clock-schedule"]
    assert [o.value for o in schedule] == [str(to_ms(T0) + 4 * HOUR).encode()]
    due = str(to_ms(T0) + 4 * HOUR).encode()
    tick = proc.process("p.clock-ticks", 0, 1, b"case-1", due, None, lambda: state, now=T0 + timedelta(hours=4))
    marks = [json.loads(o.value or b"null") for o in tick.outputs if o.topic == "p.observatory"]
    assert marks == [{"territory": "31", "week": marks[0]["week"], "type": "unanswered_referral",
                      "rupture_id": "deadline:ref-1", "automatic": True}]
    reminders = [json.loads(o.value or b"null") for o in tick.outputs if o.topic == "p.inbox.dac-31"]
    assert [r["type"] for r in reminders] == ["referral_overdue"]
    assert reminders[0]["item"] == "referral:ref-1"
    again = proc.process("p.clock-ticks", 0, 2, b"case-1", due, None, lambda: state, now=T0 + timedelta(hours=5))
    assert not [o for o in again.outputs if o.topic in ("p.observatory", "p.inbox.dac-31")]
    late = codec.encode(ev("ReferralStatusChanged", source="crt-31-muret", at=5 * 60, status="acknowledged"))
    answered = proc.process("p.referrals", 0, 3, late.key, late.value, late.headers, lambda: state, now=T0 + timedelta(hours=5))
    marks = [json.loads(o.value or b"null") for o in answered.outputs if o.topic == "p.observatory"]
    assert [(m["type"], m["delay_s"]) for m in marks] == [("late_referral_answer", 3600)]


@pytest.mark.parametrize(("text", "message"), [
    ("referral_deadlines: {urgent: 4h, soon: 2d}", r"lacks \['routine'\]"),
    ("referral_deadlines: {urgent: 4h, soon: 2d, routine: 7 days}", "not a delay"),
    ("referral_deadlines: {urgent: 0h, soon: 2d, routine: 7d}", "not a delay"),
    ("referral_deadlines: {critical: 1h}", "unknown urgency 'critical'"),
])
def test_a_bad_deadline_policy_names_the_rule(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("kinds: {dac: {}, cpts: {}, crt: {}}\n" + text + "\n")
    with pytest.raises(CatalogueError, match=message):
        KindPolicy.load(f)


def test_the_shipped_deadlines_cover_every_urgency() -> None:
    assert default_policy().deadlines == {"urgent": 4 * HOUR, "soon": 48 * HOUR, "routine": 168 * HOUR}
