"""Synthetic events for tests: every person here is made up."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from parcours.contract.models import Event, build_event

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def ev(event_type: str, *, case_id: str = "case-1", source: str = "dac-31", at: int = 0, **fields: Any) -> Event:
    base = {
        "event_id": str(uuid.uuid4()),
        "case_id": case_id,
        "occurred_at": T0 + timedelta(minutes=at),
        "source": source,
    }
    return build_event(event_type, {**base, **DEFAULTS[event_type], **fields})


DEFAULTS: dict[str, dict[str, Any]] = {
    "ReferralSubmitted": {
        "referral_id": "ref-1",
        "to_structure": "crt-31-muret",
        "person": {"pseudonym": "P-7f3a9c", "birth_year": 1938, "postcode": "31600"},
        "reasons": ["retour à domicile après hospitalisation"],
        "urgency": "soon",
        "context": {"type": "hospital_discharge", "date": date(2026, 11, 5)},
        "summary": "Sortie d'hospitalisation prévue, aidant épuisé.",
    },
    "ReferralStatusChanged": {"referral_id": "ref-1", "status": "accepted"},
    "EvaluationRecorded": {
        "evaluation_id": "eval-1",
        "type": "aggir",
        "category": "functional",
        "results": {"transferts": "B", "deplacements": "C"},
        "gir": 3,
    },
    "AdmissionDecided": {"referral_id": "ref-1", "decision": "admitted", "volet": 2, "start_date": date(2026, 11, 6)},
    "CommissionOpened": {
        "commission_id": "com-1", "referral_id": "ref-1", "invited": ["dac-31"],
        "opinion_deadline": T0 + timedelta(days=3), "question": "Volet 2 adapté au retour à domicile ?",
    },
    "OpinionGiven": {"commission_id": "com-1", "referral_id": "ref-1", "opinion": "favourable", "comment": "Aidant à soulager."},
    "ConsentRecorded": {
        "consent_id": "cons-1",
        "grantee": "crt-31-muret",
        "categories": ["functional", "social", "discussion"],
        "decision": "permit",
        "method": "oral",
    },
    "MessagePosted": {"message_id": "msg-1", "body": "Visite à domicile prévue jeudi."},
    "RuptureReported": {
        "rupture_id": "rup-1",
        "territory": "31",
        "type": "no_gp",
        "description": "Pas de médecin traitant depuis le départ en retraite du précédent.",
    },
}


def one_of_each(case_id: str = "case-1") -> list[Event]:
    return [ev(t, case_id=case_id, source=("crt-31-muret" if t in ("AdmissionDecided", "CommissionOpened") else "dac-31")) for t in DEFAULTS]
