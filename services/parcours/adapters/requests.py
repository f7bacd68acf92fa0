"""Request bodies of the HTTP API. They never carry `source`, `event_id` or `occurred_at`:
Parcours sets those from the authenticated caller and its clock (extra fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from parcours.contract.models import Category, Identifier, Person, ReferralContext, Slug


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferralIn(_Body):
    to_structure: Slug
    person: Person
    reasons: Annotated[list[str], Field(min_length=1, max_length=20)]
    urgency: Literal["routine", "soon", "urgent"]
    context: ReferralContext | None = None
    summary: Annotated[str, Field(min_length=1, max_length=20_000)]
    case_id: Identifier | None = None


class StatusIn(_Body):
    status: Literal["acknowledged", "accepted", "declined", "redirected", "withdrawn", "completed"]
    reason: str | None = None
    redirect_to: Slug | None = None


class EvaluationIn(_Body):
    type: Literal["aggir", "icope_step1", "multidimensional"]
    category: Category = "functional"
    results: dict[str, str]
    gir: int | None = None


class AdmissionIn(_Body):
    referral_id: Identifier
    decision: Literal["admitted", "refused", "waitlisted"]
    volet: Literal[1, 2]
    start_date: str | None = None
    reasons: list[str] = []


class ConsentIn(_Body):
    grantee: str
    categories: Annotated[list[Category], Field(min_length=1)]
    decision: Literal["permit", "deny"]
    valid_until: datetime | None = None
    method: Literal["oral", "written", "digital"]


class MessageIn(_Body):
    body: Annotated[str, Field(min_length=1, max_length=20_000)]
    category: Category = "discussion"
    reply_to: Identifier | None = None


class RuptureIn(_Body):
    territory: str
    type: Literal["no_gp", "unanswered_referral", "readmission", "refused_admission_without_alternative", "other"]
    description: Annotated[str, Field(min_length=1, max_length=2000)]
    case_id: Identifier | None = None


class WebhookIn(_Body):
    url: Annotated[str, Field(pattern=r"^https?://", max_length=2000)]
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None
