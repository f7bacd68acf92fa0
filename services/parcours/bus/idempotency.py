"""Idempotency keys: the same key from the same structure yields the same event, once, whatever
instance of the adapter receives it, before or after a restart.

The event id (and the ids it creates) derive from (structure, key) with UUIDv5, so a retry
publishes the same `event_id`, which the processor folds away as a duplicate. Which *body* a key
stands for is decided by a claim on the `idempotency` topic (keyed by `<slug>/<key>`, so every
claim of a key lands on one partition, in one order): an instance appends its claim (the body's
digest), reads the partition up to its own record, and the first claim of the key in the log
wins. A later request with the same body proceeds (its event is the same event); one with another
body is refused (`KeyReused`: 409 at the edge), even when the two raced on two instances or one
came after a restart. Claims live as long as the topic's retention (7 days): the key's window.

The same ledger keeps the `jti` of every client assertion the token endpoint accepted
(`first_use`): a replayed assertion is refused by whichever instance receives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from parcours.bus.errors import KeyReused, NotCaughtUp
from parcours.bus.kafkaio import KafkaAccess, Pulse, keep_tailing, partition_counts, reader, release
from parcours.bus.lineage import Watch, live_lineage
from parcours.bus.publisher import Publisher

log = logging.getLogger("parcours.adapter")
#: how often names past their `until` are forgotten
FORGET_EVERY_S = 60.0
_NS = uuid.UUID("0b7d4f8e-2f7c-4a0e-9d7e-5f1d6c3a9b21")


def derived_event_id(slug: str, key: str | None) -> uuid.UUID:
    return uuid.uuid5(_NS, f"{slug}\n{key}") if key else uuid.uuid4()


def body_hash(path: str, body: Any) -> str:
    return hashlib.sha256((path + json.dumps(body, sort_keys=True, default=str)).encode()).hexdigest()


class IdempotencyClaims:
    """The first claim of each key, read from the claims topic; `claim` appends and decides."""

    def __init__(self, kafka: KafkaAccess, topic: str, publisher: Publisher, wait_s: float = 10.0) -> None:
        self.kafka, self.topic, self.publisher, self.wait_s = kafka, topic, publisher, wait_s
        self.winners: dict[bytes, tuple[str, str]] = {}  # <slug>/<key> -> (digest, occurred_at) of its first claim
        self.caught_up = asyncio.Event()
        self._read: dict[int, int] = {}  # partition -> next offset read
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._until: dict[bytes, int] = {}  # names that may be forgotten, and when
        self._forgot_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="idempotency-claims")

    @property
    def following(self) -> bool:
        """Is its tail running (it ends only when the service stops)?"""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def accepted(self, slug: str, key: str, digest: str) -> bool:
        """Was this very request (key and body) claimed already? Its event then passed the rules
        when it was first accepted: a retry publishes the same event again, whatever happened to
        the case since (an opinion retried after its commission closed, a commission retried after
        its decision)."""
        winner = self.winners.get(f"{slug}/{key}".encode())
        return winner is not None and winner[0] == digest

    async def claim(self, slug: str, key: str, digest: str, occurred_at: datetime) -> datetime:
        """The `occurred_at` of the key's event (the first claimant's: a retry publishes the very
        same event); raise KeyReused when another body holds the key."""
        name = f"{slug}/{key}".encode()
        winner = self.winners.get(name)
        if winner is None:
            meta = await self._append(name, {"digest": digest, "occurred_at": occurred_at.isoformat()})
            await self._reach(meta.partition, meta.offset)
            winner = self.winners.get(name)
        if winner is None or winner[0] != digest:
            raise KeyReused("Idempotency-Key reused with a different request", rule="one Idempotency-Key, one request")
        return datetime.fromisoformat(winner[1])

    async def first_use(self, name: str, until: int) -> bool:
        """True when this is the first claim of `name` by any instance (a client assertion's
        `jti`: `jti:<slug>/<jti>`, a name no Idempotency-Key can take); `until` (epoch s) is when
        the name may be forgotten: an assertion past its expiry is refused before it is claimed."""
        self._forget_expired()
        if name.encode() in self.winners:
            return False
        nonce = uuid.uuid4().hex  # every claim differs: only the first one of the name wins
        meta = await self._append(name.encode(), {"digest": nonce, "occurred_at": "", "until": until})
        await self._reach(meta.partition, meta.offset)
        winner = self.winners.get(name.encode())
        return winner is not None and winner[0] == nonce

    def _forget_expired(self) -> None:
        """Names claimed `until` a moment now past (at most once a minute)."""
        now = time.time()
        if now - self._forgot_at < FORGET_EVERY_S:
            return
        self._forgot_at = now
        for name in [n for n, until in self._until.items() if until < now]:
            self.winners.pop(name, None)
            del self._until[name]

    async def _append(self, name: bytes, claim: dict[str, Any]) -> Any:
        if not self.caught_up.is_set():
            raise NotCaughtUp("idempotency keys are still loading")
        return await self.publisher.send(self.topic, name, json.dumps(claim).encode())

    async def _reach(self, partition: int, offset: int) -> None:
        """Wait until this instance has read the partition past `offset` (its own claim)."""
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self._read.get(partition, 0) > offset), self.wait_s)
            except TimeoutError:
                raise NotCaughtUp("idempotency claims are not readable in time; retry with the same key") from None

    async def _run(self) -> None:
        await keep_tailing(self._tail, "idempotency")

    async def _tail(self, pulse: Pulse) -> None:
        pulse.at("metadata")
        count = (await partition_counts(self.kafka, [self.topic])).get(self.topic, 0)
        if not count:  # the topic does not exist (yet, or again, being created anew): the next tail looks again
            self.caught_up.clear()
            await asyncio.sleep(1)
            return
        parts = [TopicPartition(self.topic, p) for p in range(count)]
        consumer = reader(self.kafka)
        pulse.at("connect")
        await consumer.start()
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            # read from the beginning at every start: claims of a topic deleted and created again,
            # or of another cluster, are forgotten (the watch starts the tail again when that happens)
            self.caught_up.clear()
            self.winners.clear()
            self._until.clear()
            watch = Watch(self.kafka, [self.topic], await live_lineage(self.kafka, [self.topic]))
            while True:
                pulse.at("lineage")
                if changed := await watch.due_change():
                    log.warning("idempotency claims read again", extra={"reason": changed})
                    return
                pulse.at("fetch")
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                async with self._progress:
                    for records in batch.values():
                        for r in records:
                            if r.key is not None and r.key not in self.winners:
                                with contextlib.suppress(ValueError, TypeError, KeyError):
                                    value = json.loads(r.value)
                                    until = value.get("until")
                                    if isinstance(until, int) and until < time.time():
                                        continue  # an expired assertion's jti: refused anyway
                                    self.winners[r.key] = (str(value["digest"]), str(value["occurred_at"]))
                                    if isinstance(until, int):
                                        self._until[r.key] = until
                    for tp in parts:
                        self._read[tp.partition] = await consumer.position(tp)
                    if not self.caught_up.is_set() and all(self._read[tp.partition] >= end[tp] for tp in parts):
                        self.caught_up.set()
                    self._progress.notify_all()
        finally:
            await release(consumer)
