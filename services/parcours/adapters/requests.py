"""Request bodies of the HTTP API, derived from the contract's event models: each field keeps the
contract's type, constraints and default, so the edge and the events have one source of field
rules. A body never carries `event_id`, `occurred_at` or `source` (Parcours sets them from the
authenticated caller and its clock), nor what the path or the server provides (a case id from the
path, the generated item id); extra fields are refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, create_model

from parcours.contract.models import (
    AdmissionDecided,
    CommissionOpened,
    ConsentRecorded,
    EvaluationRecorded,
    Event,
    Identifier,
    MessagePosted,
    OpinionGiven,
    Person,
    ReferralStatusChanged,
    ReferralSubmitted,
    RuptureReported,
    Slug,
)

#: set by Parcours on every event, never by a partner
SERVER_SET = frozenset({"event_id", "occurred_at", "source"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def body_of(event: type[Event], name: str, *, omit: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> type[BaseModel]:
    """The body a partner posts for `event`: its fields less `omit` and the server-set ones."""
    fields: dict[str, Any] = {f: (info.annotation, info) for f, info in event.model_fields.items()
                              if f not in SERVER_SET and f not in omit}
    return create_model(name, __base__=_Body, __doc__=f"A {event.event_type} as a partner posts it.",
                        **fields, **(extra or {}))


def offer_body() -> type[BaseModel]:
    """The body of `PUT /v1/directory/offers/{offer_id}`: an offer less what Parcours sets (the
    structure, from the caller; the id, from the path; the time)."""
    from parcours.contract.directory import DirectoryOffer

    fields: dict[str, Any] = {f: (info.annotation, info) for f, info in DirectoryOffer.model_fields.items()
                              if f not in ("structure", "offer_id", "updated_at")}
    return create_model("OfferIn", __base__=_Body, __doc__="An offer of your structure in the territory's directory.", **fields)


def person_body() -> type[BaseModel]:
    """The person a partner refers: the contract's fields less what Parcours makes (the sealed
    identity and the person key): the identity comes in clear, over TLS, and is sealed at once."""
    fields: dict[str, Any] = {f: (info.annotation, info) for f, info in Person.model_fields.items()
                              if f not in ("identity_sealed", "person_key")}
    return create_model("PersonIn", __base__=_Body, __doc__=Person.__doc__, **fields)


class JoinIn(_Body):
    """Join the follow-up of this structure (named in your referral's `follow_up.followed_by`)."""

    followed_by: Slug


class WebhookIn(_Body):
    url: Annotated[str, Field(pattern=r"^https?://", max_length=2000)]
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None


if TYPE_CHECKING:  # models made at import time: handlers see validated bodies of these shapes
    ReferralIn: TypeAlias = Any
    StatusIn: TypeAlias = Any
    EvaluationIn: TypeAlias = Any
    AdmissionIn: TypeAlias = Any
    CommissionIn: TypeAlias = Any
    OpinionIn: TypeAlias = Any
    ConsentIn: TypeAlias = Any
    MessageIn: TypeAlias = Any
    RuptureIn: TypeAlias = Any
    OfferIn: TypeAlias = Any
else:
    # the category of a referral, a status, an admission or a consent is fixed by the contract
    ReferralIn = body_of(ReferralSubmitted, "ReferralIn", omit=("case_id", "referral_id", "category", "person"),
                         extra={"case_id": (Identifier | None, None),  # attach to one of your cases
                                "person": (person_body(), ...)})
    StatusIn = body_of(ReferralStatusChanged, "StatusIn", omit=("case_id", "referral_id", "category"))
    EvaluationIn = body_of(EvaluationRecorded, "EvaluationIn", omit=("case_id", "evaluation_id"))
    AdmissionIn = body_of(AdmissionDecided, "AdmissionIn", omit=("case_id", "category"))
    CommissionIn = body_of(CommissionOpened, "CommissionIn", omit=("case_id", "referral_id", "commission_id", "category"))
    OpinionIn = body_of(OpinionGiven, "OpinionIn", omit=("case_id", "referral_id", "commission_id", "category"))
    ConsentIn = body_of(ConsentRecorded, "ConsentIn", omit=("case_id", "consent_id", "category"))
    MessageIn = body_of(MessagePosted, "MessageIn", omit=("case_id", "message_id"))
    RuptureIn = body_of(RuptureReported, "RuptureIn", omit=("rupture_id", "category"))
    OfferIn = offer_body()
