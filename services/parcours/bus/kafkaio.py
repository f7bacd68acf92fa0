"""How every client of the project reaches Kafka (`KafkaAccess`: address, protocol, principal and
secret), and small aiokafka helpers shared by the tools: read topics up to their current end."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from parcours.bus.errors import ClusterError

#: every librdkafka producer of the project partitions keys as aiokafka and the Java client do
#: (murmur2): co-partitioning by case id needs one partitioner for all who write a case's records,
#: and a compacted key must always land on the same partition (librdkafka's default is CRC32)
LIBRDKAFKA_PARTITIONER = {"partitioner": "murmur2_random"}


def produce_waiting(producer: Any, topic: str, value: bytes | None, key: bytes | None, headers: Any = None,
                    max_wait_s: float | None = None) -> None:
    """Queue one record on a librdkafka (confluent-kafka) producer, waiting for room while its queue
    is full; after `max_wait_s` of a full queue (the broker takes nothing), a ClusterError."""
    deadline = None
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            if max_wait_s is not None:
                deadline = deadline or time.monotonic() + max_wait_s
                if time.monotonic() > deadline:
                    raise ClusterError(f"the producer's queue stayed full for {max_wait_s:.0f} s") from None
            producer.poll(0.05)

SCRAM = "SCRAM-SHA-512"
log = logging.getLogger("parcours.kafka")


@dataclass(frozen=True)
class KafkaAccess:
    """A cluster address and who speaks to it. Every Kafka client of the project is built from one,
    so a service connects as its own principal and nothing else (PLAINTEXT only for a cluster
    configured without authentication: `PARCOURS_KAFKA_SECURITY_PROTOCOL`)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SASL_PLAINTEXT or SASL_SSL
    username: str | None = None
    password: SecretStr | None = None
    #: the CA that signed the brokers' certificates (SASL_SSL)
    cafile: str | None = None

    def __str__(self) -> str:  # what logs may show: never the secret
        return f"{self.bootstrap} ({self.security_protocol}{', as ' + self.username if self.username else ''})"

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    def as_user(self, username: str, password: SecretStr | str) -> KafkaAccess:
        secret = password if isinstance(password, SecretStr) else SecretStr(password)
        protocol = self.security_protocol if self.sasl else "SASL_PLAINTEXT"
        return replace(self, security_protocol=protocol, username=username, password=secret)

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        out: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.sasl:
            out |= {"sasl_mechanism": SCRAM, "sasl_plain_username": self.username,
                    "sasl_plain_password": self.password.get_secret_value() if self.password else None}
        if self.security_protocol.endswith("SSL"):
            out["ssl_context"] = ssl.create_default_context(cafile=self.cafile)
        return out

    def librdkafka(self) -> dict[str, Any]:
        """Configuration entries for confluent-kafka (librdkafka) clients."""
        out: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.sasl:
            out |= {"sasl.mechanism": SCRAM, "sasl.username": self.username,
                    "sasl.password": self.password.get_secret_value() if self.password else None}
        if self.security_protocol.endswith("SSL") and self.cafile:
            out["ssl.ca.location"] = self.cafile
        return out

    def producer(self, **overrides: Any) -> AIOKafkaProducer:
        """The project's aiokafka producer: acknowledged once every in-sync replica holds the record
        (`acks=all`), without duplicates on retry (idempotent)."""
        return AIOKafkaProducer(**self.aiokafka(), **{"acks": "all", "enable_idempotence": True, "linger_ms": 5, **overrides})

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """The same for a librdkafka producer, partitioning keys as aiokafka does."""
        return {**self.librdkafka(), "acks": "all", "enable.idempotence": True, **LIBRDKAFKA_PARTITIONER, **overrides}

    def quix(self) -> Any:
        """Quix Streams' connection settings."""
        from quixstreams.kafka.configuration import ConnectionConfig

        settings: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol.lower(),
                                    "sasl_mechanism": SCRAM if self.sasl else None, "sasl_username": self.username,
                                    "sasl_password": self.password, "ssl_ca_location": self.cafile}
        return ConnectionConfig(**settings)


def reader(kafka: KafkaAccess, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer outside any group that reads committed records from the positions it is given.

    `auto_offset_reset="earliest"`, never aiokafka's default "latest": `assign()` starts a reset
    with the default strategy in the background, and when that offset request is slow (a broker
    starting, a topic just created: NotLeaderForPartition retries) its answer can land after a
    `seek_to_beginning()` and be applied to it, silently moving the reader to the end: a read
    model that skips everything before. With "earliest" both agree.
    """
    return AIOKafkaConsumer(**kafka.aiokafka(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                            isolation_level="read_committed", **overrides)


#: a tail that gave no sign of life (`Pulse.at`) for this long is stuck in a call that will not
#: return: it is cancelled and started again
TAIL_SILENCE_S = 60.0
#: how long a cancelled tail may take to let go of its consumer
_TAIL_RELEASE_S = 10.0


class Pulse:
    """A tail's sign of life: `at(step)` before each step that waits on Kafka or the disk."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.step, self.since = "start", clock()

    def at(self, step: str) -> None:
        self.step, self.since = step, self.clock()

    def silent_for(self) -> float:
        return self.clock() - self.since


async def keep_tailing(tail: Callable[[Pulse], Awaitable[None]], what: str, silence_s: float | None = TAIL_SILENCE_S,
                       clock: Callable[[], float] = time.monotonic) -> None:
    """Run `tail` (a reader that follows topics) again whenever anything interrupts it: Kafka
    (also wrapped, as `ClusterError`: a broker unreachable at start), the disk of a read model,
    a call that never returns (no `Pulse.at` for `silence_s`: aiokafka was seen to hang for good
    after a broker's SIGKILL), or a `CancelledError` raised inside it that was not aimed at this
    loop (it would otherwise end the tail, silently, as a cancellation). A tail that ended for
    good would leave its service serving stale data while it looks alive. Silence is measured on
    `clock`."""
    while True:
        pulse = Pulse(clock)
        task = asyncio.ensure_future(tail(pulse))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=5.0 if silence_s is None else min(5.0, silence_s))
                if silence_s is not None and not task.done() and pulse.silent_for() > silence_s:
                    log.warning(f"{what} tail silent; started again", extra={"step": pulse.step, "silent_s": round(pulse.silent_for())})
                    task.cancel()
                    await asyncio.wait({task}, timeout=_TAIL_RELEASE_S)
                    break
            else:
                if task.cancelled():  # a CancelledError from inside (not this loop's): it would end the tail for good
                    log.warning(f"{what} tail cancelled from within; started again", extra={"step": pulse.step, "where": _where(task)})
                else:
                    task.result()
                    continue  # it ended by itself (its topics changed): at once again
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task}, timeout=_TAIL_RELEASE_S)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever stopped it, the tail must go on
            expected = isinstance(exc, (KafkaError, OSError, ClusterError))
            # the reason of Kafka's and the disk's errors only: another error's text may quote a record
            log.log(logging.WARNING if expected else logging.ERROR, f"{what} tail interrupted; retrying",
                    extra={"error": type(exc).__name__, **({"reason": str(exc)[:200]} if expected else {})})
        await asyncio.sleep(1)


def _where(task: asyncio.Future[None]) -> str:
    """Where a task ended by a CancelledError raised inside it stopped: its innermost frames
    (file, line, function: never a value)."""
    try:
        task.result()
    except asyncio.CancelledError as exc:
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        return " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames))
    return ""


async def release(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer whatever aiokafka does on the way. Its stop was seen to hang after a
    broker's SIGKILL (given up after a while), and to raise a CancelledError of its own
    (aio-libs/aiokafka#647: `Fetcher.close` awaits the fetch tasks it has just cancelled, and one
    sleeping in its retry backoff, the broker being away, passes the cancellation on), which would
    end the caller as if it were being stopped, and hide the error that made it stop the
    consumer. Then what the interrupted stop left open is closed here; a real cancellation of the
    caller still goes through."""
    try:
        await asyncio.wait_for(consumer.stop(), _TAIL_RELEASE_S)
    except TimeoutError:
        log.warning("consumer did not stop in time; left to the garbage collector")
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        log.warning("consumer stop interrupted by its own fetcher (aiokafka #647); closing its connections")
        for pending in list(getattr(getattr(consumer, "_fetcher", None), "_pending_tasks", ())):
            pending.cancel()
        client = getattr(consumer, "_client", None)
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), _TAIL_RELEASE_S)
            except (TimeoutError, KafkaError, OSError):
                log.warning("consumer's connections did not close; left to the garbage collector")


async def _partitions(kafka: KafkaAccess, topics: list[str], only: Collection[int] | None) -> list[TopicPartition]:
    """The existing partitions of `topics` (of these numbers `only`, if given)."""
    counts = await partition_counts(kafka, topics)
    return [TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0)) if only is None or p in only]


async def end_offsets(kafka: KafkaAccess, topics: Iterable[str],
                      partitions: Collection[int] | None = None) -> dict[tuple[str, int], int]:
    """The end offsets of `topics` (of these `partitions` only, if given), now, as a
    `read_committed` reader sees them (the last stable offsets)."""
    consumer = reader(kafka)
    try:
        topics = list(topics)
        parts = await _partitions(kafka, topics, partitions)
        await consumer.start()
        ends = await consumer.end_offsets(parts) if parts else {}
    except KafkaError as exc:
        raise ClusterError(f"end offsets of {list(topics)}: {exc}") from exc
    finally:
        await release(consumer)
    return {(tp.topic, tp.partition): n for tp, n in ends.items()}


async def read_to_end(kafka: KafkaAccess, topics: Iterable[str], *, batch: int = 2000,
                      partitions: Collection[int] | None = None,
                      until: Mapping[tuple[str, int], int] | None = None) -> AsyncIterator[list[ConsumerRecord]]:
    """Yield batches of every record of `topics` (of these `partitions` only, if given), from the
    beginning to the end offsets seen at start, or to those of `until` (`end_offsets`: one moment
    for reads made one after the other; its partitions are the ones read)."""
    # read_committed: the processor writes in transactions; an aborted attempt is never read
    consumer = reader(kafka, max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        topics = list(topics)
        if until is None:
            parts = await _partitions(kafka, topics, partitions)
        else:  # the moment names its partitions: no need to ask the cluster again for each read
            parts = [TopicPartition(t, p) for t, p in until if t in topics and (partitions is None or p in partitions)]
        await consumer.start()
        if not parts:
            return
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts) if until is None else {tp: until[(tp.topic, tp.partition)] for tp in parts}
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
        await release(consumer)


async def partition_counts(kafka: KafkaAccess, topics: list[str], attempts: int = 6) -> dict[str, int]:
    """Partitions per existing topic (missing topics are left out). aiokafka asks a node drawn at
    random: one that is down (a node of a cluster restarting) is drawn again, a few times."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    try:
        await admin.start()
        for attempt in range(1, attempts + 1):
            try:
                described = await admin.describe_topics(topics)
                break
            except KafkaError as exc:
                if not exc.retriable or attempt == attempts:
                    raise
                await asyncio.sleep(0.25 * attempt)
    except KafkaError as exc:
        raise ClusterError(f"describing {topics}: {exc}") from exc
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


async def read_compacted(kafka: KafkaAccess, topic: str) -> dict[bytes, bytes]:
    """The latest value per key of a compacted topic; tombstones remove the key."""
    return {key: value for (_, key), value in (await read_latest(kafka, [topic])).items()}


async def read_latest(kafka: KafkaAccess, topics: Iterable[str]) -> dict[tuple[str, bytes], bytes]:
    """The latest value per (topic, key) of compacted topics, read with one consumer."""
    out: dict[tuple[str, bytes], bytes] = {}
    async for records in read_to_end(kafka, topics):
        for r in records:
            if r.value is None:
                out.pop((r.topic, r.key), None)
            else:
                out[(r.topic, r.key)] = r.value
    return out


LAG_ATTEMPTS = 10
LAG_RETRY_S = 0.5


async def consumer_lag(kafka: KafkaAccess, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Per partition: the committed end (last stable offset) minus `group`'s committed offset, read
    with aiokafka (an admin request and a group-less consumer): never a member of the group. (Not
    confluent-kafka's AdminClient: its offset calls crashed the process, SIGSEGV in librdkafka, about
    once in 16 calls against a broker whose group coordinator was still loading.)"""
    parts = list(partitions)
    committed = await committed_offsets(kafka, group, parts)
    consumer = reader(kafka)
    try:
        await consumer.start()
        ends = await consumer.end_offsets([TopicPartition(t, p) for t, p in parts])
    except KafkaError as exc:
        raise ClusterError(f"lag of {group}: {exc}") from exc
    finally:
        await release(consumer)
    return {(tp.topic, tp.partition): max(0, n - max(committed[(tp.topic, tp.partition)], 0)) for tp, n in ends.items()}


async def committed_offsets(kafka: KafkaAccess, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """`group`'s committed offset per partition, -1 where it has none (an admin request: never a
    member of the group)."""
    parts = [TopicPartition(t, p) for t, p in partitions]
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    try:
        await admin.start()
        for attempt in range(LAG_ATTEMPTS):
            try:
                committed = await admin.list_consumer_group_offsets(group, partitions=parts)
                if len(committed) >= len(parts):
                    break
                # a group-level error (its coordinator loading) comes back as no partitions at all
                # (aiokafka reads only per-partition errors): never report that as no offset
                if attempt == LAG_ATTEMPTS - 1:
                    raise ClusterError(f"offsets of {group}: the group's offsets could not be read")
            except KafkaError as exc:
                # aiokafka's admin does not retry a retriable answer itself (the group's coordinator
                # still loading, or moving): ask again, a few times, before reporting a failure
                if not getattr(exc, "retriable", False) or attempt == LAG_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(LAG_RETRY_S)
    except KafkaError as exc:
        raise ClusterError(f"offsets of {group}: {exc}") from exc
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): committed[tp].offset if tp in committed else -1 for tp in parts}


#: a tail that read nothing for this long checks it is not stuck behind the end offsets
TAIL_STALL_CHECK_S = 10.0


async def tail_stalled(consumer: Any, parts: list[TopicPartition], suspect: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """The partitions with records past this consumer's position, and that position; raise (the
    tail is then started again with a new consumer) when one of them did not move since the last
    check (`suspect`): aiokafka's fetcher was seen to stop for good, silently, after the broker
    leading some of its partitions was SIGKILLed, while the partitions were served again (the new
    leaders of tests/integration/test_cluster.py; the single broker restarted by
    tests/integration/test_broker_crash.py: 2 of 3 runs without this check)."""
    try:
        ends = await asyncio.wait_for(consumer.end_offsets(parts), TAIL_STALL_CHECK_S)
    except (TimeoutError, KafkaError) as exc:
        raise ClusterError(f"tail: end offsets unreadable ({type(exc).__name__})") from exc
    behind = {tp: pos for tp in parts if (pos := await consumer.position(tp)) < ends[tp]}
    stuck = [tp for tp, pos in behind.items() if suspect.get(tp) == pos]
    if stuck:
        raise ClusterError(f"tail stalled behind the end of {len(stuck)} partitions for {2 * TAIL_STALL_CHECK_S:.0f} s")
    return behind
