"""Accepting an event: the one use case behind every door (the JSON routes, the FHIR routes, the
Kafka ingress).

A door turns what it received into an event (`draft`, for the HTTP doors that make the event's
ids; the decoded record, for the ingress) and hands it to `accept` with the structure that
publishes it. `accept` applies the publishing rules (`rules`), the idempotency key if any, and
hands the event to the door's outlet. Free of HTTP and Kafka: its collaborators are the protocols
below; its refusals are the rules' `PublishingError`s and the contract's `EventValidationError`,
which each door answers its own way (an HTTP status, a dead letter).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from parcours.contract.models import Event, ReferralSubmitted, build_event
from parcours.publishing.errors import NotPermitted
from parcours.publishing.rules import CaseLookups, ReferralCase, check_referral_case, check_stateful, check_stateless
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Structure


class Outlet(Protocol):
    """Where an accepted event goes: published by the edge, or the partner's record forwarded."""

    async def publish(self, event: Event) -> object: ...


class KeyClaims(Protocol):
    """Which request an idempotency key stands for (`bus.idempotency.IdempotencyClaims`)."""

    def accepted(self, slug: str, key: str, digest: str) -> bool:
        """Was this very request (key and body digest) accepted already?"""

    async def claim(self, slug: str, key: str, digest: str, occurred_at: datetime) -> datetime:
        """The `occurred_at` of the key's first request; raises when another body holds the key."""


class Sealing(Protocol):
    """What protects the person's identity before an event leaves the edge (`security.identity`)."""

    async def seal(self, event: Event) -> Event:
        """The event with its identity sealed (any other event as it is)."""


class Tally(Protocol):
    """What counts accepted events: a counter labelled (event type, publisher's kind, door)."""

    def labels(self, *values: str) -> Any: ...


@dataclass(frozen=True)
class Key:
    """An idempotency key, and the digest of the request that came with it."""

    key: str
    digest: str


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Acceptance:
    """The use case, with its collaborators: the publisher's case views, the key claims (None: a
    door without idempotency keys), the clock, how long to wait for a view the processor may not
    have written yet, what counts the accepted events, and what seals identities (None: a door
    that publishes none in clear; an event carrying one is then refused)."""

    catalogue: Catalogue
    views: CaseLookups
    tally: Tally
    claims: KeyClaims | None = None
    wait: float = 0.0
    clock: Callable[[], datetime] = field(default=_utc_now)
    sealing: Sealing | None = None

    def draft(self, publisher: Structure, event_type: str, event_id: uuid.UUID, fields: dict[str, Any]) -> Event:
        """The event a request asks for, from `publisher`, now: validated by the contract."""
        return build_event(event_type, {"event_id": str(event_id), "occurred_at": self.clock(), "source": publisher.slug, **fields})

    async def accept(self, publisher: Structure, event: Event, outlet: Outlet, *, door: str, key: Key | None = None,
                     referral_case: ReferralCase = "publisher") -> Event:
        """Check `event` against the rules, claim its key, hand it to `outlet`; the event as published
        (a retry's is the first request's). `door`: the channel counted; `referral_case`: who chose
        a referral's case (`rules.ReferralCase`)."""
        check_stateless(self.catalogue, publisher, event)
        retried = key is not None and self.claims is not None and self.claims.accepted(publisher.slug, key.key, key.digest)
        if not retried:  # a retry was checked when first accepted
            if isinstance(event, ReferralSubmitted):
                await check_referral_case(self.views, publisher, event, referral_case, self.wait)
            # a partner often writes right after opening a case: give the processor a moment
            await check_stateful(self.views, publisher, event, wait=self.wait, now=self.clock())
        if key is not None and self.claims is not None:
            # a valid request claims its key; the first claim decides the key's body
            first = await self.claims.claim(publisher.slug, key.key, key.digest, event.occurred_at)
            event = event.model_copy(update={"occurred_at": first})  # a retry publishes the very same event
        if isinstance(event, ReferralSubmitted) and event.person.identity is not None:  # never in clear past the edge
            if self.sealing is None:
                raise NotPermitted("this door takes no identity", rule="person.identity: sealed at the edge before it is published")
            event = await self.sealing.seal(event)
        await outlet.publish(event)
        self.tally.labels(event.event_type, publisher.kind, door).inc()
        return event
