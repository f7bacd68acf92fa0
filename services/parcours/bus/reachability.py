"""Whether the cluster could not be reached or did not answer, as opposed to refusing, and a
step tried again until it answers: what a service starting while a broker is away or overloaded
does instead of dying."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from aiokafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger("parcours.kafka")
T = TypeVar("T")

#: librdkafka's answers that say the cluster did not answer (yet), not that it refused: no broker
#: reached, no answer in time, no controller or leader known yet (their `retriable()` is not
#: always set on the errors an admin request's futures carry)
_RD_UNREACHABLE = ("_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_MSG_TIMED_OUT", "_WAIT_COORD",
                   "REQUEST_TIMED_OUT", "NETWORK_EXCEPTION", "NOT_CONTROLLER", "LEADER_NOT_AVAILABLE",
                   "BROKER_NOT_AVAILABLE", "COORDINATOR_NOT_AVAILABLE", "COORDINATOR_LOAD_IN_PROGRESS")


def unreachable(exc: BaseException) -> bool:
    """Whether `exc`, or an error it wraps, says the cluster could not be reached or did not answer
    in time (a broker away, restarting or too slow), rather than refused what was asked: worth
    trying again. Refusals (authorization, a bad request, a missing topic) are not."""
    from confluent_kafka import KafkaError as RdError
    from confluent_kafka import KafkaException

    unreachable_codes = {getattr(RdError, name) for name in _RD_UNREACHABLE}
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, KafkaException) and at.args and isinstance(at.args[0], RdError):
            return at.args[0].code() in unreachable_codes or bool(at.args[0].retriable())
        if isinstance(at, KafkaError):
            return bool(at.retriable) or isinstance(at, KafkaTimeoutError)
        if isinstance(at, TimeoutError | ConnectionError):
            return True
        at = at.__cause__ or at.__context__
    return False


def until_reachable(step: Callable[[], T], what: str, *, sleep: Callable[[float], None] = time.sleep,
                    first_s: float = 1.0, most_s: float = 15.0) -> T:
    """`step()` (blocking), tried again as long as the cluster cannot be reached or does not answer
    (`unreachable`): a service starting while a broker is away or overloaded waits for it, with a
    warning per try and pauses doubling from `first_s` to `most_s`, instead of dying. Any other
    error is raised at once."""
    delay = first_s
    for attempt in itertools.count(1):
        try:
            return step()
        except Exception as exc:
            if not unreachable(exc):
                raise
            log.warning("the cluster did not answer: trying again", extra={
                "step": what, "attempt": attempt, "retry_in_s": delay, "error": f"{type(exc).__name__}: {exc}"[:300]})
        sleep(delay)
        delay = min(most_s, delay * 2)
    raise AssertionError("unreachable")  # itertools.count never ends
