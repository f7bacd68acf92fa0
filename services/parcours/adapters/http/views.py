"""The routes that read: the caller's consent-filtered views, its inbox feed, the observatory."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from parcours.adapters.errors import Forbidden
from parcours.adapters.http.deps import Adapter, caller_of
from parcours.adapters.http.identity import with_identities
from parcours.adapters.http.submit import record_access, visible_case
from parcours.casefile.followups import followed_elsewhere, person_of
from parcours.publishing.rules import current_recipient
from parcours.readmodel.store import EdgeStore
from parcours.territory import commission
from parcours.topology.registry import Structure


def _with_follow_up(store: EdgeStore, caller: Structure, case_id: str, referral: dict[str, Any]) -> dict[str, Any]:
    """A referral the caller receives, with the structures following its person in another case
    (`follow_up.followed_by`: their slugs, nothing of those cases), when there are any."""
    person = referral.get("person")
    if not person or current_recipient(referral) != caller.slug:
        return referral
    others = followed_elsewhere(store.followups(person_of(person)), case_id)
    return {**referral, "follow_up": {"followed_by": others}} if others else referral

def view_routes(app: FastAPI, adapter: Adapter) -> None:
    """The caller's consent-filtered views, its inbox feed and (DAC) the observatory."""
    cat, store = adapter.catalogue, adapter.store

    @app.get("/v1/cases/{case_id}", tags=["views"])
    async def get_case(request: Request, case_id: str) -> dict[str, Any]:
        caller = caller_of(request)
        view = await visible_case(store, caller, case_id)
        await record_access(adapter, caller, case_id)  # no record, no read: 503 when Kafka cannot take it
        now = datetime.now(UTC)  # each commission's state (open, deliberating, decided) at the time of the read
        referrals = [_with_follow_up(store, caller, case_id, commission.annotated(r, now)) for r in view["referrals"]]
        return {**view, "referrals": await with_identities(adapter, caller, case_id, referrals, f"GET /v1/cases/{case_id}")}

    @app.get("/v1/cases/{case_id}/disclosures", tags=["views"])
    async def disclosures(request: Request, case_id: str) -> dict[str, Any]:
        """Right of access: for the items you authored in this case, who received them (or lost
        them), when, and on which legal basis."""
        caller = caller_of(request)
        await visible_case(store, caller, case_id)
        records = [r for r in store.disclosures(caller.slug, case_id) if r["structure"] != caller.slug]
        return {"case_id": case_id, "structure": caller.slug, "disclosures": [
            {k: r[k] for k in ("item", "structure", "change", "basis", "ref", "at", "cause", "self_granted") if k in r}
            for r in records]}

    @app.get("/v1/cases", tags=["views"])
    async def list_cases(request: Request, after: Annotated[str, Query(max_length=200)] = "",
                         limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> dict[str, Any]:
        """Your cases in `case_id` order, `limit` at a time: pass the last `case_id` as `after`."""
        caller = caller_of(request)
        views = [v for v in (store.view(caller.slug, cid) for cid in store.cases(caller.slug, after, limit)) if v is not None]
        return {"structure": caller.slug, "next_after": views[-1]["case_id"] if len(views) == limit else None, "cases": [
            {"case_id": v["case_id"], "version": v["version"], "updated_at": v["updated_at"], "referrals": len(v["referrals"])}
            for v in views
        ]}

    @app.get("/v1/inbox", tags=["views"])
    async def inbox(request: Request, after: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    wait: Annotated[float, Query(ge=0, le=60)] = 0) -> dict[str, Any]:
        caller = caller_of(request)
        notes = await store.wait_notifications(caller.slug, after, limit, wait)
        adapter.metrics.inbox_backlog.labels(caller.slug).set(store.inbox_size(caller.slug))
        return {"structure": caller.slug, "notifications": notes,
                "next_after": notes[-1]["sequence"] if notes else after}

    @app.get("/v1/observatory", tags=["views"])
    async def observatory(request: Request) -> dict[str, Any]:
        caller = caller_of(request)
        spec = cat.topic("observatory")
        if caller.kind not in spec.readers:
            raise Forbidden(f"a {caller.kind} may not read the observatory", rule=f"topics/catalogue.yaml: observatory readers {sorted(spec.readers)}")
        return {"ruptures": [{"territory": t, "week": w, "type": ty, "count": n} for t, w, ty, n in store.observatory_counts()]}
