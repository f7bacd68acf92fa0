"""The consent clock end to end: a consent past `valid_until` leaves the views with no new event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.api import Api
from tests.stack import Stack, eventually


async def test_an_expiring_consent_leaves_the_view_without_any_new_event(stack: Stack) -> None:
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(stack, client)
        case, _ = await api.open_case("dac-31", "crt-31-muret", timeout=60)
        # 15 s: the message must be posted, processed and seen before the consent lapses, on a loaded machine
        until = (datetime.now(UTC) + timedelta(seconds=15)).isoformat().replace("+00:00", "Z")
        await api.post("dac-31", f"/v1/cases/{case}/consents", {"grantee": "crt-31-nord", "categories": ["discussion"],
                                                                 "decision": "permit", "method": "oral", "valid_until": until})
        m = (await api.post("dac-31", f"/v1/cases/{case}/messages", {"body": "Partagé pour quelques secondes."})).json()
        item = f"message:{m['message_id']}"

        async def notified(kind: str) -> bool:
            """The inbox keeps what the view held for a moment only: awaited there, nothing is missed."""
            notes = (await api.get("crt-31-nord", "/v1/inbox?after=0&limit=1000")).json()["notifications"]
            return any(n["item"] == item and n["type"] == kind for n in notes)
        await eventually(lambda: notified("item_visible"), 30, "the message shown to the grantee")
        await eventually(lambda: notified("redaction"), 60, "a redaction notice once the consent lapsed")
        await api.view_without("crt-31-nord", case, item, timeout=30)
