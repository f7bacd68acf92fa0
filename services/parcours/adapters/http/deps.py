"""What every route of an adapter uses: the adapter's parts (`Adapter`, built by `parcours.bootstrap`),
the authenticated caller, the Idempotency-Key header, the route's name.

The caller and its headers are read from the request, not declared as FastAPI dependencies:
solving them cost a fifth of a POST (README, Performance). `openapi.document_headers` declares
them in the OpenAPI document instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from parcours.adapters.auth import EdgeAuth
from parcours.adapters.errors import Invalid, Unauthorized
from parcours.adapters.guard import TokenBucket
from parcours.adapters.http.metrics import AdapterMetrics
from parcours.adapters.retention import Retention
from parcours.adapters.webhooks import RetryPolicy, WebhookDelivery
from parcours.bus.idempotency import IdempotencyClaims
from parcours.bus.publisher import Publisher
from parcours.publishing.accept import Acceptance
from parcours.readmodel.store import EdgeStore
from parcours.security.identity import IdentityVault
from parcours.security.sealing import Sealer
from parcours.topology.catalogue import Catalogue
from parcours.topology.live import RegistryFollower
from parcours.topology.registry import Structure

#: how long a write waits for the caller's view of its case before answering 404
VIEW_WAIT_S = 3.0


@dataclass
class Adapter:
    """Everything an adapter's routes use, built by the composition root (`parcours.bootstrap`);
    `app.create_app` takes it whole, so a test may pass fakes for any part."""

    kind: str
    catalogue: Catalogue
    publisher: Publisher
    store: EdgeStore
    metrics: AdapterMetrics
    sealer: Sealer
    delivery: WebhookDelivery
    limiter: TokenBucket
    claims: IdempotencyClaims
    acceptance: Acceptance
    #: who is calling: access tokens (SMART Backend Services), static tokens in development
    auth: EdgeAuth
    #: follows the structure registry while the adapter runs
    registry: RegistryFollower
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: webhook endpoints: https only (production), or also in private networks (dev)
    webhook_https_only: bool = False
    webhook_private_networks: bool = True
    #: seals identities before they are published, opens them for entitled readers
    vault: IdentityVault | None = None
    #: the identity retention clock (`adapters.retention`)
    retention: Retention = field(default_factory=Retention)

    async def destroy_keys(self, key_ids: list[str]) -> None:
        """Destroy persons' data keys: a tombstone each on `identity-keys` (erasure)."""
        topic = self.catalogue.topic("identity-keys").name
        for key_id in key_ids:
            await self.publisher.send(topic, key_id.encode(), None)

IDEMPOTENCY_KEY_MAX = 200

def caller_of(request: Request) -> Structure:
    """The structure the edge guard authenticated."""
    structure = getattr(request.state, "caller", None)
    if not isinstance(structure, Structure):
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return structure

def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX:
        raise Invalid("the request is invalid", fields=[
            {"field": "Idempotency-Key", "rule": f"String should have at most {IDEMPOTENCY_KEY_MAX} characters"}])
    return key

def route_type(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "name", None) or "unknown"
