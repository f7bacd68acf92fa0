"""The CRT's admission commission through the HTTP API on the real stack: the CRT opens it on a
referral it received and invites the DAC and a CPTS, who then see the referral and give their
opinions; the decision closes it and a refusal without alternative reaches the observatory; what
the rules refuse is refused with the rule named (a CPTS opening a commission, a second commission,
an opinion from a structure not invited, after the decision, or after the deadline)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api import Api
from tests.stack import Stack, eventually


@pytest.fixture
async def api(stack: Stack):
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(stack, client)


def _deadline(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def _referral(api: Api, view_of: str, case_id: str, referral_id: str, probe: Any) -> dict[str, Any]:
    """`view_of`'s entry of the referral, once `probe(entry)` holds."""
    async def found() -> dict[str, Any] | None:
        v = await api.view(view_of, case_id)
        ref = next((r for r in (v or {}).get("referrals", []) if r["referral_id"] == referral_id), None)
        return ref if ref is not None and probe(ref) else None
    return await eventually(found, 30, f"the referral in {view_of}'s view")


async def test_a_commission_with_the_dacs_opinion_then_a_refusal_counted_by_the_observatory(api: Api) -> None:
    case_id, referral_id = await api.open_case("dac-31", "crt-31-muret")
    await api.view_with("crt-31-muret", case_id, f"referral:{referral_id}")
    body = {"invited": ["dac-31", "cpts-31-nord"], "opinion_deadline": _deadline(timedelta(hours=1)),
            "question": "Volet 2 adapté au retour à domicile ?"}
    path = f"/v1/referrals/{referral_id}/commissions"
    # a CPTS cannot open a commission (its kind), a CRT that is not the recipient cannot see the referral
    refused = await api.post("cpts-31-nord", path, body, expect=403)
    assert "CommissionOpened may be published by ['crt']" in refused.json()["rule"]
    await api.post("crt-31-nord", path, body, expect=404)
    opened = (await api.post("crt-31-muret", path, body)).json()
    commission_id = opened["commission_id"]
    assert opened["referral_id"] == referral_id
    assert opened["case_id"] == case_id

    # the invited CPTS now sees the referral and the commission, and its inbox said so; another CPTS sees nothing
    cpts_view = await api.view_with("cpts-31-nord", case_id, f"commission:{commission_id}")
    assert f"referral:{referral_id}" in cpts_view["items"]

    async def notified() -> bool:
        inbox = (await api.get("cpts-31-nord", "/v1/inbox?limit=1000")).json()["notifications"]
        return {n["item"] for n in inbox if n["case_id"] == case_id} == {f"referral:{referral_id}", f"commission:{commission_id}"}
    await eventually(notified, 30, "the invited CPTS notified of the referral and the commission")
    assert await api.view("cpts-31-sud", case_id) is None

    opinions = f"/v1/referrals/{referral_id}/commissions/{commission_id}/opinions"
    await api.view_with("dac-31", case_id, f"commission:{commission_id}")
    await api.post("dac-31", opinions, {"opinion": "favourable", "comment": "Aidante épuisée, retour possible avec renfort."})
    await api.post("cpts-31-nord", opinions, {"opinion": "reserved"})
    await api.post("crt-31-nord", opinions, {"opinion": "favourable"}, expect=404)  # not invited: not even visible
    second = await api.post("crt-31-muret", path, {**body, "invited": ["dac-31"]}, expect=409)
    assert "one at a time" in second.json()["rule"]

    ref = await _referral(api, "crt-31-muret", case_id, referral_id, lambda r: len(r["opinions"]) == 2)
    [shown] = ref["commissions"]
    assert shown["status"] == "open"
    assert shown["awaiting"] == []
    assert {(o["by"], o["opinion"]) for o in ref["opinions"]} == {("dac-31", "favourable"), ("cpts-31-nord", "reserved")}

    await api.post("crt-31-muret", f"/v1/cases/{case_id}/admission-decisions",
                   {"referral_id": referral_id, "decision": "refused", "volet": 2, "reasons": ["capacité atteinte"]})
    ref = await _referral(api, "dac-31", case_id, referral_id, lambda r: r["admission"] is not None)
    assert ref["commissions"][0]["status"] == "decided"
    late = await api.post("dac-31", opinions, {"opinion": "unfavourable"}, expect=409)
    assert late.json()["rule"] == "opinion: while the commission is open"

    async def counted() -> list[dict[str, Any]] | None:
        rows = (await api.get("dac-31", "/v1/observatory")).json()["ruptures"]
        rows = [r for r in rows if r["type"] == "refused_admission_without_alternative"]
        return rows or None
    rows = await eventually(counted, 30, "the refusal without alternative in the observatory")
    assert [(r["territory"], r["count"]) for r in rows] == [("31", 1)]


async def test_an_opinion_after_the_deadline_is_refused_with_the_rule(api: Api) -> None:
    case_id, referral_id = await api.open_case("cpts-31-nord", "crt-31-muret")
    await api.view_with("crt-31-muret", case_id, f"referral:{referral_id}")
    opened = (await api.post("crt-31-muret", f"/v1/referrals/{referral_id}/commissions",
                             {"invited": ["dac-31"], "opinion_deadline": _deadline(timedelta(seconds=3))})).json()
    commission_id = opened["commission_id"]
    await api.view_with("dac-31", case_id, f"commission:{commission_id}")
    # the deadline passes: the view served says the commission deliberates
    await _referral(api, "dac-31", case_id, referral_id, lambda r: r["commissions"][0]["status"] == "deliberating")
    late = await api.post("dac-31", f"/v1/referrals/{referral_id}/commissions/{commission_id}/opinions",
                          {"opinion": "favourable"}, expect=409)
    answer = late.json()
    assert answer["error"] == "conflict"
    assert answer["rule"].startswith("opinion_deadline: opinions are accepted until ")
    assert answer["fields"][0]["field"] == "opinion_deadline"
    # a refusal's alternative is a registered structure
    decisions = f"/v1/cases/{case_id}/admission-decisions"
    bad = await api.post("crt-31-muret", decisions, {"referral_id": referral_id, "decision": "refused", "volet": 2,
                                                     "reasons": ["hors territoire"], "alternative": "crt-99-nowhere"}, expect=422)
    assert bad.json()["fields"] == [{"field": "alternative", "rule": "crt-99-nowhere is not a registered structure"}]
    await api.post("crt-31-muret", decisions, {"referral_id": referral_id, "decision": "refused", "volet": 2,
                                               "reasons": ["hors territoire"], "alternative": "crt-31-nord"})
    ref = await _referral(api, "cpts-31-nord", case_id, referral_id, lambda r: r["admission"] is not None)
    assert ref["admission"]["alternative"] == "crt-31-nord"
