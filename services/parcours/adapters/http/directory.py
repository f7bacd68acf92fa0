"""The routes of the territory's shared resource directory."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam

from parcours.adapters import requests as rq
from parcours.adapters.errors import Invalid
from parcours.adapters.http.deps import Adapter, caller_of
from parcours.contract.directory import Age, Gir, Need, Postcode, build_offer, encode_offer
from parcours.contract.errors import EventValidationError
from parcours.contract.models import Identifier
from parcours.territory.directory import Query as DirectoryQuery
from parcours.territory.directory import rank


def directory_routes(app: FastAPI, adapter: Adapter) -> None:
    """The territory's shared resource directory: each structure publishes its offers; every
    structure reads them all, ranked for a person's postcode, need, GIR and age."""
    cat, store = adapter.catalogue, adapter.store
    topic = cat.topic("directory").name

    @app.put("/v1/directory/offers/{offer_id}", status_code=202, tags=["directory"])
    async def put_offer(request: Request, offer_id: Annotated[Identifier, PathParam()], body: rq.OfferIn) -> dict[str, Any]:
        """Publish (or replace) an offer of your structure: what, for whom, where, capacity, contact.
        No person data. Answered (202) once Kafka holds it; it shows in `GET /v1/directory` moments after."""
        caller = caller_of(request)
        try:
            offer = build_offer({**body.model_dump(), "structure": caller.slug, "offer_id": offer_id, "updated_at": datetime.now(UTC)})
        except EventValidationError as exc:
            raise Invalid(str(exc), fields=[{"field": f, "rule": r} for f, r in exc.errors]) from None
        await adapter.publisher.send(topic, offer.key.encode(), encode_offer(offer))
        return offer.model_dump(mode="json")

    @app.delete("/v1/directory/offers/{offer_id}", status_code=202, tags=["directory"])
    async def delete_offer(request: Request, offer_id: Annotated[Identifier, PathParam()]) -> dict[str, Any]:
        """Withdraw an offer of your structure (idempotent)."""
        caller = caller_of(request)
        key = f"{caller.slug}/{offer_id}"
        await adapter.publisher.send(topic, key.encode(), None)
        return {"withdrawn": key}

    @app.get("/v1/directory", tags=["directory"])
    async def directory(request: Request, postcode: Annotated[Postcode | None, Query()] = None,
                        need: Annotated[Need | None, Query()] = None, gir: Annotated[Gir | None, Query()] = None,
                        age: Annotated[Age | None, Query()] = None) -> dict[str, Any]:
        """Every offer of the territory's structures, best fit first (README, "Resource directory"):
        an offer's `structure` is what a referral's `to_structure` names."""
        caller_of(request)
        ranked = rank(store.offers(), DirectoryQuery(postcode, need, gir, age))
        return {"query": {"postcode": postcode, "need": need, "gir": gir, "age": age},
                "offers": [{**o.model_dump(mode="json"), "fit": f.as_dict()} for o, f in ranked]}
