"""A processor instance's name (its transactional id and static group membership) is stable across
its restarts and never shared by two running instances; its step's metrics reach Prometheus."""

from __future__ import annotations

from pathlib import Path

import pytest

from parcours.processors.app import claim_state_dir, instance_name
from parcours.processors.errors import EngineError


def test_the_name_follows_the_state_folder_or_the_configured_one(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert instance_name(a) == instance_name(a)
    assert instance_name(a) != instance_name(b)
    assert instance_name(a, "processor-0") == "processor-0"
    with pytest.raises(EngineError, match="PARCOURS_PROCESSOR_INSTANCE"):
        instance_name(a, "two words")


def test_a_second_processor_on_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    held = claim_state_dir(tmp_path / "state")
    try:
        with pytest.raises(EngineError, match="another processor uses the state folder"):
            claim_state_dir(tmp_path / "state")
    finally:
        held.close()
    claim_state_dir(tmp_path / "state").close()  # free again once the first one is gone


def test_metrics_are_handed_over_in_batches_and_at_once_on_a_forced_commit() -> None:
    from parcours.ops.metrics import ProcessorMetrics
    from parcours.processors.app import _Counts
    from parcours.processors.core import Step

    metrics = ProcessorMetrics()
    counts = _Counts(metrics)
    counts.batched, counts.FLUSH_S = True, 3600.0  # only a forced turn hands them over here

    def dead_letters() -> float | None:
        return metrics.registry.get_sample_value("parcours_dead_letters_total", {"service": "processor", "reason": "undecodable"})

    counts(Step(dead_letter="undecodable"))
    counts(Step(dead_letter="undecodable"))
    counts.tick()
    assert dead_letters() is None  # counted, not handed over yet
    counts.tick(force=True)
    assert dead_letters() == 2.0
    counts.batched = False  # without the loop hook: at once
    counts(Step(dead_letter="undecodable"))
    assert dead_letters() == 3.0


def test_step_time_records_written_and_state_writes_are_counted() -> None:
    from parcours.ops.metrics import ProcessorMetrics
    from parcours.processors.app import _Counts
    from parcours.processors.core import Out, Step

    metrics = ProcessorMetrics()
    counts = _Counts(metrics)
    out = Out("views.dac-31", b"k", b"v")
    counts(Step(outputs=[out, out, out], state_writes=4), 0.25)
    counts(Step(outputs=[out], state_writes=1), 0.5)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    assert sample("parcours_processor_step_seconds_total") == 0.75
    assert sample("parcours_processor_records_written_total") == 4.0
    assert sample("parcours_processor_state_writes_total") == 5.0
