"""A processor instance's name (its transactional id and static group membership) is stable across
its restarts and never shared by two running instances."""

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
