"""The referral's person as FR Core Patient INS on the FHIR bridge: a ServiceRequest's contained
Patient brings an identity (INS slice, identity reliability, official and usual names, birth
place, phone, address), and `$everything` gives it back in the same shape."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fhir.resources.R4B.patient import Patient

from parcours.contract.errors import EventValidationError
from parcours.contract.models import build_event
from parcours.devtools.persons import synthetic_identity
from parcours.fhir import codes, inbound
from parcours.fhir import patient as fr
from parcours.fhir.errors import FhirError
from tests.factories import T0

IDENTITY = synthetic_identity(21) | {"used_name": "DUPRAT", "used_given_name": "Odette"}
PERSON = {"pseudonym": "P-3c9e41", "birth_year": int(IDENTITY["birth_date"][:4]), "postcode": "31000", "identity": IDENTITY}


def _sr(patient: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
            "contained": [patient | {"id": "p"}], "subject": {"reference": "#p"},
            "performer": [{"identifier": {"system": codes.STRUCTURE, "value": "dac-31"}}],
            "reasonCode": [{"text": "isolement"}], "note": [{"text": "Situation synthétique."}]}


def test_fr_core_patient_ins_out_has_the_profiles_shape() -> None:
    out = fr.patient_out(PERSON)
    Patient.model_validate(out)  # a valid R4 Patient
    assert out["meta"]["profile"] == [fr.PROFILE_INS]
    (ins,) = [i for i in out["identifier"] if i["system"].startswith("urn:oid:")]
    assert ins == {"use": "official", "type": {"coding": [{"system": fr.IDENTIFIER_TYPE, "code": "INS-NIR-TEST"}]},
                   "system": "urn:oid:1.2.250.1.213.1.4.10", "value": IDENTITY["ins"]["matricule"]}
    (reliability,) = [e for e in out["extension"] if e["url"] == fr.EXT_RELIABILITY]
    assert reliability["extension"] == [{"url": "identityStatus", "valueCoding": {"system": fr.IDENTITY_STATUS, "code": "QUAL"}}]
    (official, usual) = out["name"]
    assert official["use"] == "official"
    assert official["family"] == IDENTITY["birth_family_name"]
    assert official["extension"] == [{"url": fr.EXT_BIRTH_GIVEN_NAMES, "valueString": IDENTITY["birth_given_names"]}]
    assert usual == {"use": "usual", "family": "DUPRAT", "given": ["Odette"]}
    (place,) = [e for e in out["extension"] if e["url"] == fr.EXT_BIRTH_PLACE]
    assert place["valueAddress"]["extension"][0]["valueCoding"]["code"] == "31555"
    assert out["birthDate"] == IDENTITY["birth_date"]
    assert out["telecom"] == [{"system": "phone", "value": IDENTITY["contact"]["phone"]}]


def test_fr_core_patient_ins_in_is_the_contracts_identity_and_round_trips() -> None:
    parsed = inbound.parse("ServiceRequest", _sr(fr.patient_out(PERSON)))
    person = parsed.fields["person"]
    assert person["identity"] == IDENTITY
    assert (person["pseudonym"], person["birth_year"], person["postcode"]) == ("P-3c9e41", PERSON["birth_year"], "31000")
    event = build_event("ReferralSubmitted", {"event_id": "6f1c9a2e-0b7d-4e5a-9c61-2d8f4b7a1e90", "case_id": "case-1",
                                              "occurred_at": T0, "source": "cpts-31-nord", "referral_id": "ref-1", **parsed.fields})
    assert event.person.identity is not None  # type: ignore[attr-defined]


def test_a_provisional_identity_and_an_erased_one() -> None:
    provisional = synthetic_identity(22, status="provisional")
    out = fr.patient_out(PERSON | {"identity": provisional})
    assert "meta" not in out  # the INS profile is claimed for a qualified identity only
    assert [i["system"] for i in out["identifier"]] == [codes.PSEUDONYM]
    assert inbound.parse("ServiceRequest", _sr(out)).fields["person"]["identity"] == provisional
    erased = fr.patient_out(PERSON | {"identity": "erased"})
    assert erased == {"resourceType": "Patient", "id": "person", "identifier": [{"system": codes.PSEUDONYM, "value": "P-3c9e41"}],
                      "birthDate": str(PERSON["birth_year"]), "address": [{"postalCode": "31000"}]}


def test_a_bad_ins_is_refused_naming_the_fhir_element() -> None:
    patient = fr.patient_out(PERSON)
    ins = next(i for i in patient["identifier"] if i["system"].startswith("urn:oid:"))
    ins["value"] = ins["value"][:13] + f"{(int(ins['value'][13:]) + 1) % 100:02d}"
    parsed = inbound.parse("ServiceRequest", _sr(patient))
    with pytest.raises(EventValidationError) as err:
        build_event("ReferralSubmitted", {"event_id": "6f1c9a2e-0b7d-4e5a-9c61-2d8f4b7a1e90", "case_id": "case-1", "occurred_at": T0,
                                          "source": "cpts-31-nord", "referral_id": "ref-1", **parsed.fields})
    (field, rule), *_ = err.value.errors
    assert field == "person.identity.ins.matricule"
    assert "does not match" in rule
    assert parsed.expression(field) == "Patient.identifier(urn:oid).value"


@pytest.mark.parametrize(("change", "expression", "code"), [
    (lambda p: p["telecom"].append({"system": "email", "value": "x@example.org"}), "Patient.telecom", "invalid"),
    (lambda p: p.update(maritalStatus={"text": "veuve"}), "Patient.maritalStatus", "security"),
    (lambda p: p.update(birthDate=p["birthDate"][:4]), "Patient.birthDate", "invalid"),
    (lambda p: p["extension"][0]["extension"][0]["valueCoding"].update(code="SURE"),
     f"Patient.extension({fr.EXT_RELIABILITY}).extension(identityStatus)", "required"),
])
def test_a_patient_ins_element_out_of_place_is_refused(change: Any, expression: str, code: str) -> None:
    patient = copy.deepcopy(fr.patient_out(PERSON))
    change(patient)
    with pytest.raises(FhirError) as caught:
        inbound.parse("ServiceRequest", _sr(patient))
    assert (code, expression) in [(i.code, i.expression) for i in caught.value.issues]
