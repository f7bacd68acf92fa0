"""The reference story of issue 4, end to end through the adapters' HTTP API on the real broker."""

from __future__ import annotations

import httpx

from tests.api import Api, referral_body
from tests.stack import Stack, eventually


async def test_reference_story(stack: Stack) -> None:
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        api = Api(stack, client)
        # a CPTS refers a person to the DAC
        r1 = (await api.post("cpts-31-nord", "/v1/referrals", referral_body("dac-31"))).json()
        case, ref1 = r1["case_id"], r1["referral_id"]
        await api.view_with("dac-31", case, f"referral:{ref1}")
        # the DAC accepts, records the consent for the CRT, two evaluations, refers to the CRT
        acc = (await api.post("dac-31", f"/v1/referrals/{ref1}/status", {"status": "accepted"})).json()
        consent = (await api.post("dac-31", f"/v1/cases/{case}/consents", {
            "grantee": "crt-31-muret", "categories": ["functional", "social", "discussion"],
            "decision": "permit", "method": "oral"})).json()["consent_id"]
        ev_f = (await api.post("dac-31", f"/v1/cases/{case}/evaluations", {
            "type": "aggir", "category": "functional", "results": {"transferts": "B"}, "gir": 3})).json()["evaluation_id"]
        ev_m = (await api.post("dac-31", f"/v1/cases/{case}/evaluations", {
            "type": "multidimensional", "category": "medical", "results": {"polymedication": "oui"}})).json()["evaluation_id"]
        r2 = (await api.post("dac-31", "/v1/referrals", referral_body(
            "crt-31-muret", case_id=case, context={"type": "hospital_discharge", "date": "2026-11-25"}))).json()
        ref2 = r2["referral_id"]
        assert r2["case_id"] == case
        # the CRT posts a message and admits the person
        await api.view_with("crt-31-muret", case, f"referral:{ref2}")
        msg = (await api.post("crt-31-muret", f"/v1/cases/{case}/messages", {"body": "Visite d'évaluation jeudi."})).json()["message_id"]
        adm = (await api.post("crt-31-muret", f"/v1/cases/{case}/admission-decisions", {
            "referral_id": ref2, "decision": "admitted", "volet": 2, "start_date": "2026-11-26"})).json()

        # each structure's view, item by item
        everything = {f"referral:{ref1}", f"status:{acc['event_id']}", f"consent:{consent}", f"evaluation:{ev_f}",
                      f"evaluation:{ev_m}", f"referral:{ref2}", f"message:{msg}", f"admission:{adm['event_id']}"}
        await api.view_with("dac-31", case, f"admission:{adm['event_id']}")
        await api.view_with("dac-31", case, f"message:{msg}")
        dac = await api.view("dac-31", case)
        assert dac is not None
        assert set(dac["items"]) == everything
        crt = await api.view_with("crt-31-muret", case, f"admission:{adm['event_id']}")
        assert set(crt["items"]) == {f"referral:{ref2}", f"admission:{adm['event_id']}", f"consent:{consent}",
                                     f"evaluation:{ev_f}", f"message:{msg}"}
        assert [e["evaluation_id"] for e in crt["evaluations"]] == [ev_f]
        (ref2_view,) = crt["referrals"]
        assert ref2_view["admission"]["decision"] == "admitted"
        assert ref2_view["context"]["type"] == "hospital_discharge"
        cpts = await api.view("cpts-31-nord", case)
        assert cpts is not None
        assert set(cpts["items"]) == {f"referral:{ref1}", f"status:{acc['event_id']}"}
        assert cpts["referrals"][0]["status"] == "accepted"
        for outsider in ("crt-31-nord", "cpts-31-sud"):
            resp = await api.get(outsider, f"/v1/cases/{case}")
            assert resp.status_code == 404
            assert resp.json()["error"] == "not_found"
        assert (await api.get("crt-31-nord", "/v1/cases/no-such-case")).json() == resp.json() | {
            "message": "no case no-such-case visible to crt-31-nord"}

        # the DAC records a deny for the CRT on functional: the evaluation leaves the CRT's view
        inbox_before = (await api.get("crt-31-muret", "/v1/inbox")).json()["next_after"]
        await api.post("dac-31", f"/v1/cases/{case}/consents", {
            "grantee": "crt-31-muret", "categories": ["functional"], "decision": "deny", "method": "written"})
        after_deny = await api.view_without("crt-31-muret", case, f"evaluation:{ev_f}")
        assert after_deny is not None
        assert after_deny["evaluations"] == []
        assert f"message:{msg}" in after_deny["items"]

        async def redaction() -> list:
            notes = (await api.get("crt-31-muret", f"/v1/inbox?after={inbox_before}&wait=2")).json()["notifications"]
            return [n for n in notes if n["type"] == "redaction"]
        (notice,) = await eventually(redaction, 20, "redaction notice")
        assert notice["item"] == f"evaluation:{ev_f}"
        assert notice["case_id"] == case
        assert set(notice) == {"notification_id", "type", "case_id", "item", "view_version", "sequence"}  # ids only
