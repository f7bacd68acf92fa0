"""The demo territory's story (Haute-Garonne, 31), told through the adapters' HTTP API.

Every person is synthetic. Each step carries a fixed Idempotency-Key, so seeding twice (two
`make run`s on the same broker) changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from http import HTTPStatus
from typing import Any

import httpx

from parcours.topology.registry import dev_token

KIND_OF = {"dac-31": "dac", "cpts-31-nord": "cpts", "cpts-31-sud": "cpts", "crt-31-muret": "crt", "crt-31-nord": "crt"}


class DemoClient:
    def __init__(self, urls: dict[str, str], client: httpx.AsyncClient, run: str = "demo-v1") -> None:
        self.urls, self.client, self.run = urls, client, run

    async def post(self, slug: str, path: str, body: dict[str, Any], step: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {dev_token(slug)}", "Idempotency-Key": f"{self.run}-{step}"}
        deadline = time.monotonic() + 90
        while True:
            resp = await self.client.post(self.urls[KIND_OF[slug]] + path, json=body, headers=headers)
            if resp.status_code == HTTPStatus.ACCEPTED:
                accepted: dict[str, Any] = resp.json()
                return accepted
            # 404: the processor has not shown the case to this structure yet (first start-up)
            if resp.status_code not in (404, 503) or time.monotonic() > deadline:
                raise RuntimeError(f"demo step {step}: {resp.status_code} {resp.text}")
            await asyncio.sleep(0.5)

    async def view(self, slug: str, case_id: str) -> dict[str, Any] | None:
        resp = await self.client.get(f"{self.urls[KIND_OF[slug]]}/v1/cases/{case_id}",
                                     headers={"Authorization": f"Bearer {dev_token(slug)}"})
        return resp.json() if resp.status_code == HTTPStatus.OK else None


def person(pseudonym: str, year: int, postcode: str) -> dict[str, Any]:
    return {"pseudonym": pseudonym, "birth_year": year, "postcode": postcode}


async def seed(urls: dict[str, str]) -> dict[str, str]:
    """Tell the story; return {label: case_id}."""
    async with httpx.AsyncClient(timeout=30) as client:
        d = DemoClient(urls, client)
        cases: dict[str, str] = {}

        # 1. Hospital discharge: CPTS Nord -> DAC -> CRT Muret, admitted; consent for the CRT.
        r = await d.post("cpts-31-nord", "/v1/referrals", {
            "to_structure": "dac-31", "person": person("P-a41f07", 1936, "31600"), "urgency": "soon",
            "reasons": ["situation complexe", "aidant épuisé"], "summary": "Patiente isolée, chutes répétées."}, "a-ref")
        case = cases["hospital discharge, admitted"] = r["case_id"]
        await d.post("dac-31", f"/v1/referrals/{r['referral_id']}/status", {"status": "accepted"}, "a-accept")
        await d.post("dac-31", f"/v1/cases/{case}/consents", {"grantee": "crt-31-muret", "method": "oral", "decision": "permit",
                                                             "categories": ["functional", "social", "discussion"]}, "a-consent")
        await d.post("dac-31", f"/v1/cases/{case}/evaluations", {"type": "aggir", "category": "functional", "gir": 3,
                                                                "results": {"transferts": "B", "toilette": "C"}}, "a-aggir")
        await d.post("dac-31", f"/v1/cases/{case}/evaluations", {"type": "multidimensional", "category": "medical",
                                                                "results": {"polymedication": "8 molécules"}}, "a-multi")
        r2 = await d.post("dac-31", "/v1/referrals", {
            "to_structure": "crt-31-muret", "case_id": case, "person": person("P-a41f07", 1936, "31600"), "urgency": "urgent",
            "reasons": ["sortie d'hospitalisation"], "context": {"type": "hospital_discharge", "date": "2026-11-25"},
            "summary": "Sortie prévue le 25/11, besoin d'un accompagnement renforcé."}, "a-ref-crt")
        await d.post("crt-31-muret", f"/v1/referrals/{r2['referral_id']}/status", {"status": "acknowledged"}, "a-ack")
        await d.post("crt-31-muret", f"/v1/cases/{case}/messages", {"body": "Visite d'évaluation à domicile jeudi 10h."}, "a-msg")
        await d.post("crt-31-muret", f"/v1/cases/{case}/admission-decisions", {
            "referral_id": r2["referral_id"], "decision": "admitted", "volet": 2, "start_date": "2026-11-26"}, "a-admit")

        # 2. No GP: CPTS Sud -> DAC; the DAC asks the CPTS to find a GP; rupture observed.
        r = await d.post("cpts-31-sud", "/v1/referrals", {
            "to_structure": "dac-31", "person": person("P-b2c913", 1951, "31120"), "urgency": "routine",
            "reasons": ["coordination complexe"], "summary": "Diabète déséquilibré, pas de médecin traitant."}, "b-ref")
        case = cases["no GP, CPTS finds one"] = r["case_id"]
        await d.post("dac-31", f"/v1/referrals/{r['referral_id']}/status", {"status": "accepted"}, "b-accept")
        r2 = await d.post("dac-31", "/v1/referrals", {
            "to_structure": "cpts-31-sud", "case_id": case, "person": person("P-b2c913", 1951, "31120"), "urgency": "soon",
            "reasons": ["recherche de médecin traitant"], "summary": "Trouver un médecin traitant sur le secteur."}, "b-ask-gp")
        await d.post("dac-31", "/v1/ruptures", {"territory": "31", "type": "no_gp", "case_id": case,
                                                "description": "Sans médecin traitant depuis 8 mois."}, "b-rupture")
        await d.post("cpts-31-sud", f"/v1/referrals/{r2['referral_id']}/status",
                     {"status": "completed", "reason": "Médecin traitant trouvé."}, "b-done")

        # 3. Refused admission without alternative: DAC -> CRT Nord, refused; a rupture.
        r = await d.post("dac-31", "/v1/referrals", {
            "to_structure": "crt-31-nord", "person": person("P-c7d550", 1940, "31200"), "urgency": "urgent",
            "reasons": ["sortie d'hospitalisation"], "context": {"type": "hospital_discharge", "date": "2026-11-24"},
            "summary": "GIR 2, domicile inadapté."}, "c-ref")
        case = cases["refused admission"] = r["case_id"]
        await d.post("crt-31-nord", f"/v1/cases/{case}/admission-decisions", {
            "referral_id": r["referral_id"], "decision": "refused", "volet": 2,
            "reasons": ["hors zone d'intervention"]}, "c-refuse")
        await d.post("dac-31", "/v1/ruptures", {"territory": "31", "type": "refused_admission_without_alternative",
                                                "case_id": case, "description": "Aucune alternative sur le secteur."}, "c-rupture")
        return cases


def render(slug: str, view: dict[str, Any] | None) -> str:
    """One structure's view of one case as a readable table."""
    if view is None:
        return f"  {slug:<13} (nothing visible: the case does not exist for this structure)"
    rows = []
    for r in view["referrals"]:
        what = f"{r.get('from', '?')} -> {r.get('to', '?')}, {r['status']}"
        if r["admission"]:
            what += f", admission {r['admission']['decision']}"
        rows.append(("referral", r["referral_id"], what))
    rows += [("evaluation", e["evaluation_id"], f"{e['type']} ({e['category']})" + (f", GIR {e['gir']}" if e["gir"] else "")) for e in view["evaluations"]]
    rows += [("message", m["message_id"], f"{m['by']}: {m['body'][:50]}") for m in view["messages"]]
    rows += [("consent", c["consent_id"], f"{c['decision']} {c['grantee']} {','.join(c['categories'])}") for c in view["consents"]]
    rows += [("rupture", r["rupture_id"], r["type"]) for r in view["ruptures"]]
    lines = [f"  {slug:<13} version {view['version']}"]
    lines += [f"    {kind:<11} {ident:<28} {what}" for kind, ident, what in rows]
    return "\n".join(lines)
