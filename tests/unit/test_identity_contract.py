"""The identity of the référentiel INS on `person`: what the contract accepts and refuses, each
refusal naming its field and rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from parcours.contract.errors import EventValidationError
from parcours.contract.identity import INS_NIR, matricule_key
from parcours.contract.models import ReferralSubmitted
from parcours.devtools.persons import synthetic_identity
from tests.factories import ev


def _person(base: dict[str, Any] | None = None, **identity: Any) -> dict[str, Any]:
    ident = (base or synthetic_identity(3)) | identity
    return {"pseudonym": "P-7f3a9c", "birth_year": int(ident["birth_date"][:4]), "postcode": "31600", "identity": ident}


def _errors(person: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(EventValidationError) as err:
        ev("ReferralSubmitted", person=person)
    return err.value.errors


def test_nir_key_is_97_minus_the_number_modulo_97() -> None:
    assert matricule_key("1480331555123") == 97 - 1480331555123 % 97
    # Corsica: 2A counts as 19, 2B as 18
    assert matricule_key("245072A004012") == 97 - 2450719004012 % 97
    assert matricule_key("245072B004012") == 97 - 2450718004012 % 97


def test_a_qualified_identity_with_a_test_ins_is_accepted() -> None:
    e = ev("ReferralSubmitted", person=_person())
    assert isinstance(e, ReferralSubmitted)
    assert e.person.identity is not None
    assert e.person.identity.ins is not None
    assert e.person.identity.ins.oid == "1.2.250.1.213.1.4.10"


def test_a_corsican_matricule_is_accepted() -> None:
    number = "245072A004012"
    ev("ReferralSubmitted", person=_person(ins={"matricule": f"{number}{matricule_key(number):02d}", "oid": INS_NIR}))


def test_a_provisional_identity_without_ins_is_accepted() -> None:
    ident = synthetic_identity(4, status="provisional")
    assert "ins" not in ident
    ev("ReferralSubmitted", person=_person(ident))


@pytest.mark.parametrize(
    ("identity", "field", "rule"),
    [
        ({"status": "validated"}, "person.identity.ins", "carried only by a qualified identity"),
        ({"ins": None}, "person.identity.ins", "a qualified identity carries its INS"),
        ({"ins": {"matricule": "148033155512399", "oid": INS_NIR}}, "person.identity.ins.matricule", "does not match"),
        ({"ins": {"matricule": "14803315551", "oid": INS_NIR}}, "person.identity.ins.matricule", "pattern"),
        ({"ins": {"matricule": "1480331555123" + f"{matricule_key('1480331555123'):02d}", "oid": "1.2.3"}},
         "person.identity.ins.oid", "unknown INS OID"),
        ({"birth_date": (datetime.now(UTC).date() + timedelta(days=2)).isoformat()}, "person.identity.birth_date", "future"),
        ({"birth_place": None}, "person.identity.birth_place", "birth place"),
        ({"birth_place": "3155"}, "person.identity.birth_place", "pattern"),
        ({"sex": "F"}, "person.identity.sex", "Input should be"),
        ({"contact": {"phone": "call me"}}, "person.identity.contact.phone", "pattern"),
        ({"birth_family_name": "R2D2"}, "person.identity.birth_family_name", "pattern"),
    ],
)
def test_a_bad_identity_is_refused_naming_the_field_and_the_rule(identity: dict[str, Any], field: str, rule: str) -> None:
    person = _person(**identity)
    if "birth_date" in identity:
        person["birth_year"] = int(identity["birth_date"][:4])
    errors = _errors(person)
    assert any(f == field and rule in r for f, r in errors), errors


def test_the_birth_year_must_agree_with_the_birth_date() -> None:
    person = _person()
    person["birth_year"] += 1
    assert any(f == "person.birth_year" and "differs" in r for f, r in _errors(person))


def test_an_identity_is_either_in_clear_or_sealed() -> None:
    person = _person() | {"identity_sealed": "v1." + "0" * 32 + "." + "A" * 60}
    assert any(f == "person.identity" and "not both" in r for f, r in _errors(person))
    bare = {"pseudonym": "P-7f3a9c", "birth_year": 1938, "postcode": "31600", "person_key": "a" * 64}
    assert any(f == "person.person_key" and "only with a sealed identity" in r for f, r in _errors(bare))
