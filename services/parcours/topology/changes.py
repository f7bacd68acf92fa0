"""Changes of the structure registry, as `parcours structures` and the adapters' operator API
make them: a structure joins, is updated (name, territory, keys: rotation adds the new key, then
removes the old one), or leaves. Pure: a registry in, a registry out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from parcours.topology.errors import RegistryError
from parcours.topology.registry import Registry, Structure, structure_of

Edit = Callable[[Registry], Registry]


def add(record: Mapping[str, Any]) -> Edit:
    """A new structure (or one that left, joining again)."""
    structure = _checked(dict(record))

    def edit(registry: Registry) -> Registry:
        if structure.slug in registry.structures:
            raise RegistryError(f"{structure.slug} is registered already: update it")
        return registry.joined(structure)
    return edit


def update(slug: str, fields: Mapping[str, Any], *, add_keys: list[dict[str, Any]] | None = None,
           remove_kids: list[str] | None = None) -> Edit:
    """Fields replaced (`kind` may not change: its topics' rights would), keys added or removed."""
    def edit(registry: Registry) -> Registry:
        current = registry.structures.get(slug)
        if current is None:
            raise RegistryError(f"no registered structure {slug!r}")
        if (fields.get("kind") or current.kind) != current.kind:
            raise RegistryError(f"{slug} is a {current.kind}: a structure does not change kind (remove it, add another)")
        record = {**current.as_record(), **{k: v for k, v in fields.items() if v is not None}}
        keys = [k for k in current.jwks if k.get("kid") not in set(remove_kids or [])]
        unknown = set(remove_kids or []) - {k.get("kid") for k in current.jwks}
        if unknown:
            raise RegistryError(f"{slug} has no key {sorted(unknown)}")
        if "jwks" not in fields or fields["jwks"] is None:
            record["jwks"] = {"keys": keys + list(add_keys or [])}
        return registry.joined(_checked(record))
    return edit


def remove(slug: str) -> Edit:
    def edit(registry: Registry) -> Registry:
        return registry.left(slug)
    return edit


def _checked(record: dict[str, Any]) -> Structure:
    try:
        return structure_of(record)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None


def without_secrets(structure: Structure) -> dict[str, Any]:
    """What an operator is shown of a structure: its record without the token hash."""
    return {k: v for k, v in dataclasses.asdict(structure).items() if k != "token_sha256"} | {"static_token": bool(structure.token_sha256)}
