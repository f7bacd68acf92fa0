"""One person, one coordinated follow-up, through the HTTP API on the real stack: the DAC follows
a person; each later referral of the same person tells its recipient who follows them elsewhere
(the slugs only: nothing of those cases); the recipient joins that follow-up instead of opening a
second one; what the rules refuse is refused with the rule named."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api import Api, referral_body
from tests.stack import Stack, eventually


@pytest.fixture
async def api(stack: Stack):
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(stack, client)


PERSON = {"pseudonym": "P-5d0c11", "birth_year": 1934, "postcode": "31600"}


async def _referral(api: Api, slug: str, case_id: str, referral_id: str, probe: Any, what: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        v = await api.view(slug, case_id)
        ref = next((r for r in (v or {}).get("referrals", []) if r["referral_id"] == referral_id), None)
        return ref if ref is not None and probe(ref) else None
    return await eventually(found, 30, what)


async def _refer(api: Api, sender: str, to: str, summary: str) -> tuple[str, str]:
    r = (await api.post(sender, "/v1/referrals", referral_body(to, person=PERSON, summary=summary))).json()
    return r["case_id"], r["referral_id"]


async def test_later_referrals_of_a_followed_person_join_the_existing_follow_ups(api: Api) -> None:
    # case A: the DAC follows the person (it accepted the CPTS's referral) and wrote in the case
    case_a, ref_a = await _refer(api, "cpts-31-nord", "dac-31", "Première demande.")
    await api.view_with("dac-31", case_a, f"referral:{ref_a}")
    await api.post("dac-31", f"/v1/referrals/{ref_a}/status", {"status": "accepted"})
    await api.post("dac-31", f"/v1/cases/{case_a}/messages", {"body": "Visite à domicile faite.", "category": "social"})

    # case B: the same person referred to a CRT, which is told that the DAC follows them, and no more
    case_b, ref_b = await _refer(api, "cpts-31-sud", "crt-31-muret", "Deuxième demande.")
    told = await _referral(api, "crt-31-muret", case_b, ref_b, lambda r: "follow_up" in r, "the CRT told of the DAC's follow-up")
    assert told["follow_up"] == {"followed_by": ["dac-31"]}
    assert (await api.view("crt-31-muret", case_b) or {})["items"] == [f"referral:{ref_b}"]
    assert await api.view("crt-31-muret", case_a) is None  # nothing of the DAC's case
    sender = await api.view_with("cpts-31-sud", case_b, f"referral:{ref_b}")  # the CPTS's adapter, on its own
    assert "follow_up" not in sender["referrals"][0]  # only the recipient decides
    # refusals: the sender may not join; a structure following nothing cannot be joined; a CRT
    # cannot refer, so it cannot add a referral to the DAC's case either (the catalogue's rights)
    refused = await api.post("cpts-31-sud", f"/v1/referrals/{ref_b}/join", {"followed_by": "dac-31"}, expect=403)
    assert refused.json()["rule"] == "join: the referral's recipient"
    wrong = await api.post("crt-31-muret", f"/v1/referrals/{ref_b}/join", {"followed_by": "crt-31-nord"}, expect=409)
    assert wrong.json()["fields"] == [{"field": "followed_by", "rule": "a structure following the person in another case"}]
    kind = await api.post("crt-31-muret", f"/v1/referrals/{ref_b}/join", {"followed_by": "dac-31"}, expect=403)
    assert "ReferralSubmitted may be published by" in kind.json()["rule"]
    await api.post("crt-31-muret", f"/v1/referrals/{ref_b}/status", {"status": "accepted"})  # the CRT follows too

    # case C: the DAC receives the person again: it is told it follows them already, and joins its own follow-up
    case_c, ref_c = await _refer(api, "cpts-31-sud", "dac-31", "Troisième demande.")
    told = await _referral(api, "dac-31", case_c, ref_c, lambda r: len(r.get("follow_up", {}).get("followed_by", [])) == 2,
                           "the DAC told of both follow-ups")
    assert told["follow_up"] == {"followed_by": ["crt-31-muret", "dac-31"]}
    own = (await api.post("dac-31", f"/v1/referrals/{ref_c}/join", {"followed_by": "dac-31"})).json()
    assert own["joined_case"] == case_a
    assert "referral_id" not in own  # no referral added: the DAC follows that case already
    closed = await _referral(api, "cpts-31-sud", case_c, ref_c, lambda r: r["status"] == "declined", "the third referral declined")
    assert closed["status_history"][-1]["reason"] == "joined the follow-up of dac-31"
    # once the DAC's own view has the referral declined (each adapter's read model follows the views
    # on its own: the CPTS's seeing it says nothing of the DAC's), a second join is refused
    await _referral(api, "dac-31", case_c, ref_c, lambda r: r["status"] == "declined", "the DAC sees its referral declined")
    twice = await api.post("dac-31", f"/v1/referrals/{ref_c}/join", {"followed_by": "dac-31"}, expect=409)
    assert twice.json()["rule"] == "join: an open referral (submitted or acknowledged)"

    # case D: the DAC asks a CPTS; the CPTS joins the CRT's follow-up: its referral goes into case B
    case_d, ref_d = await _refer(api, "dac-31", "cpts-31-nord", "Recherche de médecin traitant.")
    await _referral(api, "cpts-31-nord", case_d, ref_d, lambda r: "follow_up" in r, "the CPTS told of the follow-ups")
    joined = (await api.post("cpts-31-nord", f"/v1/referrals/{ref_d}/join", {"followed_by": "crt-31-muret"}, key="join-d")).json()
    assert joined["joined_case"] == case_b
    assert joined["case_id"] == case_b
    again = (await api.post("cpts-31-nord", f"/v1/referrals/{ref_d}/join", {"followed_by": "crt-31-muret"}, key="join-d")).json()
    assert again == joined  # a retry: the same events, once
    new_ref = joined["referral_id"]
    crt_ref = await _referral(api, "crt-31-muret", case_b, new_ref, lambda r: True, "the joined referral in the CRT's case")
    assert (crt_ref["from"], crt_ref["to"], crt_ref["summary"]) == ("cpts-31-nord", "crt-31-muret", "Recherche de médecin traitant.")
    # the CPTS sees its own referral in that case, nothing else of it
    assert (await api.view_with("cpts-31-nord", case_b, f"referral:{new_ref}"))["items"] == [f"referral:{new_ref}"]
    closed = await _referral(api, "dac-31", case_d, ref_d, lambda r: r["status"] == "declined", "the DAC's referral declined")
    assert closed["status_history"][-1]["reason"] == f"joined the follow-up of crt-31-muret (referral {new_ref})"
