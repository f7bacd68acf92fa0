"""A tail goes on whatever stops it: an error, or a call that never returns (no sign of life)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import Pulse, keep_tailing, release


async def _tail_until(tail: Callable[[Pulse], Awaitable[None]], event: asyncio.Event, timeout: float,
                      **options: Any) -> asyncio.Task[None]:
    """`keep_tailing(tail)` until `event` is set (failing after `timeout` s), then stopped as a
    service stops it; returns the stopped task."""
    runner = asyncio.create_task(keep_tailing(tail, "test", **options))
    try:
        await asyncio.wait_for(event.wait(), timeout)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return runner


async def test_a_tail_silent_past_the_limit_is_cancelled_and_started_again(caplog: pytest.LogCaptureFixture) -> None:
    starts: list[int] = []
    released: list[int] = []
    third = asyncio.Event()

    async def tail(pulse: Pulse) -> None:
        starts.append(len(starts))
        if len(starts) == 3:
            third.set()
        pulse.at("fetch")
        try:
            await asyncio.Event().wait()  # a call that never returns, as aiokafka's after a broker's SIGKILL
        finally:
            released.append(len(starts))

    caplog.set_level(logging.WARNING, "parcours.kafka")
    await _tail_until(tail, third, 10, silence_s=0.2)
    assert released == [1, 2, 3]  # each start's consumer let go, the last one's when the service stops
    silent = [r for r in caplog.records if r.getMessage() == "test tail silent; started again"]
    assert len(silent) >= 2
    assert {r.__dict__["step"] for r in silent} == {"fetch"}  # the step it hung in, named


async def test_a_tail_that_beats_is_left_alone_and_one_that_fails_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    """Silence is measured on a clock that moves only with the tail's beats (0.05 s a beat, 0.3 s
    in all: twice the silence allowed), so a loaded machine's slow event loop cannot make a
    beating tail look silent."""
    runs: list[str] = []
    done = asyncio.Event()
    now = [0.0]

    async def tail(pulse: Pulse) -> None:
        runs.append("run")
        if len(runs) == 1:
            for _ in range(6):
                now[0] += 0.05
                pulse.at("fetch")
                await asyncio.sleep(0.05)
            raise ClusterError("broker away")
        done.set()
        await asyncio.Event().wait()

    caplog.set_level(logging.WARNING, "parcours.kafka")
    await _tail_until(tail, done, 10, silence_s=0.15, clock=lambda: now[0])
    messages = [(r.getMessage(), r.__dict__.get("reason")) for r in caplog.records]
    assert ("test tail interrupted; retrying", "broker away") in messages
    assert not any(m == "test tail silent; started again" for m, _ in messages)


async def test_a_tail_that_ends_by_itself_starts_again_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = 0
    third = asyncio.Event()
    pauses: list[float] = []
    sleep = asyncio.sleep

    async def recorded(delay: float, *args: Any) -> Any:
        pauses.append(delay)
        return await sleep(delay, *args)

    async def tail(pulse: Pulse) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            third.set()
            await asyncio.Event().wait()

    monkeypatch.setattr(asyncio, "sleep", recorded)
    await _tail_until(tail, third, 10)
    assert pauses == []  # no pause between the runs, as after a failure


async def test_a_cancellation_from_inside_the_tail_does_not_end_it(caplog: pytest.LogCaptureFixture) -> None:
    """A library raising CancelledError out of a call (not a stop of the service) must not end
    the tail for good: it is started again, and said."""
    runs = 0
    second = asyncio.Event()

    async def tail(pulse: Pulse) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            pulse.at("fetch")
            raise asyncio.CancelledError  # as from inside a client's call
        second.set()
        await asyncio.Event().wait()

    caplog.set_level(logging.WARNING, "parcours.kafka")
    runner = await _tail_until(tail, second, 10)
    said = [r for r in caplog.records if r.getMessage() == "test tail cancelled from within; started again"]
    assert len(said) == 1
    assert said[0].__dict__["where"].startswith("test_keep_tailing.py:")  # the frame it was raised in
    assert " tail" in said[0].__dict__["where"]
    assert runner.cancelled()  # a stop of the service still ends it


class _Consumer:
    """An aiokafka consumer as far as `release` sees it; its stop passes on a cancellation of its
    own, as aiokafka's `Fetcher.close` does when a fetch sleeps in its retry backoff (#647)."""

    def __init__(self, stop: Callable[[], Awaitable[None]]) -> None:
        self.stop = stop
        self.closed = False
        self._fetcher = type("Fetcher", (), {"_pending_tasks": []})()
        self._client = self

    async def close(self) -> None:
        self.closed = True


async def test_a_consumer_whose_stop_raises_its_own_cancellation_is_released_and_the_error_kept(caplog: pytest.LogCaptureFixture) -> None:
    async def leaks_a_cancellation() -> None:
        raise asyncio.CancelledError

    consumer = _Consumer(leaks_a_cancellation)

    async def tail_step() -> None:  # a tail's `finally`: the error that ended it must come out
        try:
            raise ClusterError("broker away")
        finally:
            await release(consumer)

    caplog.set_level(logging.WARNING, "parcours.kafka")
    with pytest.raises(ClusterError, match="broker away"):
        await tail_step()
    assert consumer.closed  # what the interrupted stop left open, closed
    assert any("aiokafka #647" in r.getMessage() for r in caplog.records)


async def test_a_real_cancellation_during_release_goes_through() -> None:
    entered = asyncio.Event()

    async def slow_stop() -> None:
        entered.set()
        await asyncio.sleep(5)

    consumer = _Consumer(slow_stop)
    task = asyncio.ensure_future(release(consumer))
    await entered.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert not consumer.closed
