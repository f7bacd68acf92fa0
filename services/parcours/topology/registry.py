"""The structure registry (topics/structures.yaml) and the kind policy (topics/policy.yaml)."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from parcours.auth.errors import BadKeys
from parcours.auth.keys import checked_jwks
from parcours.contract.models import CATEGORIES, KINDS, SLUG_PATTERN
from parcours.paths import topics_dir
from parcours.settings import get_settings
from parcours.topology.errors import CatalogueError, RegistryError
from parcours.topology.yamlfile import fields, line, load


@dataclass(frozen=True)
class Structure:
    slug: str
    kind: str
    territory: str
    name: str
    #: the SHA-256 of a static bearer token (development, or none: "")
    token_sha256: str = ""
    #: the public keys that sign its client assertions (SMART Backend Services: ES384 or RS384)
    jwks: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)

    def has_dev_token(self) -> bool:
        return hmac.compare_digest(self.token_sha256, hash_token(dev_token(self.slug)))

    def as_record(self) -> dict[str, Any]:
        """The structure as the registry writes it (YAML seed, registry topic)."""
        out: dict[str, Any] = {"slug": self.slug, "kind": self.kind, "territory": self.territory, "name": self.name}
        if self.token_sha256:
            out["token_sha256"] = self.token_sha256
        if self.jwks:
            out["jwks"] = {"keys": [dict(k) for k in self.jwks]}
        return out


def structure_of(raw: dict[str, Any], where: str = "structure") -> Structure:
    """A structure from its record, every field checked; ValueError names the fault."""
    missing = {"slug", "kind", "territory", "name"} - raw.keys()
    if missing:
        raise ValueError(f"{where} is missing {sorted(missing)}")
    unknown = set(raw) - {"slug", "kind", "territory", "name", "token_sha256", "jwks"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    slug, kind = str(raw["slug"]), str(raw["kind"])
    if not re.match(SLUG_PATTERN, slug):
        raise ValueError(f"slug {slug!r} must match {SLUG_PATTERN}")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} must be one of {list(KINDS)}")
    token = str(raw.get("token_sha256") or "")
    if token and not re.fullmatch(r"[0-9a-f]{64}", token):
        raise ValueError("token_sha256 must be 64 lowercase hex digits")
    keys = raw.get("jwks") or {"keys": []}
    keys = keys.get("keys") if isinstance(keys, dict) else keys
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise ValueError("jwks must be a JWK Set ({keys: [...]}) or a list of JWKs")
    try:
        jwks = checked_jwks([fields(k) for k in keys], slug)
    except BadKeys as exc:
        raise ValueError(exc.message) from None
    return Structure(slug, kind, str(raw["territory"]), str(raw["name"]), token, jwks)


ACTIVE, REMOVED = "active", "removed"


def dev_token(slug: str) -> str:
    return f"dev-{slug}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Registry:
    """The structures that may sign in (`structures`), and those that left (`retired`): a
    structure that left keeps its topics, its cases and its audit; it signs in no more."""

    structures: dict[str, Structure]
    retired: dict[str, Structure] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: dict[str, dict[str, Any]]) -> Registry:
        """The registry from its topic's records (slug -> record; `status: removed` when it left)."""
        active: dict[str, Structure] = {}
        retired: dict[str, Structure] = {}
        for slug, record in sorted(records.items()):
            status = record.get("status", ACTIVE)
            s = structure_of({k: v for k, v in record.items() if k != "status"}, f"registry record {slug}")
            (retired if status == REMOVED else active)[s.slug] = s
        return cls(active, retired)

    def records(self) -> dict[str, dict[str, Any]]:
        """Slug -> record, as the registry topic holds them."""
        return {**{slug: {**s.as_record(), "status": REMOVED} for slug, s in self.retired.items()},
                **{slug: {**s.as_record(), "status": ACTIVE} for slug, s in self.structures.items()}}

    def known(self) -> list[str]:
        """Every structure that ever joined: those that left keep their topics."""
        return sorted({*self.structures, *self.retired})

    def joined(self, structure: Structure) -> Registry:
        """With `structure` added or updated (a structure that left may join again)."""
        retired = {k: v for k, v in self.retired.items() if k != structure.slug}
        return Registry({**self.structures, structure.slug: structure}, retired)

    def left(self, slug: str) -> Registry:
        """Without `slug` among those who may sign in; its topics, cases and audit stay."""
        if slug not in self.structures:
            raise RegistryError(f"no registered structure {slug!r}")
        active = {k: v for k, v in self.structures.items() if k != slug}
        return Registry(active, {**self.retired, slug: self.structures[slug]})

    def get(self, slug: str) -> Structure:
        """A structure that joined, whether it left since or not (KeyError: never joined)."""
        return self.structures.get(slug) or self.retired[slug]

    def kind_of(self, slug: str) -> str:
        return self.get(slug).kind

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
            try:
                s = structure_of(fields(item))
            except ValueError as exc:
                raise CatalogueError(path, ln, str(exc)) from None
            if s.slug in out:
                raise CatalogueError(path, ln, f"duplicate slug {s.slug!r}")
            out[s.slug] = s
        return cls(out)

    def by_token(self, token: str) -> Structure | None:
        digest = hash_token(token)
        found = None
        for s in self.structures.values():  # constant time per entry, no early exit
            if s.token_sha256 and hmac.compare_digest(s.token_sha256, digest):
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
