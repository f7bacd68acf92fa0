"""A service starting while the cluster is away or overloaded waits for it instead of dying; a
refusal (authorization, a bad request) still stops it at once, with its own error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from confluent_kafka import KafkaError, KafkaException

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import KafkaAccess
from parcours.bus.lineage import Lineage
from parcours.bus.reachability import unreachable, until_reachable
from parcours.processors import statelineage

#: librdkafka's local errors (underscored in confluent-kafka)
TIMED_OUT, TRANSPORT, ALL_BROKERS_DOWN = (getattr(KafkaError, f"_{n}") for n in ("TIMED_OUT", "TRANSPORT", "ALL_BROKERS_DOWN"))


def _rd(code: int) -> KafkaException:
    return KafkaException(KafkaError(code, "as librdkafka says it"))


def _wrapped(exc: BaseException) -> ClusterError:
    try:
        raise ClusterError("describing the cluster") from exc
    except ClusterError as out:
        return out


@pytest.mark.parametrize(("exc", "expected"), [
    # the processor's start on CI: Quix's describe_configs waiting 30 s for the controller
    (_rd(TIMED_OUT), True),
    (_rd(TRANSPORT), True),
    (_rd(ALL_BROKERS_DOWN), True),
    (_rd(KafkaError.NOT_CONTROLLER), True),
    (_rd(KafkaError.TOPIC_AUTHORIZATION_FAILED), False),
    (_rd(KafkaError.SASL_AUTHENTICATION_FAILED), False),
    (_rd(KafkaError.INVALID_CONFIG), False),
    (KafkaConnectionError("no broker"), True),
    (TopicAuthorizationFailedError(), False),
    (TimeoutError(), True),
    (_wrapped(_rd(TIMED_OUT)), True),
    (_wrapped(KafkaConnectionError("no broker")), True),
    (_wrapped(_rd(KafkaError.CLUSTER_AUTHORIZATION_FAILED)), False),
    (ClusterError("the producer's queue stayed full"), False),
    (ValueError("a bug"), False),
])
def test_what_counts_as_a_cluster_not_answering(exc: BaseException, expected: bool) -> None:
    assert unreachable(exc) is expected


def test_a_step_is_tried_again_with_growing_pauses_until_the_cluster_answers() -> None:
    pauses: list[float] = []
    failures = [_rd(TIMED_OUT), KafkaConnectionError("away"), _wrapped(TimeoutError()), _rd(TRANSPORT),
                _rd(TIMED_OUT), _rd(TIMED_OUT)]

    def step() -> str:
        if failures:
            raise failures.pop(0)
        return "started"

    assert until_reachable(step, "starting", sleep=pauses.append, first_s=1, most_s=8) == "started"
    assert pauses == [1, 2, 4, 8, 8, 8]


def test_a_refusal_is_raised_at_once() -> None:
    pauses: list[float] = []

    def step() -> str:
        raise _rd(KafkaError.TOPIC_AUTHORIZATION_FAILED)

    with pytest.raises(KafkaException):
        until_reachable(step, "starting", sleep=pauses.append)
    assert pauses == []


class _Engine:
    def __init__(self) -> None:
        self.ran = 0

    def run(self) -> None:
        self.ran += 1

    def stop(self) -> None:  # the watch's way to stop it: never called here
        raise AssertionError("stopped")


class _QuietWatch:
    def __init__(self, *_: Any) -> None:
        self.changed: str | None = None

    def start(self) -> None: ...
    def halt(self) -> None: ...
    def check(self) -> str | None:
        return None


def test_the_processor_waits_for_a_cluster_that_does_not_answer_while_its_engine_is_made(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The engine is made again, and run once, after its topics could not be inspected in time."""
    monkeypatch.setattr(statelineage, "prepare_state", lambda *_: Lineage("c1", {}))
    monkeypatch.setattr(statelineage, "LineageWatch", _QuietWatch)
    engine, made = _Engine(), []
    pauses: list[float] = []

    def build() -> _Engine:
        made.append(1)
        if len(made) < 3:
            raise _rd(TIMED_OUT)  # "Failed while waiting for controller: Local: Timed out"
        return engine

    statelineage.run_engine(build, tmp_path, KafkaAccess("127.0.0.1:1"), [], lambda _: None, sleep=pauses.append)
    assert (len(made), engine.ran, pauses) == (3, 1, [1.0, 2.0])


def test_the_processor_stops_on_a_refusal_while_its_engine_is_made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(statelineage, "prepare_state", lambda *_: Lineage("c1", {}))
    monkeypatch.setattr(statelineage, "LineageWatch", _QuietWatch)
    pauses: list[float] = []

    def build() -> _Engine:
        raise _rd(KafkaError.TOPIC_AUTHORIZATION_FAILED)

    with pytest.raises(KafkaException):
        statelineage.run_engine(build, tmp_path, KafkaAccess("127.0.0.1:1"), [], lambda _: None, sleep=pauses.append)
    assert pauses == []


def test_a_topic_error_in_a_metadata_answer_is_waited_for_only_when_kafka_says_it_may_pass() -> None:
    from types import SimpleNamespace

    from parcours.bus.topicids import read_answer, uuid_text

    def answer(*topics: tuple[int, str]) -> SimpleNamespace:
        return SimpleNamespace(cluster_id="c1", topics=[(code, name, bytes(range(16)), False, [], 0, {}) for code, name in topics])

    ids = read_answer(answer((0, "a"), (3, "gone")), ["a", "gone"])
    assert ids == ("c1", {"a": uuid_text(bytes(range(16)))})
    for code, waited in ((5, True), (29, False)):  # LEADER_NOT_AVAILABLE, TOPIC_AUTHORIZATION_FAILED
        with pytest.raises(ClusterError) as caught:
            read_answer(answer((0, "a"), (code, "b")), ["a", "b"])
        assert unreachable(caught.value) is waited
