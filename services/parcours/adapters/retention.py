"""The identity retention clock: every adapter instance, every `every_s`, destroys the data keys
of the persons without activity in any of their cases for longer than `idle_s` (the processor
writes each case's activity per data key on `person-activity`, at most once a day). Several
instances sweeping at once write the same tombstones: harmless. A person whose data keys are
destroyed keeps the rest of their cases; their identity reads `erased` everywhere."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from parcours.errors import ParcoursError
from parcours.readmodel.store import EdgeStore

log = logging.getLogger("parcours.adapter.retention")


@dataclass(frozen=True)
class Retention:
    idle_s: float = 1095 * 86400.0
    every_s: float = 3600.0


async def sweep(store: EdgeStore, destroy: Callable[[list[str]], Awaitable[object]], idle_s: float,
                now_s: float | None = None) -> list[str]:
    """Destroy the keys of the persons idle longer than `idle_s`; the key ids destroyed."""
    before = int(((time.time() if now_s is None else now_s) - idle_s) * 1000)
    idle = store.db.idle_keys(before)
    if idle:
        await destroy(idle)
        log.info("identity retention: data keys destroyed", extra={"keys": len(idle)})
    return idle


async def sweep_forever(store: EdgeStore, destroy: Callable[[list[str]], Awaitable[object]], retention: Retention) -> None:
    await store.caught_up.wait()
    while True:
        try:
            await sweep(store, destroy, retention.idle_s)
        except ParcoursError as exc:  # Kafka away: the next sweep does it
            log.warning("identity retention sweep failed", extra={"error": type(exc).__name__})
        await asyncio.sleep(retention.every_s)
