"""What a structure may publish: the rules `publishing.accept` applies at every door (the JSON and
FHIR routes, the Kafka ingress).

Stateless rules come from the topic catalogue and the registry; stateful ones (the case is
visible to the publisher, only a referral's recipient changes its status or decides on
admission) read the publisher's own case views through `CaseViews` (the read model).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from parcours.contract.models import (
    KINDS,
    AdmissionDecided,
    CommissionOpened,
    ConsentRecorded,
    Event,
    OpinionGiven,
    ReferralStatusChanged,
    ReferralSubmitted,
    RuptureReported,
)
from parcours.publishing.errors import BadReference, NotPermitted, NotVisible, TooLate
from parcours.territory import commission
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Structure

T = TypeVar("T")


class CaseViews(Protocol):
    """What the stateful rules read: a structure's view of a case, a referral it sees."""

    def view(self, slug: str, case_id: str) -> dict[str, Any] | None: ...

    def has_case(self, slug: str, case_id: str) -> bool:
        """Does `slug` see anything of the case? (what `view` would say, without assembling it)"""

    def referral(self, slug: str, referral_id: str) -> tuple[str, dict[str, Any]] | None: ...

    async def until(self, probe: Callable[[], T | None], wait: float) -> T | None:
        """`probe()` once it is not None (woken by the read model's changes), or None after `wait` s."""


class CaseLookups(CaseViews, Protocol):
    """The case views, and whether any structure sees anything of a case (a referral's rule)."""

    def case_exists(self, case_id: str) -> bool: ...


def check_kind(catalogue: Catalogue, caller: Structure, event_type: str) -> None:
    if not catalogue.may_publish(caller.kind, event_type):
        allowed = sorted(catalogue.for_event(event_type).events[event_type])
        raise NotPermitted(f"a {caller.kind} may not publish {event_type}",
                        rule=f"topics/catalogue.yaml: {event_type} may be published by {allowed}")


def check_stateless(catalogue: Catalogue, caller: Structure, event: Event) -> None:
    """Rights of the kind, authorship, and references to registered structures."""
    check_kind(catalogue, caller, event.event_type)
    if event.source != caller.slug:
        raise NotPermitted(f"source {event.source} is not the publisher {caller.slug}", rule="source is the authenticated structure")
    known = catalogue.registry.structures
    if isinstance(event, ReferralSubmitted) and event.to_structure not in known:
        raise BadReference("unknown recipient", fields=[{"field": "to_structure", "rule": f"{event.to_structure} is not a registered structure"}])
    if isinstance(event, ReferralStatusChanged) and event.redirect_to and event.redirect_to not in known:
        raise BadReference("unknown redirect target", fields=[{"field": "redirect_to", "rule": "must be a registered structure"}])
    if isinstance(event, ConsentRecorded) and event.grantee not in KINDS and event.grantee not in known:
        raise BadReference("unknown grantee", fields=[{"field": "grantee", "rule": "a registered structure slug or a kind (dac, cpts, crt)"}])
    if isinstance(event, ConsentRecorded) and (problems := event.self_grant_problems(caller.kind)):
        raise BadReference("a permit its recorder grants itself", fields=[{"field": f, "rule": r} for f, r in problems])
    if isinstance(event, CommissionOpened):
        unknown = [s for s in event.invited if s not in known]
        if unknown:
            raise BadReference("unknown invited structure", fields=[{"field": "invited", "rule": f"{', '.join(unknown)}: not registered structures"}])
    if isinstance(event, AdmissionDecided) and event.alternative and event.alternative not in known:
        raise BadReference("unknown alternative", fields=[{"field": "alternative", "rule": f"{event.alternative} is not a registered structure"}])
    if isinstance(event, RuptureReported) and event.territory != caller.territory:
        raise NotPermitted(f"{caller.slug} reports ruptures for territory {caller.territory} only", rule="ruptures: own territory")


def current_recipient(ref: dict[str, Any]) -> str:
    """The referral's recipient, following redirections."""
    recipient = ref.get("to")
    for s in ref.get("status_history", []):
        if s["status"] == "redirected" and s.get("redirect_to"):
            recipient = s["redirect_to"]
    return str(recipient)


async def check_stateful(store: CaseViews, caller: Structure, event: Event, wait: float = 0.0, now: datetime | None = None) -> None:
    """The publisher must see the case it writes into (a new referral opens a case), and only a
    referral's recipient changes its status (the sender may withdraw), decides on admission or
    opens a commission (one at a time, none after a final decision); an opinion comes from a
    structure the commission invited, before its deadline.
    `wait`: how long to wait for a view the processor may not have written yet. `now`: the
    instant a deadline is judged at (default: this server's clock, never the publisher's
    `occurred_at`, which a Kafka partner sets)."""
    now = now or datetime.now(UTC)
    if isinstance(event, (ReferralStatusChanged, AdmissionDecided, CommissionOpened, OpinionGiven)):
        found = await store.until(lambda: store.referral(caller.slug, event.referral_id), wait)
        if found is None or found[0] != event.case_id:
            raise NotVisible(f"no referral {event.referral_id} in case {event.case_id} visible to {caller.slug}")
        ref = found[1]
        if isinstance(event, OpinionGiven):
            check_opinion(ref, caller, event, now)
        elif isinstance(event, ReferralStatusChanged) and event.status == "withdrawn":
            if caller.slug != ref["from"]:
                raise NotPermitted("only the sender may withdraw a referral", rule="withdrawn: sender only")
        elif caller.slug != current_recipient(ref):
            what = {AdmissionDecided: "decide on admission", CommissionOpened: "open an admission commission"}.get(
                type(event), f"set a referral's status to {getattr(event, 'status', '')}")
            raise NotPermitted(f"only the recipient ({current_recipient(ref)}) may {what}",
                            rule="referral status, admission and commission: recipient only (the sender may withdraw)")
        elif isinstance(event, CommissionOpened):
            check_opening(ref, event, now)
        return
    if isinstance(event, ReferralSubmitted) or event.case_id is None:
        return  # a referral may open a case: `check_referral_case`
    await _check_visible(store, caller, event.case_id, wait)


#: who chose the case a referral goes into: the door (a new case's id it made, or the case a join
#: leads to), the publisher naming an existing case of its own, or the publisher choosing the id
#: itself, of a new case or of its own (the Kafka ingress: every event carries its `case_id`)
ReferralCase = Literal["door", "existing", "publisher"]


async def check_referral_case(store: CaseLookups, caller: Structure, event: ReferralSubmitted, case: ReferralCase,
                              wait: float = 0.0) -> None:
    """A referral opens a new case or goes into one its publisher sees, never into someone else's:
    a case the door chose passes; an `existing` case must be visible to the publisher (waiting up to
    `wait` s for the processor to write it); a case the `publisher` chose is a new one when no
    structure knows it, else it must be visible likewise."""
    if case == "door" or (case == "publisher" and not store.case_exists(event.case_id)):
        return
    await _check_visible(store, caller, event.case_id, wait)


async def _check_visible(store: CaseViews, caller: Structure, case_id: str, wait: float) -> None:
    if await store.until(lambda: store.has_case(caller.slug, case_id) or None, wait) is None:
        raise NotVisible(f"no case {case_id} visible to {caller.slug}")


def check_opening(ref: dict[str, Any], event: CommissionOpened, now: datetime | None = None) -> None:
    """One commission at a time on a referral, and none once it is finally decided (the referral's
    own commission again, by its id, is the same commission: a retry)."""
    known = commission.find(ref, event.commission_id)
    if known is not None and known["event_id"] == str(event.event_id):
        return  # the very event again (an HTTP retry): the checks held when it was first accepted
    if known is not None:
        raise TooLate(f"commission {event.commission_id} exists on referral {event.referral_id}",
                      rule="commission: a new commission has a new id")
    now = event.occurred_at if now is None else now
    pending = commission.pending(ref, now)
    if pending is not None:
        raise TooLate(f"commission {pending['commission_id']} on referral {event.referral_id} is not decided yet",
                      rule="commission: one at a time per referral (record its admission decision first)")
    final = next((a for a in reversed(ref.get("admission_history", [])) if a["decision"] in commission.FINAL), None)
    if final is not None:
        raise TooLate(f"referral {event.referral_id} was decided ({final['decision']})",
                      rule="commission: none after an admission or a refusal (a waitlisting allows another)")


def check_opinion(ref: dict[str, Any], caller: Structure, event: OpinionGiven, now: datetime | None = None) -> None:
    """An opinion: to a commission its author sees, by a structure it invited, while it is open."""
    found = commission.find(ref, event.commission_id)
    if found is None:
        raise NotVisible(f"no commission {event.commission_id} on referral {event.referral_id} visible to {caller.slug}")
    if caller.slug not in found["invited"]:
        raise NotPermitted(f"{caller.slug} is not invited to commission {event.commission_id}",
                           rule="opinion: by a structure the commission invited")
    state = commission.status(found, ref, now or event.occurred_at)
    if state == "deliberating":
        raise TooLate(f"the deadline for opinions to commission {event.commission_id} has passed",
                      rule=f"opinion_deadline: opinions are accepted until {found['opinion_deadline']}",
                      fields=[{"field": "opinion_deadline", "rule": f"passed at {found['opinion_deadline']}"}])
    if state in ("decided", "closed"):
        raise TooLate(f"commission {event.commission_id} has {'decided' if state == 'decided' else 'closed'}",
                      rule="opinion: while the commission is open")


async def eventually_view(store: CaseViews, slug: str, case_id: str, wait: float) -> dict[str, Any] | None:
    return await store.until(lambda: store.view(slug, case_id), wait)


async def eventually_referral(store: CaseViews, slug: str, referral_id: str, wait: float) -> tuple[str, dict[str, Any]] | None:
    return await store.until(lambda: store.referral(slug, referral_id), wait)
