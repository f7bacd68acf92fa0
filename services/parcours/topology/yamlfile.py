"""YAML loading that remembers the line of every mapping, so errors can name it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from parcours.topology.errors import CatalogueError

LINE = "__line__"


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping[LINE] = node.start_mark.line + 1
        return mapping


def load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as exc:
        raise CatalogueError(path, None, f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CatalogueError(path, mark.line + 1 if mark else None, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogueError(path, 1, "the top level must be a mapping")
    return data


def line(node: Any) -> int | None:
    return node.get(LINE) if isinstance(node, dict) else None


def fields(node: dict[str, Any]) -> dict[str, Any]:
    """The mapping without the bookkeeping key."""
    return {k: v for k, v in node.items() if k != LINE}
