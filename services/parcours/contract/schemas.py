"""The shipped Avro schema set: parsed once, indexed by event type, version and fingerprint.

Files are `schemas/<EventType>.v<N>.avsc`. The newest version of a type is the reader schema;
any version is a valid writer schema, resolved from the fingerprint a record carries.
`check_backward_transitive` enforces that the newest version reads every earlier one
(and, transitively, every version reads all before it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from parcours.contract.errors import IncompatibleSchemaError, SchemaError
from parcours.paths import schemas_dir

_FILE = re.compile(r"^(?P<type>[A-Z][A-Za-z0-9]+)\.v(?P<version>[1-9][0-9]*)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    event_type: str
    version: int
    path: Path
    raw: dict[str, Any]
    parsed: Any
    fingerprint: str  # CRC-64-AVRO of the parsing canonical form, hex

    @property
    def ref(self) -> str:
        """The `ce_dataschema` value: names the schema and its version."""
        return f"urn:parcours:schema:{self.event_type}:v{self.version}"


@dataclass
class SchemaSet:
    versions: dict[str, list[SchemaVersion]] = field(default_factory=dict)
    by_fingerprint: dict[str, SchemaVersion] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> SchemaSet:
        out = cls()
        if not folder.is_dir():
            raise SchemaError(f"schema folder {folder} does not exist")
        for path in sorted(folder.glob("*.avsc")):
            m = _FILE.match(path.name)
            if not m:
                raise SchemaError(f"{path}: name must be <EventType>.v<N>.avsc")
            try:
                raw = json.loads(path.read_text())
                canonical = parse_schema(raw, _write_hint=False, _force=True)
                # parsed with fastavro's hint: a hinted schema is not parsed again at each read
                # and write (without it, parsing was ~70% of a small record's decode)
                parsed = parse_schema(raw)
            except (ValueError, TypeError, KeyError) as exc:
                raise SchemaError(f"{path}: not a valid Avro schema: {exc}") from exc
            if raw.get("name") != m["type"]:
                raise SchemaError(f"{path}: record name {raw.get('name')!r} differs from the file name")
            fp = fingerprint(to_parsing_canonical_form(canonical), "CRC-64-AVRO")
            sv = SchemaVersion(m["type"], int(m["version"]), path, raw, parsed, fp)
            out.versions.setdefault(sv.event_type, []).append(sv)
            out.by_fingerprint[fp] = sv
        for vs in out.versions.values():
            vs.sort(key=lambda v: v.version)
            numbers = [v.version for v in vs]
            if numbers != list(range(1, len(vs) + 1)):
                raise SchemaError(f"{vs[0].event_type}: versions {numbers} must run 1..N without gaps")
        return out

    def latest(self, event_type: str) -> SchemaVersion:
        try:
            return self.versions[event_type][-1]
        except KeyError:
            raise SchemaError(f"unknown event type {event_type!r}") from None

    def event_types(self) -> list[str]:
        return sorted(self.versions)

    def check_backward_transitive(self) -> None:
        """Raise IncompatibleSchemaError unless every version reads every earlier one."""
        problems: list[str] = []
        for event_type, vs in self.versions.items():
            for i, reader in enumerate(vs):
                for writer in vs[:i]:
                    problems.extend(
                        f"{event_type} v{reader.version} cannot read v{writer.version}: {p}"
                        for p in schema_problems(writer.raw, reader.raw)
                    )
        if problems:
            raise IncompatibleSchemaError(problems)


@lru_cache(maxsize=1)
def default_schema_set() -> SchemaSet:
    """The project's schemas, parsed once per process."""
    return SchemaSet.load(schemas_dir())


# --- Avro schema resolution rules (specification, "Schema Resolution") ---------------------

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _kind(s: Any) -> str:
    if isinstance(s, list):
        return "union"
    if isinstance(s, dict):
        return str(s["type"]) if s["type"] in ("record", "enum", "array", "map", "fixed") else _kind(s["type"])
    return str(s)


def _name(s: Any) -> str | None:
    return s.get("name") if isinstance(s, dict) else None


def schema_problems(  # noqa: C901, PLR0911, PLR0912 - one case per Avro type, in the order of the spec's resolution rules
    writer: Any,
    reader: Any,
    path: str = "",
    names: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> list[str]:
    """Why `reader` cannot read data written with `writer`; empty when it can.

    `names` holds the named types met so far on each side (writer's, reader's).
    """
    names = ({}, {}) if names is None else names
    writer, reader = _deref(writer, names[0]), _deref(reader, names[1])
    where = path or "<root>"
    wk, rk = _kind(writer), _kind(reader)
    if wk == "union":
        # every branch the writer may have used must be readable
        return [p for branch in writer for p in schema_problems(branch, reader, path, names)]
    if rk == "union":
        for branch in reader:
            if not schema_problems(writer, branch, path, names):
                return []
        return [f"{where}: no branch of the reader union accepts writer type {wk}"]
    if wk in _PROMOTIONS or rk in _PROMOTIONS or wk in ("null", "boolean", "double"):
        if wk == rk or rk in _PROMOTIONS.get(wk, set()):
            return []
        return [f"{where}: writer type {wk} cannot be read as {rk}"]
    if wk != rk:
        return [f"{where}: writer type {wk} cannot be read as {rk}"]
    if wk == "record":
        if _name(writer) != _name(reader) and _name(writer) not in reader.get("aliases", []):
            return [f"{where}: record name {_name(writer)} became {_name(reader)}"]
        problems: list[str] = []
        wfields = {f["name"]: f for f in writer["fields"]}
        for rf in reader["fields"]:
            candidates = [rf["name"], *rf.get("aliases", [])]
            wf = next((wfields[n] for n in candidates if n in wfields), None)
            fpath = f"{path}.{rf['name']}" if path else rf["name"]
            if wf is None:
                if "default" not in rf:
                    problems.append(f"{fpath}: new field without a default")
            else:
                problems.extend(schema_problems(wf["type"], rf["type"], fpath, names))
        return problems
    if wk == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{where}: enum symbols {sorted(missing)} removed without an enum default"]
        return []
    if wk == "array":
        return schema_problems(writer["items"], reader["items"], f"{path}[]", names)
    if wk == "map":
        return schema_problems(writer["values"], reader["values"], f"{path}{{}}", names)
    if wk == "fixed" and writer.get("size") != reader.get("size"):
        return [f"{where}: fixed size changed"]
    return []


def _deref(s: Any, named: dict[str, Any]) -> Any:
    """Resolve references to named types; remember definitions as they are met."""
    if isinstance(s, str) and s not in _PROMOTIONS and s not in ("null", "boolean", "double"):
        short = s.rsplit(".", 1)[-1]
        return named.get(short, s)
    if isinstance(s, dict) and s.get("type") in ("record", "enum", "fixed"):
        named.setdefault(s["name"].rsplit(".", 1)[-1], s)
        if s["type"] == "record":
            for f in s["fields"]:
                _collect(f["type"], named)
    return s


def _collect(s: Any, named: dict[str, Any]) -> None:
    if isinstance(s, list):
        for b in s:
            _collect(b, named)
    elif isinstance(s, dict):
        if s.get("type") in ("record", "enum", "fixed"):
            _deref(s, named)
        elif s.get("type") == "array":
            _collect(s["items"], named)
        elif s.get("type") == "map":
            _collect(s["values"], named)
