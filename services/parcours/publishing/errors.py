"""Errors of the publishing rules. Each has a stable `reason` (an HTTP layer maps it to a status,
the ingress validator uses it as the dead-letter reason), the `rule` it enforces and, for a bad
field, `fields` naming each field with its rule."""

from __future__ import annotations

from parcours.errors import ParcoursError


class PublishingError(ParcoursError):
    reason = "refused"

    def __init__(self, message: str, *, rule: str | None = None, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message, self.rule, self.fields = message, rule, fields


class NotPermitted(PublishingError):
    """The publisher's kind, authorship or role does not allow this event."""

    reason = "forbidden"


class BadReference(PublishingError):
    """The event names a structure, grantee or territory that does not exist for it."""

    reason = "invalid"


class NotVisible(PublishingError):
    """The case or referral the event writes into is not visible to its publisher."""

    reason = "not_found"


class TooLate(PublishingError):
    """The event comes after what it answers closed (an opinion past its commission's deadline, a
    commission on a referral already decided)."""

    reason = "conflict"
