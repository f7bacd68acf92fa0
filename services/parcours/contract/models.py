"""Pydantic models of the events: the validated, typed mirror of `schemas/*.avsc`.

A unit test proves that every model agrees with the newest schema of its type, field by field.
Enumerations are `Literal`s so that dumped values are the plain strings Avro expects.
"""

from __future__ import annotations

import re
from datetime import date as Date
from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal, get_args
from uuid import UUID

from pydantic import Field, ValidationError, field_validator, model_validator

from parcours.contract.base import ContractModel, utc_ms
from parcours.contract.errors import EventValidationError
from parcours.contract.identity import Identity

Category = Literal["administrative", "social", "medical", "functional", "discussion"]
CATEGORIES: tuple[str, ...] = get_args(Category)
Kind = Literal["dac", "cpts", "crt"]
KINDS: tuple[str, ...] = get_args(Kind)

SLUG_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$"
Slug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=64)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Text = Annotated[str, Field(min_length=1, max_length=20_000)]


#: a sealed identity: `v1.<data key id>.<nonce and AES-256-GCM ciphertext, base64url>` (security/identity.py)
SEALED_PATTERN = r"^v1\.[0-9a-f]{32}\.[A-Za-z0-9_-]{40,8000}$"


class Person(ContractModel):
    """A pseudonym (no spaces, so no plain names), the birth year and the postcode, in clear; the
    identity (`contract.identity`) in clear only between a partner and the edge (a request body,
    a partner's ingress topic), sealed on every other topic: `identity_sealed`, with the person
    key (`person_key`: a keyed digest of a qualified INS, the same for every structure)."""

    pseudonym: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{4,64}$")]
    birth_year: Annotated[int, Field(ge=1900, le=2100)]
    postcode: Annotated[str, Field(pattern=r"^([0-9]{5}|2[AB][0-9]{3})$")]
    identity: Identity | None = None
    identity_sealed: Annotated[str, Field(pattern=SEALED_PATTERN)] | None = None
    person_key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @property
    def data_key_id(self) -> str | None:
        """The id of the data key the identity is sealed under (the blob's second part)."""
        return self.identity_sealed.split(".", 2)[1] if self.identity_sealed else None

    @model_validator(mode="after")
    def _one_identity(self) -> Person:
        if self.identity is not None and self.identity_sealed is not None:
            raise ValueError("identity: either in clear (to the edge) or sealed, not both")
        if self.person_key is not None and self.identity_sealed is None:
            raise ValueError("person_key: only with a sealed identity")
        if self.identity is not None and self.identity.birth_date.year != self.birth_year:
            raise ValueError(f"birth_year: {self.birth_year} differs from identity.birth_date ({self.identity.birth_date})")
        return self


class ReferralContext(ContractModel):
    type: Literal["home", "hospital_discharge", "emergency_visit", "other"]
    date: Date | None = None


class Event(ContractModel):
    """Fields every event carries. Subclasses set `event_type` and `item_field`."""

    event_type: ClassVar[str]
    #: the field naming the item this event creates or changes (what views show)
    item_field: ClassVar[str]

    event_id: UUID
    case_id: Identifier
    occurred_at: datetime
    source: Slug
    category: Category

    _utc = field_validator("occurred_at")(classmethod(lambda cls, v: utc_ms(v)))

    @property
    def item_id(self) -> str:
        return str(getattr(self, self.item_field))

    @property
    def key(self) -> str:
        """The Kafka key: the case id (ruptures without a case use their territory)."""
        return self.case_id


class ReferralSubmitted(Event):
    event_type: ClassVar[str] = "ReferralSubmitted"
    item_field: ClassVar[str] = "referral_id"
    category: Literal["administrative"] = "administrative"

    referral_id: Identifier
    to_structure: Slug
    person: Person
    reasons: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1, max_length=20)]
    urgency: Literal["routine", "soon", "urgent"]
    context: ReferralContext | None = None
    summary: Text

    @model_validator(mode="after")
    def _not_to_self(self) -> ReferralSubmitted:
        if self.to_structure == self.source:
            raise ValueError("to_structure: a structure cannot refer to itself")
        return self


class ReferralStatusChanged(Event):
    event_type: ClassVar[str] = "ReferralStatusChanged"
    item_field: ClassVar[str] = "referral_id"
    category: Literal["administrative"] = "administrative"

    referral_id: Identifier
    status: Literal["acknowledged", "accepted", "declined", "redirected", "withdrawn", "completed"]
    reason: Annotated[str, Field(max_length=2000)] | None = None
    redirect_to: Slug | None = None

    @model_validator(mode="after")
    def _redirect(self) -> ReferralStatusChanged:
        if (self.status == "redirected") != (self.redirect_to is not None):
            raise ValueError("redirect_to: required when status is redirected, and only then")
        return self


class EvaluationRecorded(Event):
    event_type: ClassVar[str] = "EvaluationRecorded"
    item_field: ClassVar[str] = "evaluation_id"
    category: Category = "functional"

    evaluation_id: Identifier
    type: Literal["aggir", "icope_step1", "multidimensional"]
    results: dict[Annotated[str, Field(min_length=1, max_length=100)], Annotated[str, Field(max_length=2000)]]
    gir: Annotated[int, Field(ge=1, le=6)] | None = None

    @model_validator(mode="after")
    def _gir(self) -> EvaluationRecorded:
        if (self.type == "aggir") != (self.gir is not None):
            raise ValueError("gir: required for an aggir evaluation, and only then")
        return self


class AdmissionDecided(Event):
    event_type: ClassVar[str] = "AdmissionDecided"
    item_field: ClassVar[str] = "referral_id"
    category: Literal["administrative"] = "administrative"

    referral_id: Identifier
    decision: Literal["admitted", "refused", "waitlisted"]
    volet: Literal[1, 2]
    start_date: Date | None = None
    reasons: list[Annotated[str, Field(min_length=1, max_length=500)]] = []  # noqa: RUF012 - a pydantic field (copied per instance)
    #: a refusal's alternative: the structure proposed instead (the observatory counts refusals without one)
    alternative: Slug | None = None

    @model_validator(mode="after")
    def _refusal_reasons(self) -> AdmissionDecided:
        if self.decision == "refused" and not self.reasons:
            raise ValueError("reasons: a refusal must give at least one reason")
        if self.alternative is not None and self.decision != "refused":
            raise ValueError("alternative: only a refusal proposes an alternative")
        if self.alternative == self.source:
            raise ValueError("alternative: a structure cannot propose itself instead of itself")
        return self


#: an admission commission may invite this many structures at most
MAX_INVITED = 10
#: and wait this long at most for their opinions (a commission decides on a hospital discharge)
MAX_OPINION_WINDOW = timedelta(days=60)


class CommissionOpened(Event):
    """A CRT's admission commission on a referral it received: the structures asked for an
    opinion (they become parties of the referral) and the deadline for their opinions."""

    event_type: ClassVar[str] = "CommissionOpened"
    item_field: ClassVar[str] = "commission_id"
    category: Literal["administrative"] = "administrative"

    commission_id: Identifier
    referral_id: Identifier
    invited: Annotated[list[Slug], Field(min_length=1, max_length=MAX_INVITED)]
    opinion_deadline: datetime
    question: Annotated[str, Field(min_length=1, max_length=2000)] | None = None

    _utc_deadline = field_validator("opinion_deadline")(classmethod(lambda cls, v: utc_ms(v)))

    @model_validator(mode="after")
    def _invitations(self) -> CommissionOpened:
        if len(set(self.invited)) != len(self.invited):
            raise ValueError("invited: each structure once")
        if self.source in self.invited:
            raise ValueError("invited: the commission's own structure gives no opinion to itself")
        if self.opinion_deadline <= self.occurred_at:
            raise ValueError("opinion_deadline: must be after the commission opens")
        if self.opinion_deadline > self.occurred_at + MAX_OPINION_WINDOW:
            raise ValueError(f"opinion_deadline: at most {MAX_OPINION_WINDOW.days} days after the commission opens")
        return self


class OpinionGiven(Event):
    """An invited structure's opinion to a commission; its later opinion replaces the earlier one."""

    event_type: ClassVar[str] = "OpinionGiven"
    item_field: ClassVar[str] = "commission_id"
    category: Literal["administrative"] = "administrative"

    commission_id: Identifier
    referral_id: Identifier
    opinion: Literal["favourable", "unfavourable", "reserved"]
    comment: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class ConsentRecorded(Event):
    event_type: ClassVar[str] = "ConsentRecorded"
    item_field: ClassVar[str] = "consent_id"
    category: Literal["administrative"] = "administrative"

    consent_id: Identifier
    grantee: Annotated[str, Field(pattern=r"^(dac|cpts|crt)$|" + SLUG_PATTERN[1:-1] + "$")]
    categories: Annotated[list[Category], Field(min_length=1)]
    decision: Literal["permit", "deny"]
    valid_until: datetime | None = None
    method: Literal["oral", "written", "digital"]
    #: a document reference proving the consent (a permit its recorder grants itself must name one)
    proof: Annotated[str, Field(min_length=1, max_length=500)] | None = None

    _utc_until = field_validator("valid_until")(
        classmethod(lambda cls, v: None if v is None else utc_ms(v))
    )

    def self_grant_problems(self, recorder_kind: str | None = None) -> list[tuple[str, str]]:
        """Why this consent may not stand as a permit its recorder grants itself (its slug, or its
        kind when known): such a permit is written or digital and names its proof."""
        if self.decision != "permit" or self.grantee not in (self.source, recorder_kind):
            return []
        problems = []
        if self.method not in ("written", "digital"):
            problems.append(("method", "a permit its recorder grants itself is written or digital"))
        if not self.proof:
            problems.append(("proof", "a permit its recorder grants itself names its proof (a document reference)"))
        return problems

    @model_validator(mode="after")
    def _self_grant(self) -> ConsentRecorded:
        for field, rule in self.self_grant_problems():
            raise ValueError(f"{field}: {rule}")
        return self


class MessagePosted(Event):
    event_type: ClassVar[str] = "MessagePosted"
    item_field: ClassVar[str] = "message_id"
    category: Category = "discussion"

    message_id: Identifier
    body: Text
    reply_to: Identifier | None = None


class RuptureReported(Event):
    event_type: ClassVar[str] = "RuptureReported"
    item_field: ClassVar[str] = "rupture_id"
    category: Literal["administrative"] = "administrative"

    case_id: Identifier | None = None  # type: ignore[assignment]  # the one event that may have no case (a territorial rupture)
    rupture_id: Identifier
    territory: Annotated[str, Field(pattern=r"^([0-9]{2,3}|2[AB])$")]
    type: Literal["no_gp", "unanswered_referral", "readmission", "refused_admission_without_alternative", "other"]
    description: Annotated[str, Field(min_length=1, max_length=2000)]

    @property
    def key(self) -> str:
        return self.case_id or f"territory-{self.territory}"


AnyEvent = (
    ReferralSubmitted
    | ReferralStatusChanged
    | EvaluationRecorded
    | AdmissionDecided
    | CommissionOpened
    | OpinionGiven
    | ConsentRecorded
    | MessagePosted
    | RuptureReported
)
EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        ReferralSubmitted,
        ReferralStatusChanged,
        EvaluationRecorded,
        AdmissionDecided,
        CommissionOpened,
        OpinionGiven,
        ConsentRecorded,
        MessagePosted,
        RuptureReported,
    )
}

_FIELD_IN_MESSAGE = re.compile(r"^(?P<field>[a-z_]+): ")


def build_event(event_type: str, data: dict[str, object]) -> Event:
    """Validate `data` as an `event_type`; raise EventValidationError naming each field and rule."""
    try:
        cls = EVENT_TYPES[event_type]
    except KeyError:
        raise EventValidationError(event_type, [("type", f"unknown event type {event_type!r}")]) from None
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError(event_type, validation_errors(exc)) from None


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(field path, rule) pairs from a pydantic error, with model-level rules mapped to their field."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        m = _FIELD_IN_MESSAGE.match(msg)
        if m and err["type"] == "value_error" and m["field"] not in loc.split("."):  # a model's rule on one of its fields
            loc, msg = f"{loc}.{m['field']}" if loc else m["field"], msg[m.end():]
        out.append((loc or "<event>", msg))
    return out
