"""docs/events.md and docs/asyncapi.json are what `parcours docs` writes from schemas/ and
topics/: never stale."""

from __future__ import annotations

from pathlib import Path

from parcours.contract.schemas import default_schema_set
from parcours.topology.catalogue import Catalogue
from parcours.topology.docs import avro_type, generated, render

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_documents_are_the_generated_ones() -> None:
    for name, text in generated().items():
        assert (ROOT / "docs" / name).read_text() == text, f"docs/{name} is stale: run `parcours docs`"


def test_every_event_type_and_field_is_documented() -> None:
    text = render(Catalogue.load(), default_schema_set())
    schemas = default_schema_set()
    for et in schemas.event_types():
        assert f"## {et}" in text
        for f in schemas.versions[et][-1].raw["fields"]:
            assert f"| `{f['name']}` |" in text


def test_avro_types_read_plainly() -> None:
    assert avro_type(["null", {"type": "int", "logicalType": "date"}]) == "null | date"
    assert avro_type({"type": "array", "items": "string"}) == "array of string"
    assert avro_type({"type": "enum", "name": "E", "symbols": ["a", "b"]}) == "a / b"
