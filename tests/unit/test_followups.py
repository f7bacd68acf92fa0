"""One person, one coordinated follow-up: who follows a case's person (whatever the arrival
order), what the index holds (a digest and slugs, never content), and what a referral's recipient
is told (the other structures following the person elsewhere, nothing more)."""

from __future__ import annotations

import itertools
import json

from parcours.casefile import followups
from parcours.casefile.followups import FollowUp, followed_elsewhere, person_digest
from parcours.casefile.incremental import DictStore, IncrementalCaseFile
from parcours.casefile.policy import Policy
from tests.factories import ev

KINDS = {"dac-31": "dac", "cpts-31-nord": "cpts", "cpts-31-sud": "cpts", "crt-31-muret": "crt", "crt-31-nord": "crt"}
PERSON = {"pseudonym": "P-7f3a9c", "birth_year": 1938, "postcode": "31600"}


def referral(rid: str = "ref-1", to: str = "dac-31", source: str = "cpts-31-nord", pseudonym: str = "P-7f3a9c", at: int = 0):
    return ev("ReferralSubmitted", source=source, to_structure=to, referral_id=rid, at=at, person={**PERSON, "pseudonym": pseudonym})


def status(value: str, rid: str = "ref-1", source: str = "dac-31", at: int = 10):
    return ev("ReferralStatusChanged", source=source, referral_id=rid, status=value, at=at)


def final(events) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fu = followups.new_state()
    for e in events:
        followups.track(fu, "case-1", e)
    return followups.persons(fu), followups.following(fu)


def test_a_structure_follows_while_its_acceptance_is_the_referrals_latest_status_whatever_the_order() -> None:
    history = [referral(), status("acknowledged", at=5), status("accepted", at=10)]
    for order in itertools.permutations(history):
        assert final(order) == ((person_digest("P-7f3a9c"),), ("dac-31",))
    ended = [*history, status("completed", at=20)]
    for order in itertools.permutations(ended):
        assert final(order)[1] == ()
    assert final([referral(), status("declined")])[1] == ()


def test_the_index_holds_a_digest_of_the_pseudonym_and_slugs_and_a_tombstone_when_nobody_follows() -> None:
    fu = followups.new_state()
    assert followups.track(fu, "case-1", referral()) == (True, None)  # nobody follows yet: nothing written
    changed, entry = followups.track(fu, "case-1", status("accepted"))
    assert changed
    assert entry == FollowUp("case-1", (person_digest("P-7f3a9c"),), ("dac-31",))
    [(key, value)] = followups.entries(entry)
    assert key == f"{person_digest('P-7f3a9c')}/case-1".encode()
    assert b"P-7f3a9c" not in key
    assert json.loads(value or b"") == {"case_id": "case-1", "followers": ["dac-31"]}
    assert followups.track(fu, "case-1", status("accepted", at=11)) == (True, None)  # the same followers: nothing new
    _, ended = followups.track(fu, "case-1", status("completed", at=30))
    assert ended is not None
    assert followups.entries(ended) == [(key, None)]
    assert person_digest("P-7f3a9c") != person_digest("P-7f3a9d")


def test_a_corrected_referral_moves_the_case_to_the_corrected_person_whatever_the_order() -> None:
    wrong, right = referral(pseudonym="WRONG-0042", at=0), referral(pseudonym="RIGHT-0001", at=5)
    for order in itertools.permutations([wrong, right, status("accepted")]):
        assert final(order) == ((person_digest("RIGHT-0001"),), ("dac-31",))
    fu = followups.new_state()
    followups.track(fu, "case-1", wrong)
    _, first = followups.track(fu, "case-1", status("accepted"))
    assert first is not None
    assert first.persons == (person_digest("WRONG-0042"),)
    _, corrected = followups.track(fu, "case-1", right)
    assert corrected is not None
    assert followups.entries(corrected) == [  # the wrong person's entry removed, the right one's written
        (f"{person_digest('WRONG-0042')}/case-1".encode(), None),
        (f"{person_digest('RIGHT-0001')}/case-1".encode(), b'{"case_id": "case-1", "followers": ["dac-31"]}')]


def test_a_recipient_is_told_the_structures_following_the_person_in_another_case() -> None:
    index = [("case-1", ["dac-31"]), ("case-2", ["crt-31-muret"]), ("case-3", ["crt-31-nord", "dac-31"])]
    assert followed_elsewhere(index, "case-2") == ["crt-31-nord", "dac-31"]
    # itself too: the DAC receiving a second referral in case 1 already follows the person in case 3
    assert followed_elsewhere(index, "case-1") == ["crt-31-muret", "crt-31-nord", "dac-31"]
    assert followed_elsewhere([("case-2", ["crt-31-muret"])], "case-2") == []


def test_the_case_file_reports_the_index_entries_once_per_change() -> None:
    core, store = IncrementalCaseFile(KINDS, Policy()), DictStore()
    accepted = status("accepted")
    outs = [core.apply(store, "case-1", e, e.occurred_at) for e in (referral(), accepted, ev("MessagePosted", at=12))]
    assert [o.follow_up for o in outs] == [None, FollowUp("case-1", (person_digest("P-7f3a9c"),), ("dac-31",)), None]
    again = core.apply(store, "case-1", accepted, accepted.occurred_at)  # the same event again
    assert again.duplicate
    assert again.follow_up is None


def test_the_processor_writes_the_index_records() -> None:
    from parcours.contract.codec import Codec
    from parcours.processors.core import MemoryState, RecordProcessor
    from parcours.topology.catalogue import Catalogue
    from parcours.topology.registry import default_policy

    cat = Catalogue.load(prefix="t")
    core, codec, state = RecordProcessor(cat, default_policy()), Codec(), MemoryState()
    written = []
    for e in (referral(), status("accepted")):
        enc = codec.encode(e)
        step = core.process(cat.for_event(e.event_type).name, 0, 0, enc.key, enc.value, enc.headers, lambda: state)
        written += [(o.key, o.value) for o in step.outputs if o.topic == "t.followups"]
    assert written == [(f"{person_digest('P-7f3a9c')}/case-1".encode(), b'{"case_id": "case-1", "followers": ["dac-31"]}')]
