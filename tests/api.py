"""A small HTTP client for the adapters, for tests and the demo scenario."""

from __future__ import annotations

from typing import Any

import httpx

from tests.stack import Stack, eventually

KIND_OF = {"dac-31": "dac", "cpts-31-nord": "cpts", "cpts-31-sud": "cpts", "crt-31-muret": "crt", "crt-31-nord": "crt"}


class Api:
    def __init__(self, stack: Stack, client: httpx.AsyncClient) -> None:
        self.stack, self.client = stack, client

    def _url(self, slug: str, path: str) -> str:
        return self.stack.url(KIND_OF[slug]) + path

    async def post(self, slug: str, path: str, body: dict[str, Any], key: str | None = None, expect: int | None = 202) -> httpx.Response:
        headers = {"Authorization": f"Bearer dev-{slug}"} | ({"Idempotency-Key": key} if key else {})
        resp = await self.client.post(self._url(slug, path), json=body, headers=headers)
        if expect is not None:
            assert resp.status_code == expect, resp.text
        return resp

    async def get(self, slug: str, path: str) -> httpx.Response:
        return await self.client.get(self._url(slug, path), headers={"Authorization": f"Bearer dev-{slug}"})

    async def view(self, slug: str, case_id: str) -> dict[str, Any] | None:
        resp = await self.get(slug, f"/v1/cases/{case_id}")
        assert resp.status_code in (200, 404), resp.text
        return resp.json() if resp.status_code == 200 else None

    async def view_with(self, slug: str, case_id: str, item: str, timeout: float = 30) -> dict[str, Any]:
        """Await until `slug`'s view of the case holds `item`."""
        async def probe() -> dict[str, Any] | None:
            v = await self.view(slug, case_id)
            return v if v and item in v["items"] else None
        return await eventually(probe, timeout, f"{item} in {slug}'s view of {case_id}")

    async def open_case(self, sender: str, to: str, timeout: float = 30) -> tuple[str, str]:
        """A referral from `sender` to `to`, once the sender's view holds it: (case_id, referral_id)."""
        r = (await self.post(sender, "/v1/referrals", referral_body(to))).json()
        await self.view_with(sender, r["case_id"], f"referral:{r['referral_id']}", timeout=timeout)
        return r["case_id"], r["referral_id"]

    async def view_without(self, slug: str, case_id: str, item: str, timeout: float = 30) -> dict[str, Any] | None:
        async def probe() -> Any:
            v = await self.view(slug, case_id)
            return (v or {"items": []}) if (v is None or item not in v["items"]) else None
        return await eventually(probe, timeout, f"{item} gone from {slug}'s view of {case_id}")


def referral_body(to: str, **kw: Any) -> dict[str, Any]:
    return {"to_structure": to, "person": {"pseudonym": "P-3c9e41", "birth_year": 1937, "postcode": "31600"},
            "reasons": ["retour à domicile"], "urgency": "soon", "summary": "Situation synthétique de test.", **kw}
