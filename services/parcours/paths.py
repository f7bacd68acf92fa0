"""Where the shipped data files live: schemas/, topics/ at the repository root."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder holding `schemas/` and `topics/` (overridable with PARCOURS_ROOT)."""
    env = os.environ.get("PARCOURS_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "schemas").is_dir() and (parent / "topics").is_dir():
            return parent
    return Path.cwd()


def schemas_dir() -> Path:
    return project_root() / "schemas"


def topics_dir() -> Path:
    return project_root() / "topics"
