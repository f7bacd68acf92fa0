"""What a local cache was built from, and whether it still describes the cluster it reads.

Every local store of the project (the processor's RocksDB state, the adapters' and the validator's
read models) is a cache of Kafka topics. It is valid only on the cluster it was built from, and
only for the same incarnation of each topic. Positions alone cannot tell: a topic deleted and
created again, or a new cluster behind the same address, may have grown past a stored position.
Kafka 4 names both: the cluster id, and a topic id given to each topic when it is created. A
cache records its `Lineage` with its data; `mismatch` says why a recorded lineage does not describe
the live one, and the cache is then discarded and rebuilt from Kafka.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from parcours.bus.kafkaio import KafkaAccess
from parcours.bus.topicids import topic_ids

#: how often a running service compares its cache's lineage with the cluster's
WATCH_INTERVAL_S = 5.0
#: the reasons a cache is discarded (the `reason` label of `parcours_cache_discarded_total`)
REASONS = ("cluster", "topic", "unrecorded")


@dataclass(frozen=True)
class Lineage:
    """A cluster id, and the id of each topic a cache was read from (existing topics only)."""

    cluster_id: str
    topics: dict[str, str] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"cluster_id": self.cluster_id, "topics": self.topics}, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> Lineage | None:
        """The lineage recorded as `text` (None when there is none, or it cannot be read)."""
        try:
            raw = json.loads(text or "")
            return cls(str(raw["cluster_id"]), {str(k): str(v) for k, v in raw["topics"].items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def covering(self, live: Lineage) -> Lineage:
        """This lineage with the topics that appeared since it was recorded (after `mismatch` found none)."""
        return Lineage(self.cluster_id, {**live.topics, **self.topics})


@dataclass(frozen=True)
class Discard:
    """Why a cache must be discarded: a `reason` of `REASONS` and what differs (no data)."""

    reason: str
    detail: str


def mismatch(recorded: Lineage | None, live: Lineage) -> Discard | None:
    """Why a cache built from `recorded` cannot be used on `live` (None: it can). A topic that
    appeared since is no mismatch (the cache has read nothing of it); one deleted, or deleted and
    created again, is."""
    if recorded is None:
        return Discard("unrecorded", "the cache does not record the cluster it was built from")
    if recorded.cluster_id != live.cluster_id:
        return Discard("cluster", f"built from cluster {recorded.cluster_id}, the cluster is {live.cluster_id}")
    for topic, topic_id in sorted(recorded.topics.items()):
        now = live.topics.get(topic)
        if now is None:
            return Discard("topic", f"topic {topic} no longer exists")
        if now != topic_id:
            return Discard("topic", f"topic {topic} was created again (id {topic_id} -> {now})")
    return None


def adopt(recorded: Lineage | None, live: Lineage, *, has_data: bool) -> tuple[Discard | None, Lineage]:
    """At a cache's start: why it must be discarded (None: it may be resumed), and the lineage it
    holds from then on. A cache with no data and no lineage is simply new."""
    foreign = mismatch(recorded, live) if has_data or recorded is not None else None
    if foreign is None and recorded is not None:
        return None, recorded.covering(live)
    return foreign, live


def change(recorded: Lineage, live: Lineage) -> str | None:
    """While a reader runs: why it must start again (a mismatch, or a topic it should read that
    appeared since), None when nothing changed."""
    why = mismatch(recorded, live)
    if why is not None:
        return why.detail
    appeared = sorted(set(live.topics) - set(recorded.topics))
    return f"topic {', '.join(appeared)} appeared" if appeared else None


async def live_lineage(kafka: KafkaAccess, topics: list[str]) -> Lineage:
    """The cluster's id and the ids of those of `topics` that exist, now (a ClusterError when the
    cluster cannot tell)."""
    return Lineage(*await topic_ids(kafka, topics))


def describe(kafka: KafkaAccess, topics: list[str]) -> Lineage:
    """`live_lineage`, for a thread without an event loop (the processor's)."""
    return asyncio.run(live_lineage(kafka, topics))


class Watch:
    """A running reader's check that the topics it reads are still those its cache was built from:
    `due_change()` answers at most every `interval` s, with why the reader must start again (a
    topic deleted or created again, another cluster, a topic it should read that appeared)."""

    def __init__(self, kafka: KafkaAccess, topics: list[str], recorded: Lineage, interval: float = WATCH_INTERVAL_S) -> None:
        self.kafka, self.topics, self.recorded, self.interval = kafka, list(topics), recorded, interval
        self._next = asyncio.get_running_loop().time() + interval

    async def due_change(self) -> str | None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._next:
            return None
        self._next = loop.time() + self.interval
        return change(self.recorded, await live_lineage(self.kafka, self.topics))
