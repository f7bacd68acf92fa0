"""Which offers of the territory's directory fit a need, best first.

Every offer is answered (a partner sees the whole directory, ordered), each with how it fits:
- where: the person's postcode listed by the offer, its department served whole, its department
  served but only at other postcodes, or elsewhere;
- what: the need among the offer's needs;
- who: the GIR and the age within the offer's ranges (an offer without a range takes everyone,
  and earns nothing for it: a range that fits says more than no range);
- places: open (capacity above 0) or none.
The order: offers that exclude the person last (elsewhere, other postcodes, another need, a GIR
or an age outside their ranges); then the higher score, which adds up: postcode listed 4 or
department 3, need 3, GIR in range 1, age in range 1, places +1 or none -1; then the shorter wait,
then the structure's slug and the offer id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from parcours.contract.directory import DirectoryOffer, department_of


@dataclass(frozen=True)
class Query:
    postcode: str | None = None
    need: str | None = None
    gir: int | None = None
    age: int | None = None


@dataclass(frozen=True)
class Fit:
    """How an offer fits a query: each criterion's answer, whether the person is excluded, a score."""

    where: str  # postcode | department | outside | any (no postcode asked)
    need: bool | None  # None: no need asked
    gir: bool | None  # None: not asked, or the offer takes any GIR
    age: bool | None
    excluded: bool
    score: int

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "need": self.need, "gir": self.gir, "age": self.age, "excluded": self.excluded,
                "score": self.score}


def _within(value: int | None, low: int | None, high: int | None) -> bool | None:
    if value is None or (low is None and high is None):
        return None
    return (low is None or low <= value) and (high is None or value <= high)


def fit(offer: DirectoryOffer, q: Query) -> Fit:
    if q.postcode is None:
        where = "any"
    elif q.postcode in offer.postcodes:
        where = "postcode"
    elif department_of(q.postcode) in offer.departments and not offer.postcodes:
        where = "department"  # the whole department is served
    elif department_of(q.postcode) in offer.departments:
        where = "department-other-postcodes"  # the department, but the offer lists other postcodes
    else:
        where = "outside"
    need = None if q.need is None else q.need in offer.needs
    gir = _within(q.gir, offer.gir_min, offer.gir_max)
    age = _within(q.age, offer.age_min, offer.age_max)
    excluded = where in ("outside", "department-other-postcodes") or need is False or gir is False or age is False
    score = {"postcode": 4, "department": 3, "any": 0}.get(where, 0) + (3 if need else 0) + (1 if gir else 0) + (1 if age else 0)
    if offer.capacity is not None:
        score += 1 if offer.capacity > 0 else -1
    return Fit(where, need, gir, age, excluded, score)


def rank(offers: Iterable[DirectoryOffer], q: Query) -> list[tuple[DirectoryOffer, Fit]]:
    """Every offer with its fit: not excluded first, then the higher score, the shorter wait,
    and the structure's slug and offer id (a stable order)."""
    fitted = [(o, fit(o, q)) for o in offers]
    return sorted(fitted, key=lambda of: (of[1].excluded, -of[1].score,
                                          of[0].waiting_days if of[0].waiting_days is not None else math.inf,
                                          of[0].structure, of[0].offer_id))
