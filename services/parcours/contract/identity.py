"""Who the person is: an identity of the référentiel INS (French national health identity).

An identity has a status (provisional, recovered, validated, qualified); the INS (the NIR or NIA
matricule and its OID) may be carried only by a qualified identity, and always with the strict
traits (birth family name, birth given names, birth date, sex, birth place). The used name and
first name and the contact (phone, postal address) complete it.

This model checks what a partner sends; the identity never reaches a canonical topic in clear:
the edge seals it (`security.identity`) into `Person.identity_sealed` before it publishes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import date as Date
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from parcours.contract.base import ContractModel

IdentityStatus = Literal["provisional", "recovered", "validated", "qualified"]
Sex = Literal["female", "male", "other", "unknown"]

#: the INS OIDs: the NIR, the NIA, and the test OIDs of synthetic persons
INS_NIR = "1.2.250.1.213.1.4.8"
INS_NIA = "1.2.250.1.213.1.4.9"
INS_NIR_TEST = "1.2.250.1.213.1.4.10"
INS_NIA_TEST = "1.2.250.1.213.1.4.11"
INS_OIDS = (INS_NIR, INS_NIA, INS_NIR_TEST, INS_NIA_TEST)
TEST_OIDS = (INS_NIR_TEST, INS_NIA_TEST)

#: 13 characters (sex, year, month, department -- 2A/2B in Corsica --, commune, order) and a 2-digit key
MATRICULE_PATTERN = r"^[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{6}[0-9]{2}$"
#: an INSEE code of a commune (2A/2B in Corsica), or 99xxx for a country of birth abroad
INSEE_PATTERN = r"^(?:[0-9]{5}|2[AB][0-9]{3})$"

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^0-9@]+$")]


def matricule_key(number: str) -> int:
    """The key of a 13-character NIR/NIA: 97 minus the number modulo 97, Corsica's 2A and 2B
    counted as 19 and 18."""
    digits = number.replace("2A", "19", 1) if number[5:7] == "2A" else number.replace("2B", "18", 1) if number[5:7] == "2B" else number
    return 97 - int(digits) % 97


class Ins(ContractModel):
    """The INS: a matricule (NIR or NIA) and the OID of its kind."""

    matricule: Annotated[str, Field(pattern=MATRICULE_PATTERN)]
    oid: str

    @field_validator("matricule")
    @classmethod
    def _key(cls, value: str) -> str:
        if int(value[13:]) != matricule_key(value[:13]):
            raise ValueError(f"the key {value[13:]} does not match the number (97 - number mod 97 = {matricule_key(value[:13]):02d})")
        return value

    @field_validator("oid")
    @classmethod
    def _known_oid(cls, value: str) -> str:
        if value not in INS_OIDS:
            raise ValueError(f"unknown INS OID {value!r}: one of {', '.join(INS_OIDS)}")
        return value


class PostalAddress(ContractModel):
    lines: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1, max_length=4)]
    postcode: Annotated[str, Field(pattern=r"^([0-9]{5}|2[AB][0-9]{3})$")]
    city: Annotated[str, Field(min_length=1, max_length=100)]


class Contact(ContractModel):
    phone: Annotated[str, Field(pattern=r"^\+?[0-9][0-9 .-]{5,19}$")] | None = None
    address: PostalAddress | None = None


class Identity(ContractModel):
    """An identity of the référentiel INS; the INS only for a qualified one."""

    status: IdentityStatus
    ins: Ins | None = None
    birth_family_name: Name
    birth_given_names: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^0-9@]+$")]
    birth_date: Date
    sex: Sex
    birth_place: Annotated[str, Field(pattern=INSEE_PATTERN)] | None = None
    used_name: Name | None = None
    used_given_name: Name | None = None
    contact: Contact | None = None

    @field_validator("birth_date")
    @classmethod
    def _born(cls, value: Date) -> Date:
        if value > datetime.now(UTC).date():
            raise ValueError("a birth date cannot be in the future")
        if value.year < 1900:  # noqa: PLR2004 - the contract's earliest birth year
            raise ValueError("a birth date before 1900 is not accepted")
        return value

    @model_validator(mode="after")
    def _ins_only_when_qualified(self) -> Identity:
        if self.ins is not None and self.status != "qualified":
            raise ValueError(f"ins: carried only by a qualified identity (status is {self.status})")
        if self.status == "qualified" and self.ins is None:
            raise ValueError("ins: a qualified identity carries its INS (matricule and OID)")
        if self.status == "qualified" and self.birth_place is None:
            raise ValueError("birth_place: a qualified identity carries its birth place (INSEE code)")
        return self
