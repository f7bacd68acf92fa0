"""The HTTP application of one adapter: its lifespan, its gate, its refusals, its routes (each group
in its own module). Handlers are thin: authenticate, check the kind's rights (from the topic
catalogue), build the event, hand it to the use case, answer 202 once Kafka acknowledged it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from parcours.adapters.guard import EdgeGuard
from parcours.adapters.http.admin import admin_routes
from parcours.adapters.http.answers import ERROR_RESPONSES, install_errors
from parcours.adapters.http.deps import Adapter
from parcours.adapters.http.directory import directory_routes
from parcours.adapters.http.fhir import fhir_routes
from parcours.adapters.http.items import item_routes
from parcours.adapters.http.openapi import document_headers
from parcours.adapters.http.ops import ops_routes
from parcours.adapters.http.referrals import commission_routes, follow_up_routes, referral_routes
from parcours.adapters.http.smart import smart_routes
from parcours.adapters.http.views import view_routes
from parcours.adapters.http.webhook import webhook_routes
from parcours.adapters.retention import sweep_forever

#: FastAPI's OpenTelemetry hooks, off: Parcours exports Prometheus metrics, and asking whether
#: OpenTelemetry is configured cost ~4% of a POST (README, Performance)
NO_OPENTELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}


def create_app(adapter: Adapter) -> FastAPI:
    """The HTTP application of one adapter: its lifespan, its gate, its error mapping, its routes."""
    kind = adapter.kind

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        adapter.store.start()
        adapter.registry.start()
        adapter.claims.start()
        if adapter.auth.discovery is not None:
            adapter.auth.discovery.start()
        adapter.delivery.start()
        sweeper = asyncio.create_task(sweep_forever(adapter.store, adapter.destroy_keys, adapter.retention), name="identity-retention")
        adapter.metrics.up.labels(kind).set(1)
        yield
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await adapter.delivery.stop()
        if adapter.auth.discovery is not None:
            await adapter.auth.discovery.stop()
        await adapter.claims.stop()
        await adapter.registry.stop()
        await adapter.store.stop()
        await adapter.publisher.close()

    app = FastAPI(
        telemetry=NO_OPENTELEMETRY,
        title=f"Parcours {kind.upper()} adapter",
        version="1",
        description=f"The Parcours partner edge for {kind.upper()} structures. Authenticate with `Authorization: Bearer <token>`: "
                    "an access token from the token endpoint named in `/.well-known/smart-configuration` (SMART Backend Services).",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.adapter = adapter
    install_errors(app, adapter)
    referral_routes(app, adapter)
    commission_routes(app, adapter)
    follow_up_routes(app, adapter)
    item_routes(app, adapter)
    view_routes(app, adapter)
    webhook_routes(app, adapter)
    directory_routes(app, adapter)
    ops_routes(app, adapter)
    smart_routes(app, adapter)
    admin_routes(app, adapter)
    document_headers(app)
    fhir_routes(app, adapter)
    # before any body is read: authentication, the kind's rights, the rate, the size
    max_body = min(t.max_value_bytes for t in adapter.catalogue.canonical())
    app.add_middleware(EdgeGuard, kind=kind, catalogue=adapter.catalogue, auth=adapter.auth, max_body=max_body, limiter=adapter.limiter,
                       routes=lambda: app.router.routes,
                       on_refusal=lambda route, code: adapter.metrics.refused.labels(route, kind, code, "http").inc())
    return app
