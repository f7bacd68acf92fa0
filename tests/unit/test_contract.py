"""The contract: models mirror the Avro schemas, the codec round-trips, errors name what is wrong."""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from parcours.contract.codec import Codec
from parcours.contract.errors import DecodeError, EventValidationError, IncompatibleSchemaError, SchemaError
from parcours.contract.models import EVENT_TYPES, build_event
from parcours.contract.schemas import SchemaSet, default_schema_set, schema_problems
from tests.factories import DEFAULTS, ev, one_of_each

FIXTURES = Path(__file__).parent.parent / "fixtures" / "schemas"


def _avro_shape(t: typing.Any, named: dict[str, typing.Any]) -> typing.Any:
    """A comparable shape of an Avro type: ('null'|...), enum symbols, nested records."""
    if isinstance(t, list):
        return ("union", tuple(sorted(str(_avro_shape(b, named)) for b in t)))
    if isinstance(t, str):
        return _avro_shape(named[t], named) if t in named else t
    if t.get("logicalType"):
        return t["logicalType"]
    kind = t["type"]
    if kind == "enum":
        named[t["name"]] = t
        return ("enum", tuple(t["symbols"]))
    if kind == "record":
        named[t["name"]] = t
        return ("record", tuple((f["name"], _avro_shape(f["type"], named)) for f in t["fields"]))
    if kind == "array":
        return ("array", _avro_shape(t["items"], named))
    if kind == "map":
        return ("map", _avro_shape(t["values"], named))
    return _avro_shape(kind, named)


_PY_SCALARS = {str: "string", int: "int", bool: "boolean", float: "double"}


def _py_shape(ann: typing.Any) -> typing.Any:  # noqa: PLR0911 - one case per kind of annotation, as _avro_shape
    import datetime
    import uuid

    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _py_shape(args[0])
    if origin in (typing.Union, __import__("types").UnionType):
        return ("union", tuple(sorted(str("null" if a is type(None) else _py_shape(a)) for a in args)))
    if origin is typing.Literal:
        return ("enum", tuple(args)) if isinstance(args[0], str) else "int"
    if origin is list:
        return ("array", _py_shape(args[0]))
    if origin is dict:
        return ("map", _py_shape(args[1]))
    if ann is uuid.UUID:
        return "uuid"
    if ann is datetime.datetime:
        return "timestamp-millis"
    if ann is datetime.date:
        return "date"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ("record", tuple((n, _py_shape(f.annotation)) for n, f in ann.model_fields.items()))
    return _PY_SCALARS[ann]


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_model_mirrors_newest_schema_field_by_field(event_type: str) -> None:
    schema = default_schema_set().latest(event_type).raw
    avro = _avro_shape(schema, {})
    model = _py_shape(EVENT_TYPES[event_type])
    assert [n for n, _ in avro[1]] == [n for n, _ in model[1]], "same fields in the same order"
    for (name, a), (_, p) in zip(avro[1], model[1], strict=True):
        if a[0] == "enum" and p[0] == "enum":
            # a model may narrow an enum (category of a referral is administrative), never widen it
            assert set(p[1]) <= set(a[1]), f"{event_type}.{name}: model symbols {p[1]} not in schema {a[1]}"
        else:
            assert a == p, f"{event_type}.{name}: schema {a} vs model {p}"


def test_every_event_type_has_a_schema_and_a_model() -> None:
    assert set(default_schema_set().event_types()) == set(EVENT_TYPES) == set(DEFAULTS)


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.event_type)
def test_codec_round_trip_with_cloudevents_headers(event) -> None:
    codec = Codec()
    enc = codec.encode(event)
    headers = dict(enc.headers)
    assert headers["ce_id"] == str(event.event_id).encode()
    assert headers["ce_type"] == f"fr.parcours.{event.event_type}".encode()
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/avro"
    latest = default_schema_set().latest(event.event_type).version
    assert headers["ce_dataschema"] == f"urn:parcours:schema:{event.event_type}:v{latest}".encode()
    assert enc.key == event.key.encode()
    assert codec.decode(enc.value, enc.headers, topic="t", partition=0, offset=1) == event


def test_decoding_garbage_names_topic_and_offset() -> None:
    codec = Codec()
    enc = codec.encode(ev("MessagePosted"))
    with pytest.raises(DecodeError, match=r"parcours.messages\[2\]@41") as err:
        codec.decode(b"\x01\x02garbage", enc.headers, topic="parcours.messages", partition=2, offset=41)
    assert err.value.offset == 41
    assert err.value.topic == "parcours.messages"


def test_decoding_an_unknown_fingerprint_names_the_header() -> None:
    codec = Codec()
    enc = codec.encode(ev("MessagePosted"))
    headers = [(k, b"0000000000000000" if k == "ce_schemafingerprint" else v) for k, v in enc.headers]
    with pytest.raises(DecodeError, match="unknown writer schema fingerprint") as err:
        codec.decode(enc.value, headers, topic="t", partition=0, offset=7)
    assert err.value.field == "ce_schemafingerprint"


def test_decoding_a_record_that_breaks_a_model_rule_names_the_field() -> None:
    """An Avro-valid body whose gir is out of range (7) is refused with the field named."""
    from io import BytesIO

    from fastavro import schemaless_writer

    codec = Codec()
    good = ev("EvaluationRecorded")
    datum = good.model_dump(mode="python") | {"gir": 7}
    buf = BytesIO()
    schemaless_writer(buf, default_schema_set().latest("EvaluationRecorded").parsed, datum)
    with pytest.raises(DecodeError) as err:
        codec.decode(buf.getvalue(), codec.encode(good).headers, topic="parcours.evaluations", partition=1, offset=3)
    assert err.value.field == "gir"
    assert "parcours.evaluations[1]@3" in str(err.value)


@pytest.mark.parametrize(
    ("event_type", "fields", "field", "rule"),
    [
        ("ReferralSubmitted", {"person": {"pseudonym": "Jean Dupont", "birth_year": 1938, "postcode": "31600"}}, "person.pseudonym", "pattern"),
        ("ReferralSubmitted", {"reasons": []}, "reasons", "at least 1"),
        ("ReferralSubmitted", {"to_structure": "dac-31"}, "to_structure", "cannot refer to itself"),
        ("ReferralStatusChanged", {"status": "redirected"}, "redirect_to", "required when status is redirected"),
        ("EvaluationRecorded", {"gir": None}, "gir", "required for an aggir"),
        ("AdmissionDecided", {"decision": "refused", "reasons": []}, "reasons", "at least one reason"),
        ("ConsentRecorded", {"categories": ["everything"]}, "categories.0", "Input should be"),
        ("MessagePosted", {"occurred_at": "2026-11-02T09:00:00"}, "occurred_at", "timezone"),
    ],
)
def test_model_rules_name_field_and_rule(event_type: str, fields: dict, field: str, rule: str) -> None:
    with pytest.raises(EventValidationError) as err:
        ev(event_type, **fields)
    assert any(f == field and rule in r for f, r in err.value.errors), err.value.errors


def test_occurred_at_is_normalised_to_utc_milliseconds() -> None:
    e = ev("MessagePosted", occurred_at="2026-11-02T10:00:00.123456+01:00")
    assert e.occurred_at.isoformat() == "2026-11-02T09:00:00.123000+00:00"


def test_schemas_check_accepts_the_shipped_set() -> None:
    default_schema_set().check_backward_transitive()


def _set_with(tmp_path: Path, extra: str) -> SchemaSet:
    folder = tmp_path / "schemas"
    shutil.copytree(default_schema_set().latest("MessagePosted").path.parent, folder)
    shutil.copy(FIXTURES / extra, folder / "MessagePosted.v2.avsc")
    return SchemaSet.load(folder)


def test_schemas_check_accepts_a_compatible_second_version(tmp_path: Path) -> None:
    ss = _set_with(tmp_path, "MessagePosted.v2.compatible.avsc")
    ss.check_backward_transitive()
    # and the codec reads a v1 record with the v2 reader, filling the new field's default
    codec = Codec(ss)
    v1 = default_schema_set().latest("MessagePosted")
    event = ev("MessagePosted")
    from io import BytesIO

    from fastavro import schemaless_writer

    buf = BytesIO()
    schemaless_writer(buf, v1.parsed, event.model_dump(mode="python"))
    headers = [("ce_schemafingerprint", v1.fingerprint.encode()), ("ce_type", b"fr.parcours.MessagePosted")]
    raw = ss.latest("MessagePosted")
    assert raw.version == 2
    from fastavro import schemaless_reader

    datum = schemaless_reader(BytesIO(buf.getvalue()), v1.parsed, raw.parsed)
    assert isinstance(datum, dict)
    assert datum["language"] == "fr"
    with pytest.raises(DecodeError, match="language: Extra inputs are not permitted"):  # the v1 model does not know the v2 field
        codec.decode(buf.getvalue(), headers)


def test_schemas_check_refuses_an_incompatible_second_version(tmp_path: Path) -> None:
    ss = _set_with(tmp_path, "MessagePosted.v2.incompatible.avsc")
    with pytest.raises(IncompatibleSchemaError) as err:
        ss.check_backward_transitive()
    text = str(err.value)
    assert "MessagePosted v2 cannot read v1" in text
    assert "priority: new field without a default" in text
    assert "body: writer type string cannot be read as int" in text


def test_schema_resolution_rules() -> None:
    def enum(*s: str) -> dict[str, typing.Any]:
        return {"type": "enum", "name": "E", "symbols": list(s)}

    assert schema_problems("int", "long") == []
    assert schema_problems("long", "int") != []
    assert schema_problems("string", ["null", "string"]) == []
    assert schema_problems(["null", "string"], "string") != []
    assert schema_problems(enum("a"), enum("a", "b")) == []
    assert schema_problems(enum("a", "b"), enum("a")) != []


def test_schema_file_with_a_bad_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "whatever.avsc").write_text(json.dumps({"type": "record", "name": "X", "fields": []}))
    with pytest.raises(SchemaError, match=r"must be <EventType>\.v<N>\.avsc"):
        SchemaSet.load(tmp_path)


def test_build_event_refuses_an_unknown_type() -> None:
    with pytest.raises(EventValidationError, match="unknown event type"):
        build_event("Nope", {})
