"""The incremental case file reaches exactly the views of `project` (the specification), whatever
the arrival order, duplicates and clock ticks, and its cost per ordinary event does not depend on
the length of the case."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcours.casefile.incremental import DictStore, IncrementalCaseFile
from parcours.casefile.records import assemble
from parcours.casefile.state import fold_all
from parcours.casefile.view import project
from parcours.contract.models import build_event
from tests.factories import T0, ev
from tests.unit.test_casefile_properties import POLICY, VIEWERS, events, minutes

KINDS = {v.slug: v.kind for v in VIEWERS}


class Views:
    """What a reader of the view topics holds: the latest item record per (structure, key)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, dict]] = {v.slug: {} for v in VIEWERS}
        self.notices: dict[str, list[dict]] = {v.slug: [] for v in VIEWERS}

    def take(self, outcome) -> None:
        for r in outcome.items:
            if r.value is None:
                self.items[r.structure].pop(r.item, None)
            else:
                self.items[r.structure][r.item] = json.loads(r.value)
        for n in outcome.notices:
            self.notices[n.structure].append(n.body)

    def view(self, slug: str):
        return assemble("case-p", slug, self.items[slug].values())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(events(), min_size=1, max_size=14), now_min=minutes, tick_min=minutes, data=st.data())
def test_incremental_views_equal_the_projection(history, now_min, tick_min, data) -> None:
    arrivals = data.draw(st.permutations(history + data.draw(st.lists(st.sampled_from(history), max_size=5))))
    _check_against_the_projection(history, arrivals, now_min, tick_min)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(events(), min_size=1, max_size=10), now_min=minutes, tick_min=minutes, data=st.data())
def test_twins_sharing_an_event_id_give_the_projection_whatever_the_order(history, now_min, tick_min, data) -> None:
    """A bad producer reuses an event id with another payload (another consent, another item): the
    same one wins whatever the order, and nothing the loser gave the rules (a consent's terms, a
    referral's parties) stays behind."""
    originals = data.draw(st.lists(st.sampled_from(history), min_size=1, max_size=3, unique_by=lambda e: e.event_id))
    twins = [build_event(other.event_type, {**other.model_dump(), "event_id": e.event_id})
             for e, other in zip(originals, data.draw(st.lists(events(), min_size=len(originals), max_size=len(originals))), strict=True)]
    _check_against_the_projection(history + twins, data.draw(st.permutations(history + twins)), now_min, tick_min)


def _check_against_the_projection(history, arrivals, now_min, tick_min) -> None:
    core, store, views = IncrementalCaseFile(KINDS, POLICY), DictStore(), Views()
    # what `views rebuild` runs: the same items, step by step, and nothing announced
    quiet, quiet_store = IncrementalCaseFile(KINDS, POLICY, announce=False), DictStore()
    early = T0 + timedelta(minutes=min(now_min, tick_min))
    now = T0 + timedelta(minutes=max(now_min, tick_min))
    for e, at in [(e, early) for e in arrivals] + [(None, now)]:  # events while the clock reads `early`, then a tick
        outcome, silent = core.apply(store, "case-p", e, at), quiet.apply(quiet_store, "case-p", e, at)
        assert silent.items == outcome.items
        assert not silent.notices
        assert not silent.audits
        views.take(outcome)
    state = fold_all("case-p", history)
    for viewer in VIEWERS:
        assert views.view(viewer.slug) == project(state, viewer, POLICY, now), viewer.slug
        # one notification per change: appeared / vanished items alternate, ids never repeat
        ids = [n["notification_id"] for n in views.notices[viewer.slug]]
        assert len(ids) == len(set(ids))
        shown: set[str] = set()
        for n in views.notices[viewer.slug]:
            if n["type"] == "item_visible":
                assert n["item"] not in shown
                shown.add(n["item"])
            else:
                assert n["item"] in shown
                shown.discard(n["item"])
        assert shown == set(views.items[viewer.slug])


def test_duplicates_change_nothing_and_notify_nothing() -> None:
    core, store = IncrementalCaseFile(KINDS, POLICY), DictStore()
    e = ev("MessagePosted", case_id="case-p", source="dac-31")
    first = core.apply(store, "case-p", e, T0)
    assert [n.structure for n in first.notices] == ["dac-31"]
    assert len(first.items) == 1
    again = core.apply(store, "case-p", e, T0)
    assert again.duplicate
    assert not again.items
    assert not again.notices


def test_ordinary_event_cost_does_not_grow_with_the_case() -> None:
    """Lookups per message are the same in a case of 10 events and in one of 2,000."""

    class Counting(DictStore):
        gets = 0

        def get(self, key):
            Counting.gets += 1
            return super().get(key)

    core = IncrementalCaseFile(KINDS, POLICY)
    costs = []
    for length in (10, 2000):
        store = Counting()
        core.apply(store, "case-p", ev("ReferralSubmitted", case_id="case-p", source="cpts-31-nord", to_structure="dac-31"), T0)
        for i in range(length):
            core.apply(store, "case-p", ev("MessagePosted", case_id="case-p", message_id=f"m{i}"), T0)
        Counting.gets = 0
        out = core.apply(store, "case-p", ev("MessagePosted", case_id="case-p", message_id="last"), T0)
        costs.append(Counting.gets)
        assert max(len(r.value or b"") for r in out.items) < 2000  # a record per item, not per case
    assert costs[0] == costs[1]


def test_consent_expiry_is_scheduled_and_a_tick_redacts() -> None:
    core, store = IncrementalCaseFile(KINDS, POLICY), DictStore()
    until = T0 + timedelta(days=1)
    out = core.apply(store, "case-p", ev("ConsentRecorded", case_id="case-p", grantee="crt-31-muret",
                                          categories=["discussion"], valid_until=until), T0)
    assert out.schedule == ("case-p", int(until.timestamp() * 1000))
    out = core.apply(store, "case-p", ev("MessagePosted", case_id="case-p"), T0)
    assert {n.structure for n in out.notices} == {"dac-31", "crt-31-muret"}
    out = core.apply(store, "case-p", None, until)
    assert [(n.structure, n.body["type"]) for n in out.notices] == [("crt-31-muret", "redaction")]
    assert out.schedule == ("case-p", None)
    assert set(out.notices[0].body) == {"notification_id", "type", "case_id", "item", "view_version"}


def test_cached_consent_decisions_are_not_reused_under_another_policy_or_after_another_writer() -> None:
    """The consent decisions kept in a case's index hold for the consents, structures and policy they
    were computed from: a restart with a stricter kind ceiling, or a consent the index gained from
    another writer (an older version during an upgrade), decides again."""
    from parcours.casefile.policy import Policy

    lenient = IncrementalCaseFile(KINDS, Policy({}))
    store = DictStore()
    permit = ev("ConsentRecorded", case_id="case-p", source="dac-31", grantee="cpts", categories=["social"])
    lenient.apply(store, "case-p", permit, T0)
    first = lenient.apply(store, "case-p", ev("MessagePosted", case_id="case-p", message_id="m1", category="social"), T0)
    assert "cpts-31-nord" in {r.structure for r in first.items}
    strict = IncrementalCaseFile(KINDS, POLICY)  # CPTS never see social items
    later = strict.apply(store, "case-p", ev("MessagePosted", case_id="case-p", message_id="m2", category="social"), T0)
    assert "cpts-31-nord" not in {r.structure for r in later.items}
    # another writer added a deny to the index and kept the cached decisions as they were
    idx = json.loads(store.data["idx"])
    deny = ev("ConsentRecorded", case_id="case-p", source="dac-31", grantee="cpts", categories=["social"],
              decision="deny", consent_id="cons-2", at=1)
    from parcours.casefile.incremental import document

    idx["consents"].append(document(deny)["m"]["terms"])
    store.data["idx"] = json.dumps(idx).encode()
    after = lenient.apply(store, "case-p", ev("MessagePosted", case_id="case-p", message_id="m3", category="social"), T0)
    assert "cpts-31-nord" not in {r.structure for r in after.items}
