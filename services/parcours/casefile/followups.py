"""Who follows the person of a case: what the territory's follow-up index says about it.

A structure **follows** a case's person while it holds a referral of the case it accepted: the
referral's latest status (by `occurred_at`, then event id: the order of arrival does not matter)
is `accepted`, given by that structure (its recipient). A later completion, decline, withdrawal or
redirection ends it. The person is known by the person key of a qualified INS (a keyed digest made
at the edge, the same whichever structure refers them), else by a digest of the pseudonym its
referrals carry, never the pseudonym itself (`person_of`): without a qualified INS, persons meet
only under the same pseudonym, as before.

The processor keeps this per case in the case's index (`fu`) and writes, when it changes, one
compacted record per (person, case) on the `followups` topic: the structures following (a
tombstone when none). Every adapter reads that topic; when a structure receives a referral for a
person followed in another case, the view it is served names the structures following
(`follow_up.followed_by`, itself included when it already follows them), and only them: not the
other case, nor anything in it (README, "One person, one coordinated follow-up").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from parcours.casefile.policy import to_ms
from parcours.contract.models import Event, Person, ReferralStatusChanged, ReferralSubmitted

#: the digest's domain: the same pseudonym gives the same digest in every case, and nothing else
_DOMAIN = b"parcours follow-up index v1\n"


def person_digest(pseudonym: str) -> str:
    return hashlib.blake2b(_DOMAIN + pseudonym.encode(), digest_size=16).hexdigest()


def person_of(person: dict[str, Any] | Person) -> str:
    """Who a referral's person is in the index: the person key of a qualified INS (the same in
    every structure: 64 hex characters), else the digest of the pseudonym (32)."""
    if isinstance(person, Person):
        return person.person_key or person_digest(person.pseudonym)
    return str(person.get("person_key") or person_digest(person["pseudonym"]))


class FollowUp(NamedTuple):
    """A case's entries in the index: per person digest, the structures following (empty: none);
    `gone`: digests the case no longer names (a referral corrected), whose entries are removed."""

    case_id: str
    persons: tuple[str, ...]
    followers: tuple[str, ...]
    gone: tuple[str, ...] = ()


def new_state() -> dict[str, Any]:
    # refs: per referral, its latest ReferralSubmitted [ms, event id, digest]; last: per referral,
    # its latest status [ms, event id, status, author]; sent: what the index last got
    return {"refs": {}, "last": {}, "sent": None}


def persons(fu: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted({digest for _, _, digest in fu["refs"].values()}))


def track(fu: dict[str, Any], case_id: str, event: Event) -> tuple[bool, FollowUp | None]:
    """Follow `event` in the case's follow-up state `fu` (changed in place); return whether it
    changed and, when what the index holds for the case changed, the case's new entries. (A twin
    event replacing a status, one event id with two payloads, is not undone here.)"""
    if not isinstance(event, (ReferralSubmitted, ReferralStatusChanged)):
        return False, None
    order = [to_ms(event.occurred_at), str(event.event_id)]
    table = fu["refs"] if isinstance(event, ReferralSubmitted) else fu["last"]
    known = table.get(event.referral_id)
    if known is not None and order <= known[:2]:
        return False, None  # a duplicate, or older than what is known: the latest one counts
    if isinstance(event, ReferralSubmitted):
        table[event.referral_id] = [*order, person_of(event.person)]
    else:
        table[event.referral_id] = [*order, event.status, event.source]
    now = FollowUp(case_id, persons(fu), following(fu))
    state = [list(now.persons), list(now.followers)]
    sent = fu["sent"]
    if sent == state or not now.persons:
        return True, None
    fu["sent"] = state
    if sent is None and not now.followers:  # nobody follows yet, and the index never heard of the case
        return True, None
    gone = tuple(p for p in (sent[0] if sent else []) if p not in now.persons)
    return True, now._replace(gone=gone)


#: a day in ms: a case's activity is written at most once a day (the retention clock counts days)
DAY_MS = 86_400_000


def activity(fu: dict[str, Any], event: Event) -> tuple[tuple[str, ...], int] | None:
    """The data keys of the case's sealed identities and the case's last activity (ms), when the
    index of persons' activity must hear of it: a new data key in the case, or the first event
    of a later day. `fu` keeps the keys per referral (`keys`) and the activity last told (`act`)."""
    new_key = False
    if isinstance(event, ReferralSubmitted) and event.person.data_key_id:
        keys: dict[str, str] = fu.setdefault("keys", {})
        new_key = keys.get(event.referral_id) != event.person.data_key_id
        keys[event.referral_id] = event.person.data_key_id
    keys = fu.get("keys") or {}
    if not keys:  # a case without a sealed identity (most): nothing kept, nothing told
        return None
    told = fu.get("act", -1)
    ms = to_ms(event.occurred_at)
    if not new_key and ms // DAY_MS <= told // DAY_MS:
        return None
    fu["act"] = max(told, ms)
    return tuple(sorted(set(keys.values()))), fu["act"]


def following(fu: dict[str, Any]) -> tuple[str, ...]:
    """The structures following the case's person: each accepted a referral of it, and has not
    ended that follow-up since."""
    return tuple(sorted({by for _, _, status, by in fu["last"].values() if status == "accepted"}))


def entries(f: FollowUp) -> list[tuple[bytes, bytes | None]]:
    """The index's records for a case: key `<person digest>/<case_id>`, value the followers as
    JSON (`{"case_id", "followers"}`), a tombstone when nobody follows."""
    out: list[tuple[bytes, bytes | None]] = [(f"{person}/{f.case_id}".encode(), None) for person in f.gone]
    for person in f.persons:
        key = f"{person}/{f.case_id}".encode()
        value = json.dumps({"case_id": f.case_id, "followers": list(f.followers)}).encode() if f.followers else None
        out.append((key, value))
    return out


def followed_elsewhere(index: list[tuple[str, list[str]]], case_id: str) -> list[str]:
    """From the index's entries of a person (case, followers), the structures following that
    person in a case other than `case_id` (the reader itself included: a structure receiving a
    second referral of a person it already follows must know it)."""
    return sorted({s for other, followers in index if other != case_id for s in followers})
