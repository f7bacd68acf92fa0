"""The operations routes: health, readiness, the AsyncAPI document, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from parcours.adapters.errors import NotFound, NotReady
from parcours.adapters.http.deps import Adapter


def ops_routes(app: FastAPI, adapter: Adapter) -> None:
    store = adapter.store

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "kind": adapter.kind}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> dict[str, Any]:
        if not (store.following and adapter.claims.following):
            raise NotReady("the read model or the idempotency ledger is not following Kafka")
        if not await adapter.publisher.ping():
            raise NotReady("Kafka is unreachable")
        if not store.caught_up.is_set():
            raise NotReady("views are still loading")
        if not adapter.claims.caught_up.is_set():
            raise NotReady("idempotency keys are still loading")
        return {"status": "ready", "kind": adapter.kind,
                "read_model": {"resumed": store.resumed, "offsets_read_at_start": store.records_at_start}}

    documents: dict[str | None, dict[str, Any]] = {}

    @app.get("/asyncapi.json", tags=["ops"])
    async def asyncapi_document(structure: Annotated[str | None, Query(max_length=100)] = None) -> dict[str, Any]:
        """The AsyncAPI 3.0 document of what this kind's structures (or one `structure` of this
        kind) may use on Kafka, from the topic catalogue and the schemas."""
        from parcours.contract.schemas import default_schema_set
        from parcours.topology import asyncapi

        known = adapter.catalogue.registry.structures
        if structure is not None and (structure not in known or known[structure].kind != adapter.kind):
            raise NotFound(f"no {adapter.kind} structure {structure}")
        if structure not in documents:
            documents[structure] = asyncapi.render(adapter.catalogue, default_schema_set(), kind=adapter.kind, structure=structure)
        return documents[structure]

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(adapter.metrics.registry), media_type=CONTENT_TYPE_LATEST)
