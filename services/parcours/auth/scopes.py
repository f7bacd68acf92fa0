"""SMART v2 scopes (`system/<Resource>.<cruds>`): what each route of the edge needs, what a
structure kind may hold, and the grant of a token request (what was asked, within what the kind
may do).

A kind's grantable scopes are derived from the topic catalogue, never listed: a write route
whose name is an event type is grantable to the kinds that may publish that event; the
observatory to the kinds among its topic's `readers`; every other route to every kind. The only
table here is the vocabulary: which FHIR resource and interaction stands for each route.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from parcours.auth.errors import InvalidScope
from parcours.topology.catalogue import Catalogue

#: SMART v2 interactions, in the order a scope writes them
INTERACTIONS = "cruds"
#: SMART v1 suffixes, read as their v2 equivalent
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^system/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)$")

#: event type -> the FHIR resource its write creates (the FHIR bridge's own mapping: a referral
#: is a ServiceRequest, a status or an admission a Task, an evaluation an Observation...)
EVENT_RESOURCE = {
    "ReferralSubmitted": "ServiceRequest", "ReferralStatusChanged": "Task", "AdmissionDecided": "Task",
    "CommissionOpened": "Task", "OpinionGiven": "Task", "EvaluationRecorded": "Observation",
    "ConsentRecorded": "Consent", "MessagePosted": "Communication", "RuptureReported": "Flag",
}
#: route name -> (resource, interaction) of the routes that are not an event type's
ROUTE_NEED: dict[str, tuple[str, str]] = {
    "FollowUpJoined": ("Task", "c"), "FhirTask": ("Task", "c"),
    "get_case": ("EpisodeOfCare", "r"), "list_cases": ("EpisodeOfCare", "s"), "FhirCase": ("EpisodeOfCare", "r"),
    "FhirEpisode": ("EpisodeOfCare", "r"), "inbox": ("EpisodeOfCare", "s"), "disclosures": ("AuditEvent", "s"),
    "observatory": ("MeasureReport", "s"), "put_webhook": ("Subscription", "u"), "FhirSubscription": ("Subscription", "c"),
    "put_offer": ("HealthcareService", "u"), "delete_offer": ("HealthcareService", "d"), "directory": ("HealthcareService", "s"),
}
#: routes served only to the kinds among a topic's readers
READER_GATED = {"observatory": "observatory"}

Scopes = dict[str, frozenset[str]]  # resource (or "*") -> interactions


def need(route: str | None) -> tuple[str, str] | None:
    """The (resource, interaction) a route needs; None for a route that needs no scope."""
    if route is None:
        return None
    if route in EVENT_RESOURCE:
        return EVENT_RESOURCE[route], "c"
    return ROUTE_NEED.get(route)


def grantable(catalogue: Catalogue, kind: str) -> Scopes:
    """Every scope a structure of `kind` may hold, from the catalogue's rights."""
    out: dict[str, set[str]] = {}
    for route in [*EVENT_RESOURCE, *ROUTE_NEED]:
        if route in EVENT_RESOURCE and not catalogue.may_publish(kind, route):
            continue
        if route in READER_GATED and kind not in catalogue.topic(READER_GATED[route]).readers:
            continue
        resource, interaction = need(route)  # type: ignore[misc]
        out.setdefault(resource, set()).update(interaction + ("r" if interaction == "s" else ""))
    return {r: frozenset(i) for r, i in out.items()}


def parse(text: str) -> Scopes:
    """A space-separated scope string; scopes other than `system/...` are ignored (SMART: a
    server grants a subset), a malformed system scope is refused."""
    out: dict[str, set[str]] = {}
    for item in text.split():
        if not item.startswith("system/"):
            continue
        m = _SCOPE.match(item)
        suffix = _V1.get(m.group(2), m.group(2)) if m else ""
        if m is None or not suffix or any(c not in INTERACTIONS for c in suffix) or list(suffix) != sorted(suffix, key=INTERACTIONS.index):
            raise InvalidScope(f"{item!r} is not a SMART system scope (system/<Resource|*>.<cruds in this order>)")
        out.setdefault(m.group(1), set()).update(suffix)
    return {r: frozenset(i) for r, i in out.items()}


def grant(asked: Scopes, allowed: Mapping[str, frozenset[str]]) -> Scopes:
    """The scopes granted: each allowed resource and interaction that an asked scope covers."""
    out: dict[str, set[str]] = {}
    for resource, interactions in allowed.items():
        wanted = asked.get("*", frozenset()) | asked.get(resource, frozenset())
        if wanted & interactions:
            out[resource] = set(wanted & interactions)
    if not out:
        raise InvalidScope("none of the scopes asked for is one this structure's kind may hold")
    return {r: frozenset(i) for r, i in out.items()}


def render(scopes: Mapping[str, Iterable[str]]) -> str:
    """Scopes as SMART writes them, sorted: `system/Consent.c system/EpisodeOfCare.rs`."""
    return " ".join(f"system/{r}.{''.join(c for c in INTERACTIONS if c in set(i))}" for r, i in sorted(scopes.items()) if i)


def covers(scopes: Scopes, needed: tuple[str, str]) -> bool:
    resource, interaction = needed
    return interaction in scopes.get(resource, frozenset()) or interaction in scopes.get("*", frozenset())
