"""The HTTP side of accepting an event (`publishing.accept`): the event's ids from the Idempotency-Key,
the event drafted from a route's fields, then the use case; and the lookups routes make first.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from parcours.adapters.errors import NotFound
from parcours.adapters.http.deps import VIEW_WAIT_S, Adapter
from parcours.bus.idempotency import body_hash, derived_event_id
from parcours.publishing.accept import Key
from parcours.publishing.rules import ReferralCase, eventually_referral, eventually_view
from parcours.readmodel.store import EdgeStore
from parcours.topology.registry import Structure


async def record_access(adapter: Adapter, caller: Structure, case_id: str) -> None:
    """An `accessed` audit record: who read which case's view, when (no content)."""
    at = datetime.now(UTC)
    record = {"audit_id": f"{case_id}:accessed:{caller.slug}:{uuid.uuid4().hex}", "change": "accessed",
              "structure": caller.slug, "case_id": case_id, "at": at.isoformat().replace("+00:00", "Z")}
    await adapter.publisher.send(adapter.catalogue.topic("audit").name, case_id.encode(),
                                 json.dumps(record, sort_keys=True).encode())

async def visible_case(store: EdgeStore, caller: Structure, case_id: str, wait: float = 0.0) -> dict[str, Any]:
    view = await eventually_view(store, caller.slug, case_id, wait)
    if view is None:
        raise NotFound(f"no case {case_id} visible to {caller.slug}")
    return view

Build = Callable[[str], tuple[dict[str, Any], dict[str, Any]]]

async def submit(adapter: Adapter, request: Request, caller: Structure, key: str | None, body: Any, event_type: str,
                  build: Build, channel: str = "http", referral_case: ReferralCase = "existing") -> dict[str, Any]:
    """Every POST's path: the event's ids from the idempotency key, the event drafted, then the
    use case (`publishing.accept`: rules, key, publish). `body`: the validated request body, or
    (FHIR) the resource as posted."""
    event_id = derived_event_id(caller.slug, key)
    fields, answer = build(event_id.hex[:16])
    event = adapter.acceptance.draft(caller, event_type, event_id, fields)
    digest = Key(key, body_hash(request.url.path, body if isinstance(body, dict) else body.model_dump(mode="json"))) if key else None
    event = await adapter.acceptance.accept(caller, event, adapter.publisher, door=channel, key=digest, referral_case=referral_case)
    return {"event_id": str(event.event_id), "case_id": event.case_id, **answer}

def on_case(case_id: str, id_field: str | None, prefix: str, body: Any) -> Build:
    """Build function for an event on an existing case that creates an item `prefix-<id>`."""
    def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
        fields = {"case_id": case_id, **body.model_dump()}
        if id_field is None:
            return fields, {}
        fields[id_field] = f"{prefix}-{short}"
        return fields, {id_field: fields[id_field]}
    return build

async def on_referral(store: EdgeStore, caller: Structure, referral_id: str, body: Any, fixed: dict[str, Any] | None = None,
                       new_id: tuple[str, str] | None = None) -> Build:
    """Build function for an event on a referral the caller sees (its case from the read model):
    `fixed` fields from the path, and `new_id` (field, prefix) the id of an item it creates."""
    found = await eventually_referral(store, caller.slug, referral_id, VIEW_WAIT_S)
    if found is None:
        raise NotFound(f"no referral {referral_id} visible to {caller.slug}")

    def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
        answer = {"referral_id": referral_id, **(fixed or {})}
        if new_id is not None:
            answer[new_id[0]] = f"{new_id[1]}-{short}"
        return {"case_id": found[0], **body.model_dump(), **answer}, answer
    return build


