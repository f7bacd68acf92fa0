"""Small aiokafka helpers shared by the tools: read topics up to their current end, in batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from parcours.topology.errors import ClusterError

#: every librdkafka producer of the project partitions keys as aiokafka and the Java client do
#: (murmur2): co-partitioning by case id needs one partitioner for all who write a case's records,
#: and a compacted key must always land on the same partition (librdkafka's default is CRC32)
LIBRDKAFKA_PARTITIONER = {"partitioner": "murmur2_random"}


async def read_to_end(bootstrap: str, topics: Iterable[str], *, batch: int = 2000) -> AsyncIterator[list[ConsumerRecord]]:
    """Yield batches of every record of `topics`, from the beginning to the end offsets seen at start."""
    # read_committed: the processor writes in transactions; an aborted attempt is never read
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=16 * 1024 * 1024, isolation_level="read_committed")
    try:
        topics = list(topics)
        counts = await partition_counts(bootstrap, topics)
        await consumer.start()
        parts = [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))]
        if not parts:
            return
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > 0}
        for tp in parts:
            if tp in remaining and await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
        while remaining:
            got = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch)
            for tp, records in got.items():
                kept = [r for r in records if r.offset < end[tp]]
                if kept:
                    yield kept
                if records and records[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    except KafkaError as exc:
        raise ClusterError(f"reading {list(topics)}: {exc}") from exc
    finally:
        await consumer.stop()


async def partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Partitions per existing topic (missing topics are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics(topics)
    except KafkaError as exc:
        raise ClusterError(f"describing {topics}: {exc}") from exc
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


async def read_compacted(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The latest value per key of a compacted topic; tombstones remove the key."""
    return {key: value for (_, key), value in (await read_latest(bootstrap, [topic])).items()}


async def read_latest(bootstrap: str, topics: Iterable[str]) -> dict[tuple[str, bytes], bytes]:
    """The latest value per (topic, key) of compacted topics, read with one consumer."""
    out: dict[tuple[str, bytes], bytes] = {}
    async for records in read_to_end(bootstrap, topics):
        for r in records:
            if r.value is None:
                out.pop((r.topic, r.key), None)
            else:
                out[(r.topic, r.key)] = r.value
    return out
