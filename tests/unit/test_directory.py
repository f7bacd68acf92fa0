"""The territory's resource directory without Kafka: the offer's contract (model = schema, codec,
rules naming the field), the ranking by fit, and the HTTP refusals."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from parcours.adapters.http.app import create_app
from parcours.bootstrap import build_adapter
from parcours.bus.kafkaio import KafkaAccess
from parcours.contract.directory import SCHEMA_FILE, DirectoryOffer, build_offer, decode_offer, department_of, encode_offer
from parcours.contract.errors import DecodeError, EventValidationError
from parcours.paths import schemas_dir
from parcours.readmodel.db import Reader, Record, Writer
from parcours.security.sealing import Sealer
from parcours.territory.directory import Query, fit, rank
from parcours.topology.catalogue import Catalogue
from tests.unit.test_contract import _avro_shape, _py_shape

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def offer(structure: str = "crt-31-muret", offer_id: str = "renfort", **kw: Any) -> DirectoryOffer:
    base: dict[str, Any] = {"structure": structure, "offer_id": offer_id, "title": "Renfort à domicile",
                            "needs": ["home_support", "hospital_discharge"], "age_min": 60, "gir_min": 1, "gir_max": 4,
                            "departments": ["31"], "postcodes": [], "capacity": 3, "waiting_days": 5,
                            "contact": "05 61 00 00 00", "updated_at": NOW}
    return build_offer({**base, **kw})


def test_the_model_mirrors_the_schema_and_the_codec_round_trips() -> None:
    schema = json.loads((schemas_dir() / SCHEMA_FILE).read_text())
    assert _avro_shape(schema, {}) == _py_shape(DirectoryOffer)
    o = offer(postcodes=["31600", "31190"])
    assert decode_offer(encode_offer(o)) == o
    with pytest.raises(DecodeError):
        decode_offer(b"\x01garbage")


def test_any_bytes_decode_to_an_offer_or_a_decode_error_never_another_error() -> None:
    """A record the read model cannot take must be skipped: an exception of another kind would
    roll its batch back and stall every adapter's tail on it."""
    import io
    import random

    from fastavro import parse_schema, schemaless_writer

    schema = json.loads((schemas_dir() / SCHEMA_FILE).read_text())
    for f in schema["fields"]:
        if f["name"] == "updated_at":
            f["type"] = "long"  # the same bytes as a timestamp, but any long: one past datetime's range
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), {**offer().model_dump(mode="python"), "updated_at": 2**62})
    with pytest.raises(DecodeError):
        decode_offer(buf.getvalue())
    raw = bytearray(encode_offer(offer()))
    rng = random.Random(20261130)
    for _ in range(3000):
        mutated = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        with contextlib.suppress(DecodeError):
            decode_offer(bytes(mutated[: rng.randint(1, len(mutated))]))


def test_the_read_model_keeps_an_offer_under_its_own_key_only(tmp_path: Any) -> None:
    w, r = Writer(tmp_path / "s"), Reader(tmp_path / "s")
    o = encode_offer(offer("crt-31-muret", "main"))
    w.apply([Record("directory", "", "p.directory", 0, 0, "crt-31-nord/main", o),  # claims another structure's key
             Record("directory", "", "p.directory", 0, 1, "crt-31-muret/x", b"\x00junk")], {("p.directory", 0): 2}, frozenset())
    assert r.directory() == []
    w.apply([Record("directory", "", "p.directory", 0, 2, "crt-31-muret/main", o)], {("p.directory", 0): 3}, frozenset())
    assert [DirectoryOffer.model_validate_json(v).key for v in r.directory()] == ["crt-31-muret/main"]
    w.apply([Record("directory", "", "p.directory", 0, 3, "crt-31-muret/main", None)], {("p.directory", 0): 4}, frozenset())
    assert r.directory() == []


def test_corsican_postcodes_fall_in_their_department() -> None:
    assert (department_of("20090"), department_of("20200"), department_of("2A004"), department_of("97400")) == ("2A", "2B", "2A", "974")
    ajaccio = offer("crt-2a", departments=["2A"])
    assert fit(ajaccio, Query(postcode="20090")).where == "department"
    assert fit(ajaccio, Query(postcode="20200")).where == "outside"


@pytest.mark.parametrize(("fields", "field", "rule"), [
    ({"gir_min": 4, "gir_max": 2}, "gir_max", "not below gir_min"),
    ({"age_min": 80, "age_max": 60}, "age_max", "not below age_min"),
    ({"postcodes": ["75001"]}, "postcodes", "75001 outside the departments served"),
    ({"needs": []}, "needs", "List should have at least 1 item after validation, not 0"),
    ({"needs": ["home_support", "home_support"]}, "needs", "each need once"),
    ({"gir_max": 7}, "gir_max", "Input should be less than or equal to 6"),
])
def test_offer_rules_name_the_field(fields: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        offer(**fields)
    assert (field, rule) in caught.value.errors


@pytest.mark.parametrize("contact", ["Mme Jeanne Martin", "appelez Jeanne", "05 61"])
def test_the_contact_is_a_phone_or_a_mailbox_not_a_person(contact: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        offer(contact=contact)
    assert caught.value.errors[0][0] == "contact"
    assert offer(contact="coordination@crt31.example").contact == "coordination@crt31.example"


def test_ranking_puts_what_excludes_the_person_last_and_the_best_fit_first() -> None:
    by_postcode = offer("crt-31-muret", postcodes=["31600"], waiting_days=10)
    whole_department = offer("crt-31-nord", waiting_days=2)
    full = offer("crt-31-sud", capacity=0)
    other_department = offer("crt-32", departments=["32"])
    no_gir_range = offer("dac-31", needs=["coordination", "home_support"], gir_min=None, gir_max=None, age_min=None)
    gir_outside = offer("crt-31-x", gir_min=1, gir_max=2)
    q = Query(postcode="31600", need="home_support", gir=3, age=82)
    ranked = [o.structure for o, _ in rank([other_department, gir_outside, full, no_gir_range, whole_department, by_postcode], q)]
    assert ranked == ["crt-31-muret", "crt-31-nord", "crt-31-sud", "dac-31", "crt-31-x", "crt-32"]
    f = fit(by_postcode, q)
    assert (f.where, f.need, f.gir, f.age, f.excluded) == ("postcode", True, True, True, False)
    assert fit(gir_outside, q).excluded
    assert fit(other_department, q).where == "outside"
    assert fit(offer(postcodes=["31190"]), q).where == "department-other-postcodes"
    assert fit(no_gir_range, q).gir is None  # takes any GIR: not a criterion


def test_ranking_without_a_query_keeps_every_offer_in_a_stable_order() -> None:
    offers = [offer("crt-31-nord", waiting_days=None), offer("crt-31-muret", waiting_days=1), offer("crt-31-muret", "b", waiting_days=1)]
    assert [(o.structure, o.offer_id) for o, _ in rank(offers, Query())] == [
        ("crt-31-muret", "b"), ("crt-31-muret", "renfort"), ("crt-31-nord", "renfort")]
    assert not any(f.excluded for _, f in rank(offers, Query()))


def _client(kind: str) -> httpx.AsyncClient:
    adapter = build_adapter(kind, Catalogue.load(), KafkaAccess("127.0.0.1:9"), Sealer(SecretStr("k" * 40)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(adapter)), base_url="http://edge")


async def test_a_bad_offer_or_query_is_refused_naming_the_field_before_anything_is_published() -> None:
    auth = {"Authorization": "Bearer dev-crt-31-muret"}
    async with _client("crt") as c:
        r = await c.put("/v1/directory/offers/renfort", headers=auth, json={
            "title": "Renfort", "needs": ["home_support"], "departments": ["31"], "postcodes": ["75001"], "contact": "05 61 00 00 00"})
        assert r.status_code == 422
        assert r.json()["fields"] == [{"field": "postcodes", "rule": "75001 outside the departments served"}]
        r = await c.put("/v1/directory/offers/renfort", headers=auth, json={
            "title": "Renfort", "needs": ["home_support"], "departments": ["31"], "contact": "05 61 00 00 00", "structure": "dac-31"})
        assert r.status_code == 422  # the structure is the caller, never a field
        r = await c.get("/v1/directory?gir=9&postcode=31", headers=auth)
        assert r.status_code == 422
        assert {f["field"] for f in r.json()["fields"]} == {"gir", "postcode"}
        r = await c.get("/v1/directory")
        assert r.status_code == 401
