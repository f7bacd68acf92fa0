"""Idempotency keys: the same key from the same structure yields the same event, once.

The event id (and the ids it creates) derive from (structure, key) with UUIDv5, so even a retry
that reaches another adapter instance or a restarted one publishes the same `event_id`, which
the processor folds away as a duplicate. Within a process, a cache answers the retry with the
first response, and refuses a reused key whose body differs (409).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict
from typing import Any

from parcours.adapters.errors import Conflict

_NS = uuid.UUID("0b7d4f8e-2f7c-4a0e-9d7e-5f1d6c3a9b21")


def derived_event_id(slug: str, key: str | None) -> uuid.UUID:
    return uuid.uuid5(_NS, f"{slug}\n{key}") if key else uuid.uuid4()


def body_hash(path: str, body: Any) -> str:
    return hashlib.sha256((path + json.dumps(body, sort_keys=True, default=str)).encode()).hexdigest()


class IdempotencyCache:
    def __init__(self, ttl: float = 24 * 3600, size: int = 100_000) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[tuple[str, str], tuple[float, str, dict[str, Any]]] = OrderedDict()

    def lookup(self, slug: str, key: str, digest: str) -> dict[str, Any] | None:
        item = self._items.get((slug, key))
        if item is None or time.monotonic() - item[0] > self.ttl:
            return None
        if item[1] != digest:
            raise Conflict("Idempotency-Key reused with a different request", rule="one Idempotency-Key, one request")
        return item[2]

    def store(self, slug: str, key: str, digest: str, response: dict[str, Any]) -> None:
        self._items[(slug, key)] = (time.monotonic(), digest, response)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
