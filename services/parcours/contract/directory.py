"""The resource directory's contract: an offer a structure publishes (`schemas/directory/`), its
model (which mirrors the schema, a unit test checks) and its codec. Offers carry no person data:
who is served is said by ranges (age, GIR) and places (departments, postcodes)."""

from __future__ import annotations

import copy
import io
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, get_args

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import Field, ValidationError, field_validator, model_validator

from parcours.contract.base import ContractModel, utc_ms
from parcours.contract.errors import DecodeError, EventValidationError
from parcours.contract.models import Identifier, Slug, validation_errors
from parcours.paths import schemas_dir

Need = Literal["coordination", "home_support", "hospital_discharge", "gp_search", "evaluation", "respite",
               "therapeutic_education", "other"]
NEEDS: tuple[str, ...] = get_args(Need)
Department = Annotated[str, Field(pattern=r"^([0-9]{2,3}|2[AB])$")]
Postcode = Annotated[str, Field(pattern=r"^([0-9]{5}|2[AB][0-9]{3})$")]
Gir = Annotated[int, Field(ge=1, le=6)]
Age = Annotated[int, Field(ge=0, le=130)]
Count = Annotated[int, Field(ge=0, le=100_000)]
SCHEMA_FILE = "directory/DirectoryOffer.v1.avsc"


def department_of(postcode: str) -> str:
    """The department of a postcode: 2 digits, 3 overseas (97x); Corsica's postcodes (20xxx) are
    2A below 20200 and 2B from it (a code written 2Axxx/2Bxxx keeps its letter)."""
    if postcode.startswith("97"):
        return postcode[:3]
    if postcode.startswith("20") and postcode.isdigit():
        return "2A" if int(postcode) < 20200 else "2B"  # noqa: PLR2004 - the postcode boundary itself
    return postcode[:2]


class DirectoryOffer(ContractModel):
    structure: Slug
    offer_id: Identifier
    title: Annotated[str, Field(min_length=1, max_length=200)]
    needs: Annotated[list[Need], Field(min_length=1, max_length=len(NEEDS))]
    age_min: Age | None = None
    age_max: Age | None = None
    gir_min: Gir | None = None
    gir_max: Gir | None = None
    departments: Annotated[list[Department], Field(min_length=1, max_length=20)]
    postcodes: Annotated[list[Postcode], Field(default_factory=list, max_length=500)]
    capacity: Count | None = None
    waiting_days: Count | None = None
    #: the service's phone number or functional mailbox: a phone number or an address, never free
    #: text (the format cannot tell a person's mailbox from a service's: the publishing structure's duty)
    contact: Annotated[str, Field(pattern=r"^(\+?[0-9][0-9 .]{5,19}|[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,180}\.[A-Za-z]{2,20})$")]
    updated_at: datetime

    _utc = field_validator("updated_at")(classmethod(lambda cls, v: utc_ms(v)))

    @model_validator(mode="after")
    def _ranges(self) -> DirectoryOffer:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_max: not below age_min")
        if self.gir_min is not None and self.gir_max is not None and self.gir_min > self.gir_max:
            raise ValueError("gir_max: not below gir_min")
        outside = sorted(p for p in self.postcodes if department_of(p) not in self.departments)
        if outside:
            raise ValueError(f"postcodes: {', '.join(outside)} outside the departments served")
        if len(set(self.needs)) != len(self.needs):
            raise ValueError("needs: each need once")
        return self

    @property
    def key(self) -> str:
        return f"{self.structure}/{self.offer_id}"


def build_offer(data: dict[str, Any]) -> DirectoryOffer:
    try:
        return DirectoryOffer.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError("DirectoryOffer", validation_errors(exc)) from None


@cache
def offer_schema_raw() -> dict[str, Any]:
    """The schema as written (what the AsyncAPI document carries); read once."""
    import json

    raw: dict[str, Any] = json.loads((schemas_dir() / SCHEMA_FILE).read_text())
    return raw


@cache
def offer_schema() -> Any:
    return parse_schema(copy.deepcopy(offer_schema_raw()))


def encode_offer(offer: DirectoryOffer) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, offer_schema(), offer.model_dump(mode="python"))
    return buf.getvalue()


def decode_offer(raw: bytes) -> DirectoryOffer:
    try:
        return DirectoryOffer.model_validate(schemaless_reader(io.BytesIO(raw), offer_schema(), offer_schema()))
    except Exception as exc:  # noqa: BLE001 - whatever bytes: a record that is not an offer (fastavro raises many kinds)
        raise DecodeError(f"not a DirectoryOffer ({type(exc).__name__})") from None
