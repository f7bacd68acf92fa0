"""`parcours views rebuild`: recompute every view from the canonical topics into fresh state.

It reads every canonical topic from the beginning, folds each case with the same pure code the
processor uses, and renders each structure's view. `compare` reports how the live views differ;
`write` publishes the rebuilt views (and tombstones for views that should not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from parcours.casefile.policy import Policy
from parcours.casefile.state import CaseState, fold
from parcours.contract.codec import Codec
from parcours.contract.errors import DecodeError
from parcours.kafkaio import read_compacted, read_to_end
from parcours.processors.core import CaseProcessor
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy


@dataclass
class Rebuild:
    views: dict[bytes, bytes]
    events: int
    cases: int
    undecodable: int


async def rebuild(catalogue: Catalogue, bootstrap: str, policy: KindPolicy, now: datetime | None = None) -> Rebuild:
    now = now or datetime.now(UTC)
    codec = Codec()
    states: dict[str, CaseState] = {}
    events = bad = 0
    async for records in read_to_end(bootstrap, [t.name for t in catalogue.canonical()]):
        for r in records:
            try:
                e = codec.decode(r.value, r.headers, topic=r.topic, partition=r.partition, offset=r.offset)
            except DecodeError:
                bad += 1  # the processor dead-lettered it too
                continue
            if r.key != e.key.encode() or e.case_id is None:
                continue  # same rules as the processor: key mismatches and case-less ruptures make no view
            events += 1
            states[e.case_id] = fold(states.get(e.case_id) or CaseState(e.case_id), e)
    core = CaseProcessor({s.slug: s.kind for s in catalogue.registry.structures.values()}, Policy(policy.hidden))
    views: dict[bytes, bytes] = {}
    for state in states.values():
        for v in core.render(state, {}, now)[0]:
            if v.value is not None:
                views[v.key.encode()] = v.value
    return Rebuild(views, events, len(states), bad)


async def live_views(catalogue: Catalogue, bootstrap: str) -> dict[bytes, bytes]:
    return await read_compacted(bootstrap, catalogue.topic("case-views").name)


def differences(live: dict[bytes, bytes], rebuilt: dict[bytes, bytes]) -> list[str]:
    out = []
    for key in sorted(set(live) | set(rebuilt)):
        if key not in rebuilt:
            out.append(f"{key.decode()}: live view should not exist")
        elif key not in live:
            out.append(f"{key.decode()}: missing from the live views")
        elif live[key] != rebuilt[key]:
            out.append(f"{key.decode()}: differs")
    return out


async def write(catalogue: Catalogue, bootstrap: str, live: dict[bytes, bytes], rebuilt: dict[bytes, bytes]) -> int:
    """Publish what differs; return how many records were written."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    topic = catalogue.topic("case-views").name
    n = 0
    try:
        for key in sorted(set(live) | set(rebuilt)):
            if live.get(key) != rebuilt.get(key):
                await producer.send(topic, rebuilt.get(key), key=key)
                n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n
