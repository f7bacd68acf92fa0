"""Synthetic identities for the demo and the tests: made-up names, test INS OIDs only (never the
OIDs of a real NIR or NIA), matricules with a valid key."""

from __future__ import annotations

from datetime import date
from typing import Any

from parcours.contract.identity import INS_NIA_TEST, INS_NIR_TEST, matricule_key

_FAMILY = ("MARTINEZ", "LAFFONT", "CASTAING", "DUFFAU", "ESPAGNO", "BARRAQUÉ", "SAINT-PAUL", "ROUQUETTE")
_GIVEN = ("Odette Marie", "Raymond", "Jeanne Paule", "Henri Louis", "Germaine", "Marcel André", "Yvette", "Pierre")


def synthetic_identity(n: int, *, status: str = "qualified", nia: bool = False, born: date | None = None) -> dict[str, Any]:
    """The n-th synthetic person: a qualified identity with a test INS (unless `status` says
    otherwise), born in Haute-Garonne (or `born`), with a phone and an address."""
    birth = born or date(1935 + n % 20, 1 + n % 12, 1 + n % 28)
    female = n % 2 == 0
    number = f"{2 if female else 1}{birth.year % 100:02d}{birth.month:02d}31555{n % 1000:03d}"
    identity: dict[str, Any] = {
        "status": status,
        "birth_family_name": _FAMILY[n % len(_FAMILY)],
        "birth_given_names": _GIVEN[n % len(_GIVEN)],
        "birth_date": birth.isoformat(),
        "sex": "female" if female else "male",
        "birth_place": "31555",
        "contact": {"phone": f"+33 5 61 00 {n // 100 % 100:02d} {n % 100:02d}",
                    "address": {"lines": [f"{n % 90 + 1} rue des Synthèses"], "postcode": "31000", "city": "Toulouse"}},
    }
    if status == "qualified":
        identity["ins"] = {"matricule": f"{number}{matricule_key(number):02d}", "oid": INS_NIA_TEST if nia else INS_NIR_TEST}
    return identity
