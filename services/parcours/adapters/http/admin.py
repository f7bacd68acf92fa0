"""The operator API on each adapter (`/v1/admin/structures`): the same registry changes as
`parcours structures`, behind the operators' token (not a partner's). A change is one record on
the registry topic; every service follows it, and `parcours structures follow` (run by
`parcours up`) makes the cluster match: topics, principal, ACLs. The edge guard checks the
operators' token before any body is read (`EdgeAuth.operator`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path
from pydantic import BaseModel, Field

from parcours.adapters.auth import ADMIN_PREFIX
from parcours.adapters.errors import Invalid, NotFound
from parcours.adapters.http.deps import Adapter
from parcours.contract.models import SLUG_PATTERN
from parcours.topology import changes
from parcours.topology.errors import RegistryError

#: how long a change waits for this adapter to follow it before answering
APPLIED_WAIT_S = 10.0
Slug = Annotated[str, Path(pattern=SLUG_PATTERN)]


class StructureIn(BaseModel):
    kind: str = Field(pattern="^(dac|cpts|crt)$")
    territory: str = Field(min_length=1, max_length=10)
    name: str = Field(min_length=1, max_length=200)
    jwks: dict[str, Any] | None = Field(default=None, description="its public keys: a JWK Set of ES384 or RS384 keys")


async def _write(adapter: Adapter, edit: changes.Edit) -> dict[str, Any]:
    """The change on the registry topic; answered once this adapter follows it (the next request sees it)."""
    before = adapter.catalogue.registry
    try:
        after = edit(before)
    except RegistryError as exc:
        raise Invalid(str(exc), rule="a registry change the registry can hold") from None
    topic = adapter.catalogue.topic("structures").name
    old, new = before.records(), after.records()
    for slug, record in new.items():
        if old.get(slug) != record:
            await adapter.publisher.send(topic, slug.encode(), json.dumps(record, sort_keys=True).encode())
    await adapter.registry.reached(new, APPLIED_WAIT_S)
    return {"structures": sorted(after.structures), "left": sorted(after.retired)}


def admin_routes(app: FastAPI, adapter: Adapter) -> None:
    @app.get(ADMIN_PREFIX + "structures", tags=["admin"], name="admin_structures")
    async def listed() -> dict[str, Any]:
        registry = adapter.catalogue.registry
        return {"structures": [changes.without_secrets(s) for s in registry.structures.values()], "left": sorted(registry.retired)}

    @app.put(ADMIN_PREFIX + "structures/{slug}", tags=["admin"], name="admin_put_structure")
    async def put(slug: Slug, body: StructureIn) -> dict[str, Any]:
        """Register a structure, or update one (its kind may not change)."""
        fields = {"slug": slug, **body.model_dump(exclude_none=True)}
        if slug in adapter.catalogue.registry.structures:
            return await _write(adapter, changes.update(slug, fields))
        return await _write(adapter, changes.add(fields))

    @app.post(ADMIN_PREFIX + "structures/{slug}/keys", tags=["admin"], name="admin_add_key")
    async def add_key(slug: Slug, key: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Key rotation, first step: the new public key (the old one still works)."""
        return await _write(adapter, changes.update(slug, {}, add_keys=[key]))

    @app.delete(ADMIN_PREFIX + "structures/{slug}/keys/{kid}", tags=["admin"], name="admin_remove_key")
    async def remove_key(slug: Slug, kid: str) -> dict[str, Any]:
        """Key rotation, last step: the old key removed, once the new one is in use."""
        return await _write(adapter, changes.update(slug, {}, remove_kids=[kid]))

    @app.delete(ADMIN_PREFIX + "structures/{slug}", tags=["admin"], name="admin_remove_structure")
    async def remove(slug: Slug) -> dict[str, Any]:
        """The structure leaves: its tokens and Kafka access are refused within seconds; its cases and audit stay."""
        if slug not in adapter.catalogue.registry.structures:
            raise NotFound(f"no registered structure {slug}")
        return await _write(adapter, changes.remove(slug))
