"""SMART Backend Services without Kafka: the token endpoint's checks of a client assertion (valid,
expired, wrong audience, wrong key, replayed jti), the scopes it grants (what was asked within the
kind's rights), and the edge's offline check of the access token (403 when its scopes do not
cover the route, before any body is read)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import SecretStr

from parcours.adapters.guard import EdgeGuard, TokenBucket
from parcours.adapters.http.app import create_app
from parcours.auth import scopes as sc
from parcours.auth.client import assertion, new_key, public_jwk, token_form
from parcours.auth.errors import InvalidClient, InvalidScope, TokenRefused
from parcours.bootstrap import AuthConfig, build_adapter, build_edge_auth
from parcours.bus.kafkaio import KafkaAccess
from parcours.security.sealing import Sealer
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Registry, default_registry

URL = "http://edge"
TOKEN_URL = f"{URL}/auth/token"
ES, RS, OTHER = new_key("ES384", "k-es"), new_key("RS384", "k-rs"), new_key("ES384", "k-es")  # OTHER: same kid, another key


def _catalogue() -> Catalogue:
    base = default_registry()
    keyed = {"cpts-31-nord": (public_jwk(ES),), "crt-31-muret": (public_jwk(RS),)}
    registry = Registry({slug: dataclasses.replace(s, jwks=keyed.get(slug, ())) for slug, s in base.structures.items()})
    return Catalogue.load(registry=registry)


CAT = _catalogue()


class Ledger:
    """The jti ledger, in memory (on Kafka: the idempotency claims, shared by every instance)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    async def first_use(self, name: str, until: int) -> bool:
        fresh = name not in self.used
        self.used.add(name)
        return fresh


def _auth(kind: str = "cpts", clock: list[float] | None = None, *, static: bool = True) -> Any:
    auth: Any = build_edge_auth(kind, CAT, Ledger(), AuthConfig(SecretStr("s" * 32), URL, static_tokens=static))
    if clock is not None:
        def now() -> float:
            return clock[0]
        auth.service.now = auth.tokens.now = now
    return auth


async def test_a_valid_assertion_gets_a_short_lived_token_for_the_scopes_its_kind_may_hold() -> None:
    auth = _auth()
    answer = await auth.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL), "system/*.cruds"))
    assert answer["token_type"] == "bearer"  # noqa: S105 - the OAuth token type
    assert answer["expires_in"] == 300
    granted = sc.parse(answer["scope"])
    assert granted == sc.grantable(CAT, "cpts")
    assert "Observation" not in granted  # a CPTS records no evaluation (catalogue: EvaluationRecorded by dac, crt)
    assert "c" in granted["ServiceRequest"]
    verdict = auth.tokens.check(answer["access_token"])
    assert (verdict.slug, verdict.scopes) == ("cpts-31-nord", granted)
    rs = await _auth("crt").service.exchange(token_form(assertion("crt-31-muret", RS, TOKEN_URL), "system/Task.c system/EpisodeOfCare.rs"))
    assert rs["scope"] == "system/EpisodeOfCare.rs system/Task.c"


async def test_the_scopes_granted_are_the_intersection_of_the_asked_and_the_kinds() -> None:
    auth = _auth()
    answer = await auth.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL),
                                                    "system/ServiceRequest.cu system/Observation.c launch openid"))
    assert answer["scope"] == "system/ServiceRequest.c"
    with pytest.raises(InvalidScope):
        await auth.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL), "system/Observation.c"))
    with pytest.raises(InvalidScope):
        sc.parse("system/Patient.rc")  # interactions out of SMART's order


@pytest.mark.parametrize(("case", "make", "says"), [
    ("expired", lambda: assertion("cpts-31-nord", ES, TOKEN_URL, now=1_000_000, lifetime_s=60), "expired"),
    ("too long", lambda: assertion("cpts-31-nord", ES, TOKEN_URL, lifetime_s=3600), "more than 300 s"),
    ("wrong audience", lambda: assertion("cpts-31-nord", ES, "http://elsewhere/auth/token"), "aud must be this token endpoint"),
    ("wrong key", lambda: assertion("cpts-31-nord", OTHER, TOKEN_URL), "does not verify"),
    ("another structure's key", lambda: assertion("crt-31-muret", ES, TOKEN_URL), "no registered key"),
    ("sub differs", lambda: assertion("cpts-31-nord", ES, TOKEN_URL, sub="cpts-31-sud"), "sub must equal"),
    ("unknown structure", lambda: assertion("cpts-99", ES, TOKEN_URL), "not a registered structure"),
    ("no jti", lambda: assertion("cpts-31-nord", ES, TOKEN_URL, jti=""), "needs a jti"),
    ("not a JWT", lambda: "abc.def", "not a signed JWT"),
])
async def test_a_bad_assertion_is_refused_as_invalid_client(case: str, make: Any, says: str) -> None:
    with pytest.raises(InvalidClient, match=says):
        await _auth().service.exchange(token_form(make(), "system/*.rs"))


async def test_a_replayed_jti_is_refused() -> None:
    auth = _auth()
    signed = assertion("cpts-31-nord", ES, TOKEN_URL, jti="once")
    await auth.service.exchange(token_form(signed, "system/*.rs"))
    with pytest.raises(InvalidClient, match="jti was used before"):
        await auth.service.exchange(token_form(signed, "system/*.rs"))
    with pytest.raises(InvalidClient, match="jti was used before"):  # even in a new assertion
        await auth.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL, jti="once"), "system/*.rs"))


async def test_the_edge_refuses_an_expired_a_foreign_or_a_tampered_token() -> None:
    clock = [1_700_000_000.0]
    auth = _auth(clock=clock)
    token = (await auth.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL, now=clock[0]), "system/*.rs")))["access_token"]
    assert auth.tokens.check(token).slug == "cpts-31-nord"
    with pytest.raises(TokenRefused, match="does not verify"):
        auth.tokens.check(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    other_issuer = _auth()  # another secret: another key
    with pytest.raises(TokenRefused):
        other_issuer.tokens.check(token)
    dac = build_edge_auth("dac", CAT, Ledger(), AuthConfig(SecretStr("s" * 32), URL))  # same key, the DAC adapters' audience
    with pytest.raises(TokenRefused, match="another audience"):
        dac.tokens.check(token)
    clock[0] += 301
    with pytest.raises(TokenRefused, match="expired"):
        auth.tokens.check(token)


async def test_the_issuers_key_is_rotated_in_three_steps_without_a_refused_token() -> None:
    """Every instance first accepts the new key, then signs with it while accepting the old one,
    then (a token's lifetime later) forgets the old one: at each step, a token any instance
    issued is accepted by every instance of that step or the next."""
    old, new = SecretStr("o" * 32), SecretStr("n" * 32)

    def edge(sign: SecretStr, *accepted: SecretStr) -> Any:
        return build_edge_auth("cpts", CAT, Ledger(), AuthConfig(sign, URL, accepted))

    steps = [[edge(old)], [edge(old), edge(old, new)], [edge(old, new), edge(new, old)], [edge(new, old), edge(new)], [edge(new)]]
    for step in steps:  # a rolling restart: two configurations live side by side
        for issuer in step:
            token = (await issuer.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL), "system/*.rs")))["access_token"]
            for checker in step:
                assert checker.tokens.check(token).slug == "cpts-31-nord"
    signing, accepting = edge(new, old), edge(old)
    assert [k["kid"] for k in signing.service.jwks()["keys"]] == [signing.service.key.kid, accepting.service.key.kid]
    leftover = (await accepting.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL), "system/*.rs")))["access_token"]
    with pytest.raises(TokenRefused, match="does not verify"):  # the old key forgotten: its tokens refused
        edge(new).tokens.check(leftover)


def _guarded(auth: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/cases/{case_id}/messages", name="MessagePosted")
    async def message(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        return {"caller": request.state.caller.slug}

    @app.get("/v1/cases", name="list_cases")
    async def cases(request: Request) -> dict[str, Any]:
        return {"caller": request.state.caller.slug}

    app.add_middleware(EdgeGuard, kind="cpts", catalogue=CAT, auth=auth, limiter=TokenBucket(1000, 2000), max_body=1000,
                       routes=lambda: app.router.routes, on_refusal=lambda route, code: None)
    return app


async def test_a_scope_that_does_not_cover_the_route_gets_403_before_the_body() -> None:
    auth = _auth()
    reader = (await auth.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL), "system/EpisodeOfCare.rs")))["access_token"]
    writer = (await auth.service.exchange(token_form(assertion("cpts-31-nord", ES, TOKEN_URL), "system/Communication.c")))["access_token"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_guarded(auth)), base_url=URL) as c:
        r = await c.post("/v1/cases/c1/messages", content=b"not json", headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 403, r.text
        assert "system/Communication.c" in r.json()["message"]
        assert (await c.get("/v1/cases", headers={"Authorization": f"Bearer {reader}"})).json() == {"caller": "cpts-31-nord"}
        assert (await c.post("/v1/cases/c1/messages", json={}, headers={"Authorization": f"Bearer {writer}"})).status_code == 200
        assert (await c.get("/v1/cases", headers={"Authorization": f"Bearer {writer}"})).status_code == 403
        r = await c.get("/v1/cases", headers={"Authorization": "Bearer a.b.c"})
        assert r.status_code == 401


async def test_production_accepts_only_tokens_from_the_issuer() -> None:
    auth = _auth(static=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_guarded(auth)), base_url=URL) as c:
        assert (await c.get("/v1/cases", headers={"Authorization": "Bearer dev-cpts-31-nord"})).status_code == 401


def test_every_partner_route_of_an_adapter_needs_a_scope() -> None:
    app = create_app(build_adapter("dac", CAT, KafkaAccess("127.0.0.1:9"), Sealer(SecretStr("k" * 40))))
    from parcours.adapters.guard import OPEN_PATHS, OPEN_PREFIXES

    partner = [r.name for r in app.router.routes  # type: ignore[attr-defined]
               if getattr(r, "methods", None) and r.path not in OPEN_PATHS  # type: ignore[attr-defined]
               and not r.path.startswith((*OPEN_PREFIXES, "/v1/admin/"))]  # type: ignore[attr-defined]
    assert partner
    assert [name for name in partner if sc.need(name) is None] == []


async def test_the_token_endpoint_over_http_answers_oauth_errors_and_names_itself() -> None:
    adapter = build_adapter("cpts", CAT, KafkaAccess("127.0.0.1:9"), Sealer(SecretStr("k" * 40)),
                            auth=AuthConfig(SecretStr("s" * 32), URL))
    adapter.auth.service.jtis = Ledger()  # type: ignore[union-attr]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(adapter)), base_url=URL) as c:
        for path in ("/.well-known/smart-configuration", "/fhir/r4/.well-known/smart-configuration"):
            conf = (await c.get(path)).json()
            assert conf["token_endpoint"] == TOKEN_URL
            assert conf["token_endpoint_auth_signing_alg_values_supported"] == ["ES384", "RS384"]
            assert "client-confidential-asymmetric" in conf["capabilities"]
        keys = (await c.get("/auth/jwks")).json()["keys"]
        assert keys
        assert "d" not in keys[0]
        r = await c.post("/auth/token", data=token_form(assertion("cpts-31-nord", ES, TOKEN_URL), "system/*.rs"))
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        token = r.json()["access_token"]
        r = await c.post("/auth/token", data=token_form(assertion("cpts-31-nord", OTHER, TOKEN_URL), "system/*.rs"))
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_client"
        r = await c.post("/auth/token", data={"grant_type": "password"})
        assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
        r = await c.post("/v1/cases/c1/messages", content=b"{", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403  # a read-only token
        documented = (await c.get("/openapi.json")).json()["paths"]["/auth/token"]["post"]["responses"]
    for status in ("400", "401"):  # OAuth's error shape, as answered (the API fuzz checks answers against it)
        assert documented[status]["content"]["application/json"]["schema"]["$ref"].endswith("/OAuthErrorBody")


async def test_an_external_issuers_tokens_are_checked_with_the_keys_its_discovery_names() -> None:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from parcours.auth.discovery import Discovery
    from parcours.auth.tokens import EXTERNAL_ALGORITHMS, AccessTokens

    idp_key = RSAKey.generate_key(2048, {"kid": "idp-1"})
    issuer = "https://idp.example/realms/parcours"

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"issuer": issuer, "jwks_uri": "https://idp.example/keys",
                                             "token_endpoint": "https://idp.example/token"})
        return httpx.Response(200, json={"keys": [idp_key.as_dict(private=False)]})

    discovery = Discovery(issuer, transport=httpx.MockTransport(answer))
    tokens = AccessTokens(lambda: discovery.keys, issuer=issuer, audience="urn:parcours:parcours:adapter-cpts",
                          algorithms=EXTERNAL_ALGORITHMS)
    claims = {"iss": issuer, "aud": ["urn:parcours:parcours:adapter-cpts", "account"], "azp": "cpts-31-nord",
              "sub": "8a1c-service-account", "exp": 4_000_000_000, "scope": "openid system/EpisodeOfCare.rs"}
    token = jwt.encode({"alg": "RS256", "kid": "idp-1"}, claims, idp_key)
    with pytest.raises(TokenRefused, match="keys are not known yet"):
        tokens.check(token)
    await discovery.refresh()
    assert discovery.token_endpoint == "https://idp.example/token"  # noqa: S105 - a URL
    verdict = tokens.check(token)
    assert (verdict.slug, verdict.scopes) == ("cpts-31-nord", {"EpisodeOfCare": frozenset("rs")})
    with pytest.raises(TokenRefused, match="another issuer"):
        tokens.check(jwt.encode({"alg": "RS256", "kid": "idp-1"}, {**claims, "iss": "https://other.example"}, idp_key))


def test_registry_changes_join_rotate_and_leave_and_the_acls_follow() -> None:
    from parcours.topology import changes
    from parcours.topology.errors import RegistryError

    registry = CAT.registry
    joined = changes.add({"slug": "cpts-31-est", "kind": "cpts", "territory": "31", "name": "CPTS Est",
                          "jwks": {"keys": [public_jwk(ES)]}})(registry)
    assert Registry.from_records(joined.records()) == joined  # what the topic holds reads back the same
    rotated = changes.update("cpts-31-est", {}, add_keys=[public_jwk(RS)])(joined)
    assert [k["kid"] for k in rotated.structures["cpts-31-est"].jwks] == ["k-es", "k-rs"]
    rotated = changes.update("cpts-31-est", {}, remove_kids=["k-es"])(rotated)
    assert [k["kid"] for k in rotated.structures["cpts-31-est"].jwks] == ["k-rs"]
    with pytest.raises(RegistryError, match="does not change kind"):
        changes.update("cpts-31-est", {"kind": "dac"})(rotated)
    with pytest.raises(RegistryError, match="private parts"):
        changes.add({"slug": "crt-31-x", "kind": "crt", "territory": "31", "name": "x", "jwks": [ES.as_dict(private=True)]})(registry)
    left = changes.remove("cpts-31-est")(rotated)
    assert "cpts-31-est" in left.retired
    assert "cpts-31-est" not in left.structures

    during, after = CAT.with_registry(rotated), CAT.with_registry(left)
    assert "User:cpts-31-est" in {a.principal for a in during.acls()}
    assert "User:cpts-31-est" not in {a.principal for a in after.acls()}  # its own rights go
    views = after.per_structure("views", "cpts-31-est").name  # its topics stay, the processor keeps its views
    assert {a.principal for a in after.acls() if a.name == views} == {"User:svc-processor"}
    assert "cpts-31-est" not in after.principals()
