"""The territory's resource directory on the real stack: structures of every kind publish their
offers, every adapter serves them all ranked by fit, a referral goes to the structure found, and
a withdrawn offer leaves every adapter's directory."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api import KIND_OF, Api, referral_body
from tests.stack import Stack, eventually


@pytest.fixture
async def api(stack: Stack):
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(stack, client)


def _offer(**kw: Any) -> dict[str, Any]:
    return {"title": "Renfort à domicile", "needs": ["home_support", "hospital_discharge"], "age_min": 60, "gir_min": 1,
            "gir_max": 4, "departments": ["31"], "contact": "05 61 00 00 00", **kw}


async def put(api: Api, slug: str, offer_id: str, body: dict[str, Any], expect: int = 202) -> httpx.Response:
    resp = await api.client.put(f"{api.stack.url(KIND_OF[slug])}/v1/directory/offers/{offer_id}", json=body,
                                headers={"Authorization": f"Bearer dev-{slug}"})
    assert resp.status_code == expect, resp.text
    return resp


async def directory(api: Api, slug: str, query: str = "") -> list[dict[str, Any]]:
    resp = await api.get(slug, f"/v1/directory{query}")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["offers"])


async def test_offers_are_published_ranked_for_a_person_and_withdrawn(api: Api) -> None:
    await put(api, "crt-31-muret", "renfort", _offer(postcodes=["31600"], capacity=2, waiting_days=7))
    await put(api, "crt-31-nord", "renfort", _offer(capacity=0, waiting_days=1))
    await put(api, "cpts-31-nord", "medecin-traitant", _offer(title="Trouver un médecin traitant", needs=["gp_search"],
                                                             age_min=None, gir_min=None, gir_max=None, contact="cpts@cpts31nord.example"))
    query = "?postcode=31600&need=hospital_discharge&gir=3&age=82"

    async def all_three() -> list[dict[str, Any]] | None:
        offers = await directory(api, "dac-31", query)
        return offers if len(offers) == 3 else None
    offers = await eventually(all_three, 30, "the three offers in the DAC's directory")
    assert [(o["structure"], o["fit"]["where"], o["fit"]["excluded"]) for o in offers] == [
        ("crt-31-muret", "postcode", False), ("crt-31-nord", "department", False), ("cpts-31-nord", "department", True)]
    assert offers[0]["contact"] == "05 61 00 00 00"
    # every adapter serves the same directory
    assert [o["structure"] for o in await eventually(lambda: _n(api, "cpts-31-nord", query, 3), 30, "the CPTS's directory")] == [
        o["structure"] for o in offers]
    # the structure found is what a referral names
    r = (await api.post("dac-31", "/v1/referrals", referral_body(offers[0]["structure"], urgency="soon"))).json()
    await api.view_with("crt-31-muret", r["case_id"], f"referral:{r['referral_id']}")
    # an offer replaced, then withdrawn
    await put(api, "crt-31-muret", "renfort", _offer(postcodes=["31600"], capacity=0))

    async def replaced() -> bool:
        return any(o["structure"] == "crt-31-muret" and o["capacity"] == 0 for o in await directory(api, "dac-31"))
    await eventually(replaced, 30, "the replaced offer")
    gone = await api.client.delete(f"{api.stack.url('crt')}/v1/directory/offers/renfort", headers={"Authorization": "Bearer dev-crt-31-muret"})
    assert gone.status_code == 202
    assert gone.json() == {"withdrawn": "crt-31-muret/renfort"}

    async def withdrawn() -> bool:
        return [o["structure"] for o in await directory(api, "dac-31")] == ["cpts-31-nord", "crt-31-nord"]
    await eventually(withdrawn, 30, "the withdrawn offer gone")


async def _n(api: Api, slug: str, query: str, n: int) -> list[dict[str, Any]] | None:
    offers = await directory(api, slug, query)
    return offers if len(offers) == n else None


async def test_an_offer_breaking_a_rule_is_refused_naming_the_field(api: Api) -> None:
    bad = await put(api, "dac-31", "x", _offer(contact="Mme Jeanne Martin"), 422)
    assert bad.json()["fields"][0]["field"] == "contact"
    assert (await put(api, "dac-31", "bad id!", _offer(), 422)).json()["fields"][0]["field"] == "offer_id"
