"""The module boundaries, read from the import statements of every module under services/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "parcours"
ENGINES = ("aiokafka", "confluent_kafka", "quixstreams", "fastapi", "starlette", "httpx", "uvicorn")


def _imports(area: str) -> dict[str, set[str]]:
    """Module path -> the modules it imports (at any depth of the file, lazily or not)."""
    out: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / area).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        out[str(path.relative_to(PACKAGE))] = names
    return out


def _offending(area: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    return {m: sorted(n for n in names if n.startswith(forbidden)) for m, names in _imports(area).items()
            if any(n.startswith(forbidden) for n in names)}


@pytest.mark.parametrize(("area", "forbidden"), [
    ("processors", ("parcours.adapters",)),
    ("adapters", ("parcours.processors",)),
    ("casefile", (*ENGINES, "parcours.adapters", "parcours.processors", "parcours.readmodel")),
    ("publishing", (*ENGINES, "parcours.adapters", "parcours.processors", "parcours.readmodel")),
    ("contract", (*ENGINES, "parcours.adapters", "parcours.processors")),
    ("readmodel", ("parcours.adapters", "parcours.processors", "fastapi", "starlette")),
    ("fhir", (*ENGINES, "parcours.adapters", "parcours.processors", "parcours.readmodel")),
    ("territory", (*ENGINES, "parcours.adapters", "parcours.processors", "parcours.readmodel")),
])
def test_an_area_does_not_import_what_it_must_not(area: str, forbidden: tuple[str, ...]) -> None:
    assert _offending(area, forbidden) == {}


def test_the_checker_sees_imports() -> None:  # the graph above is read, not assumed empty
    assert "parcours.publishing.rules" in _imports("processors")["processors/validator.py"]
    assert "quixstreams" in _imports("processors")["processors/app.py"]
