"""An admission commission's life, pure: its state from the referral's entry in a view.

A CRT opens a commission on a referral it received (`CommissionOpened`): it invites structures
(the DAC, the referrer...) to give an opinion before a deadline; each invited structure becomes a
party of the referral (consent rule 2) for as long as the case lives. An invited structure's
opinion (`OpinionGiven`) is accepted while the commission is **open**; past the deadline the
commission **deliberates** (no opinion accepted); an admission decision on the referral recorded
after the commission opened closes it: **decided**; a status that ends the referral for its
recipient (withdrawn, declined, redirected, completed) closes it undecided: **closed**. One
commission at a time per referral; a waitlisting lets the CRT open another later, a final decision
(admitted, refused) does not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

Status = Literal["open", "deliberating", "decided", "closed"]
#: decisions after which no commission opens again on the referral
FINAL = frozenset({"admitted", "refused"})
#: statuses that end a referral for its recipient: a commission still pending then closes
ENDING = frozenset({"withdrawn", "declined", "redirected", "completed"})


def instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def status(commission: dict[str, Any], referral: dict[str, Any], now: datetime) -> Status:
    """`commission`: an entry of `referral["commissions"]`; `referral`: the entry in a view."""
    opened = instant(commission["at"])
    if any(instant(a["at"]) >= opened for a in referral.get("admission_history", [])):
        return "decided"
    if any(s["status"] in ENDING and instant(s["at"]) >= opened for s in referral.get("status_history", [])):
        return "closed"  # the referral left its recipient (withdrawn, declined, redirected, completed) undecided
    return "open" if now <= instant(commission["opinion_deadline"]) else "deliberating"


def find(referral: dict[str, Any], commission_id: str) -> dict[str, Any] | None:
    return next((c for c in referral.get("commissions", []) if c["commission_id"] == commission_id), None)


def opinions(referral: dict[str, Any], commission_id: str) -> list[dict[str, Any]]:
    """The commission's opinions, one per structure (a later one replaced an earlier one)."""
    return [o for o in referral.get("opinions", []) if o["commission_id"] == commission_id]


def pending(referral: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """The referral's commission still open or deliberating, if any."""
    return next((c for c in referral.get("commissions", []) if status(c, referral, now) in ("open", "deliberating")), None)


def annotated(referral: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The referral's entry with each commission's state at `now` and the structures that have
    not given their opinion yet (what `GET /v1/cases/{case_id}` shows)."""
    if not referral.get("commissions"):
        return referral
    commissions = []
    for c in referral["commissions"]:
        given = {o["by"] for o in opinions(referral, c["commission_id"])}
        commissions.append({**c, "status": status(c, referral, now), "awaiting": [s for s in c["invited"] if s not in given]})
    return {**referral, "commissions": commissions}
