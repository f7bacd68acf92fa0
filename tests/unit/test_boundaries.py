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
    ("bus", ("fastapi", "starlette", "parcours.adapters", "parcours.processors", "parcours.readmodel", "parcours.publishing")),
])
def test_an_area_does_not_import_what_it_must_not(area: str, forbidden: tuple[str, ...]) -> None:
    assert _offending(area, forbidden) == {}


def test_no_runtime_module_imports_the_development_tools() -> None:
    runtime = [m for area in ("adapters", "bus", "casefile", "contract", "fhir", "processors", "publishing", "readmodel", "topology")
               for m, names in _imports(area).items() if any(n.startswith("parcours.devtools") for n in names)]
    assert runtime == []


def test_the_checker_sees_imports() -> None:  # the graph above is read, not assumed empty
    assert "parcours.publishing.rules" in _imports("processors")["processors/validator.py"]
    assert "quixstreams" in _imports("processors")["processors/app.py"]


# --- the whole package: no circle, no private name across modules, no module over 400 lines ------

MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _from_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from parcours... import name` in a file, at any depth."""
    return [(node.module, a.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("parcours")
            for a in node.names]


def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a name that is a submodule counts as that module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = {f"{m}.{n}" if f"{m}.{n}" in modules else m for m, n in _from_imports(path)}
        edges |= {a.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import) for a in node.names}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_among_the_packages_modules() -> None:
    assert _circles(_graph()) == []


def test_the_circle_finder_finds_one() -> None:  # the test above reads a graph, it does not assume it acyclic
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "parcours.publishing.accept" in _graph()["parcours.processors.validator"]


def test_no_private_name_is_imported_from_another_module() -> None:
    private = [f"{name} imports {m}.{n}" for name, path in _modules().items() for m, n in _from_imports(path) if n.startswith("_")]
    assert private == []


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_settings_is_the_only_reader_of_the_environment() -> None:
    readers = [name for name, path in _modules().items() if name != "parcours.settings"
               and any(word in path.read_text() for word in ("os.environ", "os.getenv", "getenv("))]
    assert readers == []
