"""Referral deadlines: the first rupture the DAC observatory looks for.

A referral waits for its recipient's first answer (any status or admission decision by someone
other than the sender) for the delay its urgency allows (`topics/policy.yaml`
`referral_deadlines`). When a clock tick finds it unanswered past its deadline, it is overdue:
once, whatever the ticks that follow (the processor then marks an `unanswered_referral` rupture
and reminds the sender). An answer that comes after the deadline is late, by a delay measured
on the events' own times. A withdrawal by the sender closes the wait.

Lateness is decided by the events' `occurred_at` alone; overdue-ness by the processor's clock
ticks (a tick is evaluated at its due time, or later when the processor is behind), never by a
request handler. A tick processed before an answer given in time (a processor behind its inputs,
a replay) finds the referral overdue; the answer then withdraws the mark (`Tracked.retract`);
the sender's reminder stays in its inbox. The state is a plain dict per referral, kept in the
case's index (`refs`), so the fold stays one small document per case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parcours.casefile.policy import to_ms
from parcours.contract.models import AdmissionDecided, Event, ReferralStatusChanged, ReferralSubmitted


@dataclass(frozen=True)
class Overdue:
    """A referral past its deadline without an answer (found by a tick, reported once)."""

    referral_id: str
    sender: str
    recipient: str
    due_ms: int


@dataclass(frozen=True)
class Tracked:
    """What an event did to the case's referral deadlines."""

    changed: bool = False
    #: a first answer after the deadline
    late: LateAnswer | None = None
    #: a referral found overdue by a tick that was processed before an answer given in time (a
    #: processor behind its inputs, a replay): its mark is withdrawn
    retract: Overdue | None = None


@dataclass(frozen=True)
class LateAnswer:
    """A referral's first answer, given after its deadline."""

    referral_id: str
    recipient: str
    due_ms: int
    answered_ms: int

    @property
    def delay_ms(self) -> int:
        return self.answered_ms - self.due_ms


def track(refs: dict[str, dict[str, Any]], event: Event, deadlines: Mapping[str, int], *, replaces: bool = False) -> Tracked:
    """Follow `event` in the case's referral deadlines. `replaces`: `event` is the winning twin of
    an event already folded (one event id, two payloads): a referral's deadline then follows the
    winner's urgency, parties and time, whatever the order the twins came in (what was already
    answered or reported stays)."""
    ms = to_ms(event.occurred_at)
    if isinstance(event, ReferralSubmitted):
        delay = deadlines.get(event.urgency)
        known = refs.get(event.referral_id)
        if replaces and known is not None:
            if delay is None:  # the winner's urgency has no deadline: nobody waits on a clock
                del refs[event.referral_id]
            else:
                known.update({"due": ms + delay, "from": event.source, "to": event.to_structure})
            return Tracked(changed=True)
        if delay is None or known is not None:
            return Tracked()
        refs[event.referral_id] = {"due": ms + delay, "from": event.source, "to": event.to_structure,
                                   "answered": None, "reminded": False}
        return Tracked(changed=True)
    if not isinstance(event, (ReferralStatusChanged, AdmissionDecided)):
        return Tracked()
    rid = event.referral_id
    ref = refs.get(rid)
    if ref is None or ref["answered"] is not None:
        return Tracked()
    if event.source == ref["from"] and not (isinstance(event, ReferralStatusChanged) and event.status == "withdrawn"):
        return Tracked()  # the sender writing about its own referral does not answer it
    ref["answered"] = ms  # an answer, or a withdrawal by the sender: nobody is waiting any more
    on_time = ms <= ref["due"]
    retract = Overdue(rid, ref["from"], ref["to"], ref["due"]) if ref["reminded"] and on_time else None
    late = LateAnswer(rid, event.source, ref["due"], ms) if not on_time and event.source != ref["from"] else None
    return Tracked(changed=True, late=late, retract=retract)


def overdue(refs: dict[str, dict[str, Any]], now_ms: int) -> list[Overdue]:
    """The referrals a tick at `now_ms` finds past their deadline without an answer, each once."""
    out = []
    for rid, ref in sorted(refs.items()):
        if ref["answered"] is None and not ref["reminded"] and ref["due"] <= now_ms:
            ref["reminded"] = True
            out.append(Overdue(rid, ref["from"], ref["to"], ref["due"]))
    return out


def next_due(refs: Mapping[str, dict[str, Any]]) -> int | None:
    """The next deadline a tick must look at (None: no referral is waiting)."""
    return min((r["due"] for r in refs.values() if r["answered"] is None and not r["reminded"]), default=None)
