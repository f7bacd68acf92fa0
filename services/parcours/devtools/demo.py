"""The demo territory's story (Haute-Garonne, 31), told through the adapters' HTTP API.

Every person is synthetic. Each step carries a fixed Idempotency-Key, so its event ids, and the
case ids they open, are known before anything is posted (`demo_cases`): a cluster that holds the
whole story already is found as it is (`present`) and not seeded again, and a story cut short
(a start interrupted while seeding) is completed by seeding again, each step a retry of itself.
A step that fails raises `DemoError`: one line naming the step and what to do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from http import HTTPStatus
from typing import Any, TypeVar

import httpx

from parcours.bus.idempotency import derived_event_id
from parcours.devtools.persons import synthetic_identity
from parcours.errors import ParcoursError
from parcours.topology.registry import dev_token

T = TypeVar("T")
KIND_OF = {"dac-31": "dac", "cpts-31-nord": "cpts", "cpts-31-sud": "cpts", "crt-31-muret": "crt", "crt-31-nord": "crt"}
RUN = "demo-v1"
#: the story's cases: label -> (the structure whose referral opens it, that referral's step)
OPENED_BY = {
    "hospital discharge, admitted": ("cpts-31-nord", "a-ref"),
    "no GP, CPTS finds one": ("cpts-31-sud", "b-ref"),
    "admission commission, refused without alternative": ("dac-31", "c-ref"),
    "a second referral of a followed person, joined": ("cpts-31-sud", "d-ref"),
}
#: what to do when a step fails: the stack is up but the story could not be told on this cluster
HINT = ("the services' logs are in .parcours/logs/; if this cluster holds a story of another version, "
        "start on an empty one (`make clean`, or PARCOURS_TOPIC_PREFIX=<new prefix>)")


class DemoError(ParcoursError):
    """A step of the story failed: which one, what the adapter said, what to do."""

    def __init__(self, step: str, what: str) -> None:
        super().__init__(f"demo step {step} failed: {what}; {HINT}")
        self.step = step


def demo_cases(run: str = RUN) -> dict[str, str]:
    """{label: case_id} of the story, known before it is told: an opening referral's case id derives
    from its event id, which derives from the structure and the step's Idempotency-Key."""
    return {label: f"case-{derived_event_id(slug, f'{run}-{step}').hex[:16]}" for label, (slug, step) in OPENED_BY.items()}


class DemoClient:
    def __init__(self, urls: dict[str, str], client: httpx.AsyncClient, run: str = RUN) -> None:
        self.urls, self.client, self.run = urls, client, run

    async def post(self, slug: str, path: str, body: dict[str, Any], step: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {dev_token(slug)}", "Idempotency-Key": f"{self.run}-{step}"}
        deadline = time.monotonic() + 90
        while True:
            try:
                resp = await self.client.post(self.urls[KIND_OF[slug]] + path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                raise DemoError(step, f"{KIND_OF[slug]} adapter unreachable ({type(exc).__name__})") from None
            if resp.status_code == HTTPStatus.ACCEPTED:
                accepted: dict[str, Any] = resp.json()
                return accepted
            # 404: the processor has not shown the case to this structure yet (first start-up)
            if resp.status_code not in (404, 503) or time.monotonic() > deadline:
                raise DemoError(step, f"{resp.status_code} {_reason(resp)}")
            await asyncio.sleep(0.5)

    async def put(self, slug: str, path: str, body: dict[str, Any]) -> None:
        """A PUT (replaces what it names: seeding twice changes nothing)."""
        resp = await self.client.put(self.urls[KIND_OF[slug]] + path, json=body, headers={"Authorization": f"Bearer {dev_token(slug)}"})
        if resp.status_code != HTTPStatus.ACCEPTED:
            raise DemoError(f"PUT {path}", f"{resp.status_code} {_reason(resp)}")

    async def find(self, slug: str, query: str, expected: int) -> list[dict[str, Any]]:
        """The directory as `slug` sees it, once it holds `expected` offers (the adapters read the
        directory topic: a just published offer shows within moments)."""
        async def offers() -> list[dict[str, Any]] | None:
            resp = await self.client.get(f"{self.urls[KIND_OF[slug]]}/v1/directory{query}",
                                         headers={"Authorization": f"Bearer {dev_token(slug)}"})
            found: list[dict[str, Any]] = resp.json()["offers"] if resp.status_code == HTTPStatus.OK else []
            return found if len(found) >= expected else None
        return await _until(offers, "directory", f"the directory does not hold {expected} offers")

    async def referral(self, slug: str, case_id: str, referral_id: str,
                       probe: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        """A referral's entry in `slug`'s view, once the processor has shown it (and `probe` holds)."""
        async def entry() -> dict[str, Any] | None:
            view = await self.view(slug, case_id)
            found: dict[str, Any] | None = next((r for r in (view or {}).get("referrals", []) if r["referral_id"] == referral_id), None)
            return found if found is not None and probe(found) else None
        return await _until(entry, f"view of {slug}", f"referral {referral_id} not in {slug}'s view")

    async def view(self, slug: str, case_id: str) -> dict[str, Any] | None:
        resp = await self.client.get(f"{self.urls[KIND_OF[slug]]}/v1/cases/{case_id}",
                                     headers={"Authorization": f"Bearer {dev_token(slug)}"})
        return resp.json() if resp.status_code == HTTPStatus.OK else None


def _reason(resp: httpx.Response) -> str:
    """The adapter's message (its JSON error body), or the start of the text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:200]


async def _until(probe: Callable[[], Awaitable[T | None]], step: str, failure: str, timeout: float = 90) -> T:
    """`probe()` once it is not None, polled every half second; a DemoError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise DemoError(step, f"{failure} after {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def present(urls: dict[str, str], run: str = RUN) -> dict[str, str] | None:
    """The story's cases when the cluster holds the whole story already (its last step, the join,
    is in the DAC's view), else None. Asked once the adapters are ready (their read models caught up)."""
    cases = demo_cases(run)
    last_case = cases["a second referral of a followed person, joined"]
    last_referral = f"ref-{derived_event_id('cpts-31-sud', f'{run}-d-ref').hex[:16]}"
    async with httpx.AsyncClient(timeout=10) as client:
        d = DemoClient(urls, client, run)
        try:
            views = {case_id: await d.view("dac-31", case_id) for case_id in cases.values()}
        except httpx.HTTPError as exc:
            raise DemoError("look for the story", f"dac adapter unreachable ({type(exc).__name__})") from None
    if any(view is None for view in views.values()):
        return None
    joined = any(r["referral_id"] == last_referral and r["status"] == "declined" for r in views[last_case]["referrals"])  # type: ignore[index]
    return cases if joined else None


#: the demo's persons: synthetic identities with the test INS OIDs only (1.2.250.1.213.1.4.10 and .11)
IDENTITIES = {
    "A": synthetic_identity(1, born=date(1936, 3, 14)),  # qualified, test NIR: matched across structures by its person key
    "B": synthetic_identity(2, born=date(1951, 7, 2), status="provisional"),  # not qualified: no INS
    "C": synthetic_identity(3, born=date(1940, 11, 30), nia=True),  # qualified, test NIA
}


def person(pseudonym: str, year: int, postcode: str, who: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"pseudonym": pseudonym, "birth_year": year, "postcode": postcode}
    return out | ({"identity": IDENTITIES[who]} if who else {})


async def seed(urls: dict[str, str]) -> dict[str, str]:
    """Tell the story; return {label: case_id}."""
    async with httpx.AsyncClient(timeout=30) as client:
        d = DemoClient(urls, client)
        cases: dict[str, str] = {}

        # 0. The territory's directory: the CRTs and a CPTS publish their offers.
        offers: dict[str, dict[str, Any]] = {
            "crt-31-muret": {"title": "Accompagnement renforcé à domicile", "needs": ["home_support", "hospital_discharge"],
                             "age_min": 60, "gir_min": 1, "gir_max": 4, "departments": ["31"],
                             "postcodes": ["31600", "31120", "31410"], "capacity": 4, "waiting_days": 3, "contact": "05 61 51 00 00"},
            "crt-31-nord": {"title": "Accompagnement renforcé à domicile", "needs": ["home_support", "hospital_discharge"],
                            "age_min": 60, "gir_min": 1, "gir_max": 4, "departments": ["31"],
                            "postcodes": ["31200", "31140", "31150"], "capacity": 0, "waiting_days": 21, "contact": "05 61 52 00 00"},
            "cpts-31-sud": {"title": "Recherche de médecin traitant", "needs": ["gp_search"], "departments": ["31"],
                            "contact": "contact@cpts-31-sud.example"},
        }
        for slug, offer in offers.items():
            await d.put(slug, "/v1/directory/offers/main", offer)

        # 1. Hospital discharge: CPTS Nord -> DAC -> CRT Muret (found in the directory), admitted; consent for the CRT.
        r = await d.post("cpts-31-nord", "/v1/referrals", {
            "to_structure": "dac-31", "person": person("P-a41f07", 1936, "31600", "A"), "urgency": "soon",
            "reasons": ["situation complexe", "aidant épuisé"], "summary": "Patiente isolée, chutes répétées."}, "a-ref")
        case = cases["hospital discharge, admitted"] = r["case_id"]
        await d.post("dac-31", f"/v1/referrals/{r['referral_id']}/status", {"status": "accepted"}, "a-accept")
        await d.post("dac-31", f"/v1/cases/{case}/consents", {"grantee": "crt-31-muret", "method": "oral", "decision": "permit",
                                                             "categories": ["functional", "social", "discussion"]}, "a-consent")
        await d.post("dac-31", f"/v1/cases/{case}/evaluations", {"type": "aggir", "category": "functional", "gir": 3,
                                                                "results": {"transferts": "B", "toilette": "C"}}, "a-aggir")
        await d.post("dac-31", f"/v1/cases/{case}/evaluations", {"type": "multidimensional", "category": "medical",
                                                                "results": {"polymedication": "8 molécules"}}, "a-multi")
        found = await d.find("dac-31", "?postcode=31600&need=hospital_discharge&gir=3&age=90", len(offers))
        best = found[0]
        print(f"  directory: for a person of 90, GIR 3, in 31600, leaving hospital, the DAC finds {best['structure']} "
              f"first ({best['title']}; {best['fit']['where']}, {best['capacity']} places, {best['waiting_days']} days) "
              f"among {len(found)} offers", flush=True)
        r2 = await d.post("dac-31", "/v1/referrals", {
            "to_structure": best["structure"], "case_id": case, "person": person("P-a41f07", 1936, "31600", "A"), "urgency": "urgent",
            "reasons": ["sortie d'hospitalisation"], "context": {"type": "hospital_discharge", "date": "2026-11-25"},
            "summary": "Sortie prévue le 25/11, besoin d'un accompagnement renforcé."}, "a-ref-crt")
        await d.post("crt-31-muret", f"/v1/referrals/{r2['referral_id']}/status", {"status": "acknowledged"}, "a-ack")
        await d.post("crt-31-muret", f"/v1/cases/{case}/messages", {"body": "Visite d'évaluation à domicile jeudi 10h."}, "a-msg")
        await d.post("crt-31-muret", f"/v1/cases/{case}/admission-decisions", {
            "referral_id": r2["referral_id"], "decision": "admitted", "volet": 2, "start_date": "2026-11-26"}, "a-admit")

        # 2. No GP: CPTS Sud -> DAC; the DAC asks the CPTS to find a GP; rupture observed.
        r = await d.post("cpts-31-sud", "/v1/referrals", {
            "to_structure": "dac-31", "person": person("P-b2c913", 1951, "31120", "B"), "urgency": "routine",
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

        # 3. Refused admission without alternative, after the CRT's commission heard the DAC: DAC -> CRT Nord;
        #    the observatory counts the refusal by itself.
        r = await d.post("dac-31", "/v1/referrals", {
            "to_structure": "crt-31-nord", "person": person("P-c7d550", 1940, "31200", "C"), "urgency": "urgent",
            "reasons": ["sortie d'hospitalisation"], "context": {"type": "hospital_discharge", "date": "2026-11-24"},
            "summary": "GIR 2, domicile inadapté."}, "c-ref")
        case = cases["admission commission, refused without alternative"] = r["case_id"]
        # a week after the referral was made: the same deadline (the same request) when the demo is seeded again
        deadline = datetime.fromisoformat((await d.referral("crt-31-nord", case, r["referral_id"]))["at"]) + timedelta(days=7)
        com = await d.post("crt-31-nord", f"/v1/referrals/{r['referral_id']}/commissions", {
            "invited": ["dac-31"], "opinion_deadline": deadline.isoformat(),
            "question": "Accompagnement renforcé possible malgré un domicile inadapté ?"}, "c-commission")
        await d.post("dac-31", f"/v1/referrals/{r['referral_id']}/commissions/{com['commission_id']}/opinions", {
            "opinion": "favourable", "comment": "Aménagement du domicile engagé, aidant présent."}, "c-opinion")
        await d.post("crt-31-nord", f"/v1/cases/{case}/admission-decisions", {
            "referral_id": r["referral_id"], "decision": "refused", "volet": 2,
            "reasons": ["hors zone d'intervention"]}, "c-refuse")

        # 4. The first story's person referred again, by CPTS Sud to the DAC, under CPTS Sud's own pseudonym:
        #    her qualified INS gives the same person key, so the DAC is told it follows her already (case 1)
        #    and joins that follow-up instead of opening a second one.
        r = await d.post("cpts-31-sud", "/v1/referrals", {
            "to_structure": "dac-31", "person": person("S-77e301", 1936, "31600", "A"), "urgency": "soon",
            "reasons": ["chute à domicile"], "summary": "Chute, aidante inquiète."}, "d-ref")
        case = cases["a second referral of a followed person, joined"] = r["case_id"]
        told = await d.referral("dac-31", case, r["referral_id"], lambda ref: "follow_up" in ref)
        joined = await d.post("dac-31", f"/v1/referrals/{r['referral_id']}/join",
                              {"followed_by": told["follow_up"]["followed_by"][0]}, "d-join")
        print(f"  follow-up: a second referral of the same INS-qualified person reaches the DAC, told that {', '.join(told['follow_up']['followed_by'])} "
              f"follows the person already; it joins {'its own' if joined['joined_case'] == cases['hospital discharge, admitted'] else 'that'} "
              f"follow-up (case {joined['joined_case']}) instead of opening a second one", flush=True)
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
        if r.get("follow_up"):
            what += f"; also followed by {', '.join(r['follow_up']['followed_by'])}"
        rows.append(("referral", r["referral_id"], what))
        for c in r.get("commissions", []):
            said = ", ".join(f"{o['by']} {o['opinion']}" for o in r["opinions"] if o["commission_id"] == c["commission_id"])
            state = f"{c.get('status', '?')}, invited {', '.join(c['invited'])}; opinions: {said or 'none'}"
            rows.append(("commission", c["commission_id"], state))
    rows += [("evaluation", e["evaluation_id"], f"{e['type']} ({e['category']})" + (f", GIR {e['gir']}" if e["gir"] else "")) for e in view["evaluations"]]
    rows += [("message", m["message_id"], f"{m['by']}: {m['body'][:50]}") for m in view["messages"]]
    rows += [("consent", c["consent_id"], f"{c['decision']} {c['grantee']} {','.join(c['categories'])}") for c in view["consents"]]
    rows += [("rupture", r["rupture_id"], r["type"]) for r in view["ruptures"]]
    lines = [f"  {slug:<13} version {view['version']}"]
    lines += [f"    {kind:<11} {ident:<28} {what}" for kind, ident, what in rows]
    return "\n".join(lines)


#: the structure that shows SMART Backend Services in the demo, and the kid of its development key
SIGNING_IN = ("cpts-31-nord", "demo")


async def sign_in(urls: dict[str, str], admin_token: str) -> str:
    """SMART Backend Services, as a partner's IT system does it: a key generated for the demo
    structure (registered through the operator API, replacing the previous run's), a client
    assertion signed with it, an access token from the token endpoint the adapter's
    `/.well-known/smart-configuration` names, a read with that token. Returns what it printed."""
    from parcours.auth.client import assertion, new_key, public_jwk, token_form

    slug, kid = SIGNING_IN
    base, operator = urls[KIND_OF[slug]], {"Authorization": f"Bearer {admin_token}"}
    key = new_key("ES384", kid)
    async with httpx.AsyncClient(timeout=10) as client:
        await client.delete(f"{base}/v1/admin/structures/{slug}/keys/{kid}", headers=operator)  # the previous run's, if any
        added = await client.post(f"{base}/v1/admin/structures/{slug}/keys", json=public_jwk(key), headers=operator)
        if added.status_code != HTTPStatus.OK:
            raise DemoError("register a key", f"{added.status_code} {_reason(added)}")
        endpoint = (await client.get(f"{base}/.well-known/smart-configuration")).json()["token_endpoint"]
        scope = "system/EpisodeOfCare.rs system/ServiceRequest.c"

        async def token() -> dict[str, Any] | None:  # the adapter learns the key from the registry topic
            r = await client.post(endpoint, data=token_form(assertion(slug, key, endpoint), scope))
            return r.json() if r.status_code == HTTPStatus.OK else None
        granted = await _until(token, "sign in", "the token endpoint refused the demo key's assertion", timeout=30)
        cases = await client.get(f"{base}/v1/cases", headers={"Authorization": f"Bearer {granted['access_token']}"})
        if cases.status_code != HTTPStatus.OK:
            raise DemoError("read with an access token", f"{cases.status_code} {_reason(cases)}")
    said = (f"  SMART Backend Services: {slug} registers a generated ES384 key ({kid}), signs a client assertion for the "
            f"token endpoint {base}/.well-known/smart-configuration names, gets a {granted['expires_in']} s access token "
            f"for '{granted['scope']}' and reads its {len(cases.json()['cases'])} case(s) with it")
    print(said, flush=True)
    return said
