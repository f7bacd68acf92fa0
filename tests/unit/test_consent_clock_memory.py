"""The consent clock holds only the expiries of its horizon, so its memory does not grow with the
number of cases scheduled (issue 15), and it still ticks each expiry once, on time."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from parcours.bus.kafkaio import KafkaAccess
from parcours.processors.clock import ConsentClock
from parcours.topology.catalogue import Catalogue

NOW = 1_800_000_000_000
HORIZON_S = 600.0


class Ticks:
    """What the clock sends to the tick topic (a producer's `produce`), and the delivery reports
    still to come (`report`: what a producer's `poll` would call)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.pending: list[Any] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any = None) -> None:
        self.sent.append((key, int(value)))
        self.pending.append(on_delivery)

    def report(self, error: Any = None) -> None:
        for callback in self.pending:
            callback(error, None)
        self.pending.clear()


class Partitions:
    """A consumer's `seek`, recording which partitions the clock reads again."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def clock() -> ConsentClock:
    c = ConsentClock(KafkaAccess("127.0.0.1:1"), Catalogue.load(prefix="p"), horizon_s=HORIZON_S)
    c.until_ms = NOW + int(HORIZON_S * 1000)
    return c


def test_expiries_beyond_the_horizon_are_not_held_and_100k_cases_leave_nothing_behind() -> None:
    c = clock()
    for i in range(100_000):  # a week-long referral deadline for every case: beyond the horizon
        c.record(f"case-{i}".encode(), i % 6, str(NOW + 7 * 86_400_000).encode())
    c.record(b"soon", 0, str(NOW + 1000).encode())
    assert (len(c.due), len(c.heap), len(c.partition_of)) == (1, 1, 1)
    ticks = Ticks()
    c.fire(ticks, NOW + 1000)
    assert ticks.sent == [(b"soon", NOW + 1000)]
    c.fire(ticks, NOW + 5000)
    assert ticks.sent == [(b"soon", NOW + 1000)], "an expiry ticks once"
    # the processor handled the tick: the case's schedule moves on (here: nothing left), the clock forgets it
    c.record(b"soon", 0, None)
    assert (c.due, c.sent, c.partition_of) == ({}, {}, {})


def test_a_schedule_that_comes_within_the_horizon_is_read_again_before_it_is_due() -> None:
    c = clock()
    due = NOW + 20 * 60_000  # 20 minutes: beyond a 10-minute horizon
    c.record(b"later", 2, str(due).encode())
    assert not c.due
    consumer = Partitions()
    c.assigned = [TopicPartition("p.clock-schedule", 2)]
    c.reread(consumer, due - 9 * 60_000)  # half the horizon before it is due, or earlier
    assert consumer.seeks == [("p.clock-schedule", 2, -2)], "the partition is read again from the beginning"
    assert c.until_ms > due
    c.record(b"later", 2, str(due).encode())  # the record read again
    ticks = Ticks()
    c.fire(ticks, due)
    assert ticks.sent == [(b"later", due)]


def test_a_rescheduled_case_keeps_one_entry_and_ticks_at_its_new_expiry() -> None:
    c = clock()
    c.record(b"c", 1, str(NOW + 1000).encode())
    c.record(b"c", 1, str(NOW + 2000).encode())  # a consent renewed before it expired
    ticks = Ticks()
    c.fire(ticks, NOW + 1500)
    assert ticks.sent == [], "the superseded expiry does not tick"
    c.fire(ticks, NOW + 2000)
    assert ticks.sent == [(b"c", NOW + 2000)]
    assert len(c.due) == 1


def test_a_schedule_read_again_never_ticks_an_old_or_an_already_ticked_expiry() -> None:
    c = clock()
    ticks = Ticks()
    c.record(b"c", 0, str(NOW + 1000).encode())
    c.fire(ticks, NOW + 1000)
    assert ticks.sent == [(b"c", NOW + 1000)]
    # the processor has not handled the tick yet; the schedule is read again from the beginning:
    # an older expiry of the case (not compacted away yet), then its current one
    c.record(b"c", 0, str(NOW + 500).encode(), replay=True)
    c.record(b"c", 0, str(NOW + 1000).encode(), replay=True)
    c.fire(ticks, NOW + 2000)
    assert ticks.sent == [(b"c", NOW + 1000)], "neither the old expiry nor the one already ticked"


def test_a_schedule_value_that_is_not_a_time_is_ignored() -> None:
    c = clock()
    c.record(b"c", 0, b"not a time")
    assert not c.due


def test_a_tick_kafka_did_not_take_is_sent_again_and_a_delivered_one_is_not() -> None:
    c = clock()
    c.record(b"case-1", 0, str(NOW + 1000).encode())
    ticks = Ticks()
    c.fire(ticks, NOW + 1000)
    ticks.report("_MSG_TIMED_OUT")  # the broker was away longer than the delivery timeout
    c.fire(ticks, NOW + 1500)
    assert ticks.sent == [(b"case-1", NOW + 1000)] * 2
    ticks.report(None)  # delivered this time
    c.fire(ticks, NOW + 2000)
    assert ticks.sent == [(b"case-1", NOW + 1000)] * 2
