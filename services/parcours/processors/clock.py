"""The consent clock: a consent past `valid_until` must leave the views without any new event.

The processor writes each case's next expiry to the compacted `clock-schedule` topic (in the same
transaction as the views). This clock reads it in a consumer group of its own
(`<prefix>-processor-clock`), so with several processor instances each schedule partition is
watched by exactly one of them and moves to a survivor on a rebalance; on every assignment it
re-reads its partitions from the beginning (they hold one small record per case). When an expiry
is due it sends a tick (key: the case id, value: the due time) to `clock-ticks`, which the pipeline
processes like an event. A tick is idempotent: sent twice, the second changes nothing; a tick
whose delivery failed is sent again.

Memory does not grow with the number of cases: the clock keeps only the expiries due within its
horizon (`HORIZON_S`, 10 minutes) and reads its partitions again from the beginning when half of
the horizon has passed, so what it holds is bounded by the expiries of the next 10 minutes, not
by every case ever scheduled (the schedule is one small record per case on a compacted topic:
reading it again is cheap). A partition read again replays old values too (until compaction, a
case's earlier expiries precede its current one), so no tick is sent until every such reading
has reached the end it saw when it began, and a replayed value never clears the memory of a tick
already sent: an expiry superseded or already ticked is not ticked again.
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from parcours.bus.kafkaio import KafkaAccess
from parcours.topology.catalogue import Catalogue

log = logging.getLogger("parcours.processor.clock")

#: expiries further than this are not held in memory; the schedule is read again before they are due
HORIZON_S = 600.0
#: the longest the ticks wait for a reading of the schedule to reach its end
REPLAY_MAX_S = 30.0


class ConsentClock:
    def __init__(self, kafka: KafkaAccess, catalogue: Catalogue, poll_s: float = 0.5, horizon_s: float = HORIZON_S) -> None:
        self.kafka, self.poll_s, self.horizon_ms = kafka, poll_s, int(horizon_s * 1000)
        self.schedule_topic = catalogue.topic("clock-schedule").name
        self.ticks_topic = catalogue.topic("clock-ticks").name
        self.group = catalogue.group_id("processor", "-clock")
        self.due: dict[bytes, int] = {}  # case id -> next expiry (ms), for the partitions assigned
        self.partition_of: dict[bytes, int] = {}
        self.sent: dict[bytes, int] = {}  # case id -> the due time a tick was sent for (until rescheduled)
        self.heap: list[tuple[int, bytes]] = []
        self.until_ms = 0  # expiries due before this are held; later ones wait for the next reading
        self.assigned: list[Any] = []
        #: partitions being read from the beginning -> the end offset to reach (None: not known yet)
        self.replaying: dict[tuple[str, int], int | None] = {}
        self.replay_since = 0.0

    def run(self) -> None:
        # one producer for the clock's life: the delivery reports of ticks still queued when the
        # loop restarts arrive on it later (a tick that failed is sent again: `_delivered`)
        producer = Producer(self.kafka.producer_config())
        while True:
            try:
                self._run(producer)
            except KafkaException as exc:
                log.warning("consent clock interrupted; restarting", extra={"error": str(exc)})
                time.sleep(1)

    def _run(self, producer: Producer) -> None:
        consumer = Consumer({**self.kafka.librdkafka(), "group.id": self.group,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "isolation.level": "read_committed", "session.timeout.ms": 10000})
        consumer.subscribe([self.schedule_topic], on_assign=self._assigned, on_revoke=self._revoked,
                           on_lost=self._revoked)
        try:
            while True:
                now_ms = int(time.time() * 1000)
                if now_ms + self.horizon_ms // 2 >= self.until_ms:
                    self.reread(consumer, now_ms)
                msgs = consumer.consume(500, self.poll_s)
                self._learn_ends(consumer)
                for msg in msgs:
                    if msg.error():
                        continue
                    where = (msg.topic(), msg.partition())
                    self.record(msg.key(), msg.partition(), msg.value(), replay=where in self.replaying)
                    self._replayed(where, msg.offset() + 1)
                self._replays_done(consumer)
                if not self.replaying:  # a partition read again holds stale values until its end is reached
                    self.fire(producer, int(time.time() * 1000))
                producer.poll(0)
        finally:
            producer.poll(0)  # delivery reports so far; later ones come with the next loop's polls
            consumer.close()

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING  # nothing is committed: always re-read the schedule
        self.assigned = [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions]
        self.replaying.update({(tp.topic, tp.partition): None for tp in partitions})
        self.replay_since = time.monotonic()
        consumer.assign(partitions)

    def reread(self, consumer: Any, now_ms: int) -> None:
        """Move the horizon on and read the assigned partitions again from the beginning: the
        expiries that came within the horizon are taken in (those already held stay)."""
        try:
            for tp in self.assigned:
                consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
        except KafkaException as exc:  # a partition not fetched yet (just assigned): try again at the next loop
            log.debug("schedule not read again yet", extra={"error": str(exc)})
            return
        self.replaying.update({(tp.topic, tp.partition): None for tp in self.assigned})
        self.replay_since = time.monotonic()
        self.until_ms = now_ms + self.horizon_ms

    def _learn_ends(self, consumer: Any) -> None:
        """The end of each partition being read again, learnt once its reading has begun."""
        for where, end in list(self.replaying.items()):
            if end is None:
                low, high = consumer.get_watermark_offsets(TopicPartition(*where), timeout=10)
                if high <= low:  # nothing to read again
                    del self.replaying[where]
                else:
                    self.replaying[where] = high
        if self.replaying and time.monotonic() - self.replay_since > REPLAY_MAX_S:
            # never hold the ticks back for long: at worst an old expiry ticks again, which changes nothing
            log.warning("the schedule's reading did not reach its end in time; ticking anyway")
            self.replaying.clear()

    def _replayed(self, where: tuple[str, int], position: int) -> None:
        end = self.replaying.get(where)
        if end is not None and position >= end:
            del self.replaying[where]

    def _replays_done(self, consumer: Any) -> None:
        """A reading ends at the end offset seen when it began (the consumer's position tells, also
        when transaction markers or compaction leave no record at the last offsets)."""
        known = [TopicPartition(t, p) for (t, p), end in self.replaying.items() if end is not None]
        for tp in consumer.position(known) if known else []:
            if tp.offset >= 0:
                self._replayed((tp.topic, tp.partition), tp.offset)

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        gone = {tp.partition for tp in partitions}
        self.assigned = [tp for tp in self.assigned if tp.partition not in gone]
        self.replaying = {w: end for w, end in self.replaying.items() if w[1] not in gone}
        for case in [c for c, p in self.partition_of.items() if p in gone]:
            self.due.pop(case, None)
            self.partition_of.pop(case, None)
        consumer.unassign()

    def record(self, case: bytes | None, partition: int, value: bytes | None, *, replay: bool = False) -> None:
        """One schedule record. `replay`: read again from the beginning, so it may be an old value
        that a later record of the same case supersedes (ticks wait until the reading is done)."""
        if case is None:
            return
        try:
            due = None if value is None else int(value)
        except ValueError:
            log.warning("a schedule record that is not a time was ignored", extra={"partition": partition})
            return
        if not replay and self.sent.get(case) != due:
            self.sent.pop(case, None)  # rescheduled: a tick for the old expiry is not waited for any more
        if due is None or due >= self.until_ms:  # no expiry, or one beyond the horizon: read again later
            self.due.pop(case, None)
            self.partition_of.pop(case, None)
            return
        if self.due.get(case) != due:
            heapq.heappush(self.heap, (due, case))
        self.due[case], self.partition_of[case] = due, partition

    def fire(self, producer: Producer, now_ms: int) -> None:
        while self.heap and self.heap[0][0] <= now_ms:
            due, case = heapq.heappop(self.heap)
            if self.due.get(case) != due or self.sent.get(case) == due:
                continue  # superseded, or already ticked for this expiry
            producer.produce(self.ticks_topic, key=case, value=str(due).encode(), on_delivery=self._delivered(case, due))
            self.sent[case] = due

    def _delivered(self, case: bytes, due: int) -> Any:
        """A tick Kafka did not take (its delivery timed out: the broker away for long) is sent
        again: it was marked as sent when produced, which would otherwise hold it back for good.
        Called from `producer.poll`, on the clock's own thread."""
        def delivered(err: Any, msg: Any) -> None:
            if err is None or self.sent.get(case) != due:
                return
            log.warning("a consent tick was not delivered; it is sent again", extra={"error": str(err)})
            del self.sent[case]
            if self.due.get(case) == due:
                heapq.heappush(self.heap, (due, case))
        return delivered
