"""The referral's person as a FHIR Patient in the shape of FR Core Patient INS
(`https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins`), both ways.

A contained Patient that carries the identity reliability extension brings an identity: its status
(`identityStatus`: PROV, RECUP, VALI, QUAL), its INS as an identifier slice (INS-NIR, INS-NIA and
their test OIDs, system `urn:oid:<OID>`), the official name (birth family name, the birth given
names in the `birth-list-given-name` extension), the usual name, gender, the full birth date, the
birth place (`patient-birthPlace`, its INSEE code), a phone and an address. Without that
extension the Patient stays pseudonymous, as before. The contract checks the values (the
matricule's key, the OIDs, the status rules); this module maps the elements and says where each
came from. Out, a reader entitled to the identity gets the same shape; the profile is claimed
for a qualified identity only (the INS slices exist for it alone).
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.patient import Patient

from parcours.contract.identity import INS_NIA, INS_NIA_TEST, INS_NIR, INS_NIR_TEST
from parcours.fhir import codes
from parcours.fhir.elements import Issues

FR_CORE = "https://hl7.fr/ig/fhir/core/"
PROFILE_INS = FR_CORE + "StructureDefinition/fr-core-patient-ins"
EXT_RELIABILITY = FR_CORE + "StructureDefinition/fr-core-identity-reliability"
IDENTITY_STATUS = FR_CORE + "CodeSystem/fr-core-cs-identity-status"
IDENTIFIER_TYPE = FR_CORE + "CodeSystem/fr-core-cs-v2-0203"
EXT_BIRTH_GIVEN_NAMES = FR_CORE + "StructureDefinition/fr-core-patient-birth-list-given-name"
EXT_BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
EXT_INSEE = FR_CORE + "StructureDefinition/fr-core-address-insee-code"
INSEE_COMMUNES = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"

STATUS_OF_CODE = {"PROV": "provisional", "RECUP": "recovered", "VALI": "validated", "QUAL": "qualified"}
CODE_OF_STATUS = {v: k for k, v in STATUS_OF_CODE.items()}
#: INS OID -> the identifier's type code and its `use` (the NIA is temporary)
INS_TYPE = {INS_NIR: ("INS-NIR", "official"), INS_NIA: ("INS-NIA", "temp"),
            INS_NIR_TEST: ("INS-NIR-TEST", "official"), INS_NIA_TEST: ("INS-NIA-TEST", "temp")}

#: what a Patient may carry when it brings an identity (FR Core Patient INS), besides its id
IDENTITY_ELEMENTS = frozenset({"identifier", "name", "gender", "birthDate", "address", "telecom", "extension", "meta"})
#: contract field -> the element it comes from (to name it when the contract refuses it)
PATHS = {
    "person.identity.status": f"Patient.extension({EXT_RELIABILITY}).extension(identityStatus)",
    "person.identity.ins": "Patient.identifier(urn:oid)", "person.identity.ins.matricule": "Patient.identifier(urn:oid).value",
    "person.identity.ins.oid": "Patient.identifier(urn:oid).system",
    "person.identity.birth_family_name": "Patient.name(official).family",
    "person.identity.birth_given_names": f"Patient.name(official).extension({EXT_BIRTH_GIVEN_NAMES})",
    "person.identity.birth_date": "Patient.birthDate", "person.identity.sex": "Patient.gender",
    "person.identity.birth_place": f"Patient.extension({EXT_BIRTH_PLACE})", "person.identity.used_name": "Patient.name(usual).family",
    "person.identity.used_given_name": "Patient.name(usual).given", "person.identity.contact.phone": "Patient.telecom(phone)",
    "person.identity.contact.address": "Patient.address", "person.birth_year": "Patient.birthDate",
}


def _ext(element: Any, url: str) -> Any:
    return next((e for e in getattr(element, "extension", None) or [] if e.url == url), None)


def brings_identity(patient: Patient) -> bool:
    return _ext(patient, EXT_RELIABILITY) is not None


def identity_in(patient: Patient, issues: Issues) -> dict[str, Any]:
    """The identity a FR Core Patient INS brings (values checked by the contract afterwards)."""
    reliability = _ext(patient, EXT_RELIABILITY)
    status_ext = _ext(reliability, "identityStatus")
    code = status_ext.valueCoding.code if status_ext is not None and status_ext.valueCoding else None
    if code not in STATUS_OF_CODE:
        issues.add(PATHS["person.identity.status"], f"the identity status, a code of {IDENTITY_STATUS}: PROV, RECUP, VALI or QUAL", "required")
    identity: dict[str, Any] = {"status": STATUS_OF_CODE.get(code or ""), "birth_date": str(patient.birthDate or "") or None,
                                "sex": patient.gender}
    ins = [i for i in patient.identifier or [] if (i.system or "").startswith("urn:oid:")]
    if len(ins) > 1:
        issues.add("Patient.identifier", "one INS at most (an INS-NIR or INS-NIA slice, system urn:oid:<OID>)")
    if ins:
        identity["ins"] = {"matricule": ins[0].value, "oid": (ins[0].system or "").removeprefix("urn:oid:")}
    names = {n.use: n for n in patient.name or []}
    if set(names) - {"official", "usual"} or len(names) != len(patient.name or []):
        issues.add("Patient.name", "the official name (birth name) and at most one usual name")
    official = names.get("official")
    if official is None:
        issues.add("Patient.name", "the official name: birth family name and birth given names", "required")
    else:
        given = _ext(official, EXT_BIRTH_GIVEN_NAMES)
        identity["birth_family_name"] = official.family
        identity["birth_given_names"] = given.valueString if given is not None else " ".join(g for g in official.given or [] if g) or None
    usual = names.get("usual")
    if usual is not None:
        identity["used_name"] = usual.family
        identity["used_given_name"] = (usual.given or [None])[0]
    place = _ext(patient, EXT_BIRTH_PLACE)
    insee = _ext(place.valueAddress, EXT_INSEE) if place is not None and place.valueAddress is not None else None
    if place is not None:
        if insee is None or insee.valueCoding is None or not insee.valueCoding.code:
            issues.add(PATHS["person.identity.birth_place"], f"the birth place's INSEE code (extension {EXT_INSEE})", "required")
        else:
            identity["birth_place"] = insee.valueCoding.code
    contact = _contact_in(patient, issues)
    if contact:
        identity["contact"] = contact
    return {k: v for k, v in identity.items() if v is not None}


def _contact_in(patient: Patient, issues: Issues) -> dict[str, Any]:
    phones = [t.value for t in patient.telecom or [] if t.system == "phone" and t.value]
    if len(phones) != len(patient.telecom or []) or len(phones) > 1:
        issues.add("Patient.telecom", "one phone number at most (no e-mail: Parcours carries a phone and an address)")
    contact: dict[str, Any] = {"phone": phones[0]} if phones else {}
    address = patient.address[0] if patient.address else None
    if address is not None and (address.line or address.city):
        contact["address"] = {"lines": list(address.line or []), "postcode": address.postalCode, "city": address.city}
    return contact


def patient_out(person: dict[str, Any]) -> dict[str, Any]:
    """The contained Patient of a referral for its reader: pseudonymous, plus the identity in the
    FR Core Patient INS shape when the reader is shown one (an erased identity adds nothing)."""
    pseudo = {"system": codes.PSEUDONYM, "value": person["pseudonym"]}
    identity = person.get("identity")
    if not isinstance(identity, dict):
        return {"resourceType": "Patient", "id": "person", "identifier": [pseudo], "birthDate": str(person["birth_year"]),
                "address": [{"postalCode": person["postcode"]}]}
    out: dict[str, Any] = {"resourceType": "Patient", "id": "person"}
    if identity.get("ins"):
        out["meta"] = {"profile": [PROFILE_INS]}
    out["extension"] = [{"url": EXT_RELIABILITY, "extension": [{"url": "identityStatus", "valueCoding": {
        "system": IDENTITY_STATUS, "code": CODE_OF_STATUS[identity["status"]]}}]}]
    if identity.get("birth_place"):
        out["extension"].append({"url": EXT_BIRTH_PLACE, "valueAddress": {"extension": [{"url": EXT_INSEE, "valueCoding": {
            "system": INSEE_COMMUNES, "code": identity["birth_place"]}}]}})
    out["identifier"] = [pseudo]
    if identity.get("ins"):
        type_code, use = INS_TYPE[identity["ins"]["oid"]]
        out["identifier"].append({"use": use, "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": type_code}]},
                                  "system": f"urn:oid:{identity['ins']['oid']}", "value": identity["ins"]["matricule"]})
    given = identity["birth_given_names"]
    out["name"] = [{"use": "official", "family": identity["birth_family_name"], "given": [given.split(" ")[0]],
                    "extension": [{"url": EXT_BIRTH_GIVEN_NAMES, "valueString": given}]}]
    if identity.get("used_name") or identity.get("used_given_name"):
        out["name"].append({"use": "usual", **({"family": identity["used_name"]} if identity.get("used_name") else {}),
                            **({"given": [identity["used_given_name"]]} if identity.get("used_given_name") else {})})
    contact = identity.get("contact") or {}
    if contact.get("phone"):
        out["telecom"] = [{"system": "phone", "value": contact["phone"]}]
    out["gender"] = identity["sex"]
    out["birthDate"] = identity["birth_date"]
    address = contact.get("address")
    out["address"] = [{"line": address["lines"], "city": address["city"], "postalCode": address["postcode"]}] if address else [
        {"postalCode": person["postcode"]}]
    return out
