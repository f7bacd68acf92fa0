"""The route that registers a structure's webhook endpoint."""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import FastAPI, Request

from parcours.adapters import requests as rq
from parcours.adapters.http.deps import Adapter, caller_of
from parcours.adapters.webhooks import check_endpoint


def webhook_routes(app: FastAPI, adapter: Adapter) -> None:
    cat, store = adapter.catalogue, adapter.store

    @app.put("/v1/webhook", tags=["webhooks"])
    async def put_webhook(request: Request, body: rq.WebhookIn) -> dict[str, Any]:
        caller = caller_of(request)
        await check_endpoint(body.url, https_only=adapter.webhook_https_only,
                             private_networks=adapter.webhook_private_networks)
        secret = body.secret or secrets.token_urlsafe(32)
        # the signing secret travels sealed: Kafka readers without the key never see it
        registration = {"url": body.url, "secret": adapter.sealer.seal(secret),
                        "from_sequence": store.last_sequence(caller.slug)}
        await adapter.publisher.send(cat.topic("webhooks").name, f"endpoint/{caller.slug}".encode(), json.dumps(registration).encode())
        return {"url": body.url, "secret": secret, "signature_header": "X-Parcours-Signature",
                "from_sequence": registration["from_sequence"]}
