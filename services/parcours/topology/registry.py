"""The structure registry (topics/structures.yaml) and the kind policy (topics/policy.yaml)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from parcours.contract.models import CATEGORIES, KINDS, SLUG_PATTERN
from parcours.paths import topics_dir
from parcours.settings import get_settings
from parcours.topology.errors import CatalogueError
from parcours.topology.yamlfile import fields, line, load


@dataclass(frozen=True)
class Structure:
    slug: str
    kind: str
    territory: str
    name: str
    token_sha256: str

    def has_dev_token(self) -> bool:
        return hmac.compare_digest(self.token_sha256, hash_token(dev_token(self.slug)))


def dev_token(slug: str) -> str:
    return f"dev-{slug}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Registry:
    structures: dict[str, Structure]

    @classmethod
    def load(cls, path: Path) -> Registry:
        data = load(path)
        items = data.get("structures")
        if not isinstance(items, list) or not items:
            raise CatalogueError(path, line(data), "`structures` must be a non-empty list")
        out: dict[str, Structure] = {}
        for item in items:
            if not isinstance(item, dict):
                raise CatalogueError(path, None, "each structure must be a mapping")
            ln = line(item)
            raw = fields(item)
            missing = {"slug", "kind", "territory", "name", "token_sha256"} - raw.keys()
            if missing:
                raise CatalogueError(path, ln, f"structure is missing {sorted(missing)}")
            s = Structure(**{k: str(raw[k]) for k in ("slug", "kind", "territory", "name", "token_sha256")})
            if not re.match(SLUG_PATTERN, s.slug):
                raise CatalogueError(path, ln, f"slug {s.slug!r} must match {SLUG_PATTERN}")
            if s.kind not in KINDS:
                raise CatalogueError(path, ln, f"kind {s.kind!r} must be one of {list(KINDS)}")
            if not re.fullmatch(r"[0-9a-f]{64}", s.token_sha256):
                raise CatalogueError(path, ln, "token_sha256 must be 64 lowercase hex digits")
            if s.slug in out:
                raise CatalogueError(path, ln, f"duplicate slug {s.slug!r}")
            out[s.slug] = s
        return cls(out)

    def by_token(self, token: str) -> Structure | None:
        digest = hash_token(token)
        found = None
        for s in self.structures.values():  # constant time per entry, no early exit
            if hmac.compare_digest(s.token_sha256, digest):
                found = s
        return found

    def of_kind(self, kind: str) -> list[Structure]:
        return [s for s in self.structures.values() if s.kind == kind]

    def covered_by(self, grantee: str) -> list[Structure]:
        """Structures a consent's grantee (a slug or a kind) covers."""
        if grantee in KINDS:
            return self.of_kind(grantee)
        s = self.structures.get(grantee)
        return [s] if s else []

    def with_dev_tokens(self) -> list[str]:
        return [s.slug for s in self.structures.values() if s.has_dev_token()]


@dataclass(frozen=True)
class KindPolicy:
    hidden: dict[str, frozenset[str]]
    #: urgency -> ms a referral may wait for its first answer (`referral_deadlines`)
    deadlines: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> KindPolicy:
        data = load(path)
        kinds = data.get("kinds")
        if not isinstance(kinds, dict):
            raise CatalogueError(path, line(data), "`kinds` must be a mapping")
        hidden: dict[str, frozenset[str]] = {}
        for kind, spec in fields(kinds).items():
            if kind not in KINDS:
                raise CatalogueError(path, line(kinds), f"unknown kind {kind!r}")
            cats = (spec or {}).get("hidden_categories", [])
            bad = [c for c in cats if c not in CATEGORIES]
            if bad:
                raise CatalogueError(path, line(spec), f"unknown categories {bad}; known: {list(CATEGORIES)}")
            hidden[kind] = frozenset(cats)
        for kind in KINDS:
            hidden.setdefault(kind, frozenset())
        return cls(hidden, _deadlines(path, data.get("referral_deadlines") or {}))


_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
URGENCIES = ("urgent", "soon", "routine")


def _deadlines(path: Path, raw: Any) -> dict[str, int]:
    """`urgency: <n><s|m|h|d>` -> ms; every urgency must have one."""
    if not isinstance(raw, dict):
        raise CatalogueError(path, line(raw), "`referral_deadlines` must be a mapping of urgency to a delay")
    out: dict[str, int] = {}
    for urgency, delay in fields(raw).items():
        text = str(delay).strip()
        if urgency not in URGENCIES:
            raise CatalogueError(path, line(raw), f"unknown urgency {urgency!r}; known: {list(URGENCIES)}")
        if text[-1:] not in _UNITS_MS or not text[:-1].isdigit() or int(text[:-1]) <= 0:
            raise CatalogueError(path, line(raw), f"deadline of {urgency!r}: {text!r} is not a delay such as 90s, 30m, 4h or 2d")
        out[urgency] = int(text[:-1]) * _UNITS_MS[text[-1]]
    missing = [u for u in URGENCIES if u not in out]
    if raw and missing:
        raise CatalogueError(path, line(raw), f"`referral_deadlines` lacks {missing}")
    return out


@lru_cache(maxsize=4)
def default_registry(path: Path | None = None) -> Registry:
    """topics/structures.yaml, or the file PARCOURS_REGISTRY names."""
    return Registry.load(path or get_settings().registry or topics_dir() / "structures.yaml")


@lru_cache(maxsize=1)
def default_policy() -> KindPolicy:
    """topics/policy.yaml, or the file PARCOURS_POLICY names (tests shorten the deadlines)."""
    return KindPolicy.load(get_settings().policy or topics_dir() / "policy.yaml")
