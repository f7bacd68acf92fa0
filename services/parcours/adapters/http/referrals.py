"""The routes on referrals: submit one, change its status, its admission commission and opinions,
join another structure's follow-up of the same person."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from parcours.adapters import requests as rq
from parcours.adapters.errors import Conflict, Forbidden, NotFound
from parcours.adapters.http.deps import VIEW_WAIT_S, Adapter, caller_of, idempotency_key
from parcours.adapters.http.submit import on_referral, submit
from parcours.bus.idempotency import body_hash
from parcours.casefile.followups import person_of
from parcours.publishing.rules import current_recipient, eventually_referral


def referral_routes(app: FastAPI, adapter: Adapter) -> None:
    """Referrals and their statuses: decode the body, build the event, check the rules, publish."""
    store = adapter.store

    @app.post("/v1/referrals", status_code=202, name="ReferralSubmitted", tags=["events"])
    async def post_referral(request: Request, body: rq.ReferralIn) -> dict[str, Any]:
        """Refer a person to another structure; opens a new case unless `case_id` names one of yours."""
        caller, key = caller_of(request), idempotency_key(request)

        def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            referral_id = f"ref-{short}"
            fields = body.model_dump(exclude={"case_id"})
            fields |= {"case_id": body.case_id or f"case-{short}", "referral_id": referral_id}
            return fields, {"referral_id": referral_id}

        return await submit(adapter, request, caller, key, body, "ReferralSubmitted", build,
                             referral_case="door" if body.case_id is None else "existing")

    @app.post("/v1/referrals/{referral_id}/status", status_code=202, name="ReferralStatusChanged", tags=["events"])
    async def post_status(request: Request, referral_id: str, body: rq.StatusIn) -> dict[str, Any]:
        """Acknowledge, accept, decline, redirect, complete (recipient) or withdraw (sender) a referral."""
        caller, key = caller_of(request), idempotency_key(request)
        build = await on_referral(store, caller, referral_id, body)
        return await submit(adapter, request, caller, key, body, "ReferralStatusChanged", build)

def commission_routes(app: FastAPI, adapter: Adapter) -> None:
    """A CRT's admission commission on a referral it received, and the invited structures' opinions."""
    store = adapter.store

    @app.post("/v1/referrals/{referral_id}/commissions", status_code=202, name="CommissionOpened", tags=["events"])
    async def open_commission(request: Request, referral_id: str, body: rq.CommissionIn) -> dict[str, Any]:
        """(CRT, the referral's recipient) Open an admission commission: invite structures to give an
        opinion before `opinion_deadline`; they become parties of the referral. One at a time."""
        caller, key = caller_of(request), idempotency_key(request)
        build = await on_referral(store, caller, referral_id, body, new_id=("commission_id", "com"))
        return await submit(adapter, request, caller, key, body, "CommissionOpened", build)

    @app.post("/v1/referrals/{referral_id}/commissions/{commission_id}/opinions", status_code=202, name="OpinionGiven",
              tags=["events"])
    async def give_opinion(request: Request, referral_id: str, commission_id: str, body: rq.OpinionIn) -> dict[str, Any]:
        """(An invited structure) Your opinion, until the commission's deadline; a later one replaces it."""
        caller, key = caller_of(request), idempotency_key(request)
        build = await on_referral(store, caller, referral_id, body, {"commission_id": commission_id})
        return await submit(adapter, request, caller, key, body, "OpinionGiven", build)

#: a referral still waiting for its recipient's answer: what a join passes on
OPEN_REFERRAL = frozenset({"submitted", "acknowledged"})

def follow_up_routes(app: FastAPI, adapter: Adapter) -> None:
    """One person, one coordinated follow-up: the recipient of a referral joins the case that
    another structure already follows instead of opening a second one."""
    store = adapter.store

    @app.post("/v1/referrals/{referral_id}/join", status_code=202, name="FollowUpJoined", tags=["events"])
    async def join(request: Request, referral_id: str, body: rq.JoinIn) -> dict[str, Any]:
        """(The referral's recipient) Join the follow-up of `followed_by` (one of the structures
        `GET /v1/cases/{case}` names under the referral's `follow_up`) instead of opening a second
        one: this referral is declined as joined; when `followed_by` is another structure, your
        referral to it, with this referral's content, is added to the case it follows (your kind
        must be one that refers: the catalogue's ReferralSubmitted rights)."""
        caller, key = caller_of(request), idempotency_key(request)
        found = await eventually_referral(store, caller.slug, referral_id, VIEW_WAIT_S)
        if found is None or not found[1].get("person"):
            raise NotFound(f"no referral {referral_id} visible to {caller.slug}")
        case_id, ref = found
        if current_recipient(ref) != caller.slug:
            raise Forbidden(f"only the recipient ({current_recipient(ref)}) may join another follow-up",
                            rule="join: the referral's recipient")
        entries = store.followups(person_of(ref["person"]))
        joined = next((c for c, followers in entries if c != case_id and body.followed_by in followers), None)
        # the key stands for this body *and* the case joined: a retry that would land elsewhere is a 409
        claimed = {**body.model_dump(), "joined_case": joined}
        retry = key is not None and adapter.claims.accepted(caller.slug, f"{key}/declined", body_hash(request.url.path, claimed))
        if ref["status"] not in OPEN_REFERRAL and not retry:  # withdrawn, or already answered: nothing to pass on
            raise Conflict(f"referral {referral_id} is {ref['status']}", rule="join: an open referral (submitted or acknowledged)")
        if joined is None:
            raise Conflict(f"{body.followed_by} follows no other case of this referral's person",
                           rule="join: a follow-up named in the referral's follow_up.followed_by",
                           fields=[{"field": "followed_by", "rule": "a structure following the person in another case"}])
        answer: dict[str, Any] = {"joined_case": joined}
        reason = f"joined the follow-up of {body.followed_by}"
        if body.followed_by != caller.slug:  # its own follow-up needs no referral: the caller follows that case already
            content = {k: ref[k] for k in ("person", "reasons", "urgency", "context", "summary")}

            def referral(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
                new_id = f"ref-{short}"
                return ({**content, "case_id": joined, "referral_id": new_id, "to_structure": body.followed_by},
                        {"referral_id": new_id})

            # the case joined is the edge's choice (the follow-up index), not one the caller must see
            answer |= await submit(adapter, request, caller, key, claimed, "ReferralSubmitted", referral, referral_case="door")
            reason += f" (referral {answer['referral_id']})"

        def declined(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            return {"case_id": case_id, "referral_id": referral_id, "status": "declined", "reason": reason}, {}

        closed = await submit(adapter, request, caller, f"{key}/declined" if key else None, claimed, "ReferralStatusChanged", declined)
        return {**answer, "declined": {"event_id": closed["event_id"], "referral_id": referral_id}}
