"""The persons' data keys as a service reads them: the `identity-keys` topic through its read
model (`security.identity.KeyRing`). A key this service makes is published (acks=all) before any
identity sealed under it; a destroyed key is a tombstone, which the read model keeps as a row
without its record, so a reader knows it was destroyed instead of waiting for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from parcours.readmodel.store import EdgeStore
from parcours.security.identity import DataKey

#: how long a reader waits for a key the read model has not seen yet (made a moment ago elsewhere)
AWAIT_KEY_S = 2.0

Send = Callable[[str, bytes, bytes | None], Awaitable[object]]


class StoreKeyRing:
    def __init__(self, store: EdgeStore, topic: str, send: Send) -> None:
        self.store, self.topic, self.send = store, topic, send

    def data_key(self, key_id: str) -> DataKey | None:
        row = self.store.db.data_key(key_id)
        return DataKey.decode(key_id, row[0]) if row and row[0] is not None else None

    def destroyed(self, key_id: str) -> bool:
        row = self.store.db.data_key(key_id)
        return row is not None and row[0] is None

    def person_keys(self, person: str) -> list[DataKey]:
        keys = [DataKey.decode(k, r) for k, r in self.store.db.person_keys(person)]
        return sorted(keys, key=lambda k: (k.created_ms, k.key_id))

    async def await_key(self, key_id: str) -> DataKey | None:
        def probe() -> tuple[DataKey | None] | None:
            row = self.store.db.data_key(key_id)
            return None if row is None else (self.data_key(key_id),)
        found = await self.store.until(probe, AWAIT_KEY_S)
        return found[0] if found else None

    async def publish(self, key: DataKey) -> None:
        await self.send(self.topic, key.key_id.encode(), key.encode())
