"""Where the shipped data files live: schemas/, topics/ at the repository root."""

from __future__ import annotations

from pathlib import Path

from parcours.settings import get_settings


def project_root() -> Path:
    """The folder holding `schemas/` and `topics/` (overridable with PARCOURS_ROOT)."""
    configured = get_settings().root
    if configured is not None:
        return configured
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "schemas").is_dir() and (parent / "topics").is_dir():
            return parent
    return Path.cwd()


def schemas_dir() -> Path:
    return project_root() / "schemas"


def topics_dir() -> Path:
    return project_root() / "topics"
