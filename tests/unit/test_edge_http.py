"""The adapter's HTTP refusals that need no Kafka: every one in the documented shape, naming the
field and the rule, before anything is published (the app runs without its lifespan: no client
of Kafka is ever started)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from parcours.adapters.http.app import create_app
from parcours.bootstrap import build_adapter
from parcours.bus.kafkaio import KafkaAccess
from parcours.security.sealing import Sealer
from parcours.topology.catalogue import Catalogue

NOWHERE = KafkaAccess("127.0.0.1:9")  # nothing listens: a test that reached Kafka would fail


def _client(kind: str, **policy: Any) -> httpx.AsyncClient:
    adapter = build_adapter(kind, Catalogue.load(), NOWHERE, Sealer(SecretStr("k" * 40)), **policy)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(adapter)), base_url="http://edge")


def _shape(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()
    assert set(body) <= {"error", "message", "rule", "fields"}
    assert {"error", "message"} <= set(body)
    return body


@pytest.mark.parametrize("url", ["https://127.0.0.1/hook", "https://localhost:8443/x", "https://10.1.2.3/x",
                                 "https://192.168.0.10/x", "https://169.254.169.254/latest/meta-data", "https://[::1]/x"])
async def test_a_webhook_into_the_operators_own_networks_is_refused(url: str) -> None:
    async with _client("crt", webhook_https_only=True, webhook_private_networks=False) as c:
        r = await c.put("/v1/webhook", json={"url": url}, headers={"Authorization": "Bearer dev-crt-31-muret"})
    assert r.status_code == 422, r.text
    assert _shape(r)["fields"][0]["field"] == "url"
    assert "is not" in r.json()["fields"][0]["rule"]


async def test_a_plain_http_webhook_is_refused_in_production() -> None:
    async with _client("crt", webhook_https_only=True, webhook_private_networks=False) as c:
        r = await c.put("/v1/webhook", json={"url": "http://partner.example/hook"}, headers={"Authorization": "Bearer dev-crt-31-muret"})
    assert r.status_code == 422
    assert _shape(r)["fields"] == [{"field": "url", "rule": "https only (production profile)"}]


async def test_bad_input_gets_a_4xx_in_the_documented_shape_never_a_5xx() -> None:
    auth = {"Authorization": "Bearer dev-crt-31-muret"}
    async with _client("crt") as c:
        r = await c.post("/v1/cases/c1/admission-decisions", headers=auth,
                         json={"referral_id": "r1", "decision": "admitted", "volet": 2, "start_date": "not-a-date"})
        assert r.status_code == 422
        assert _shape(r)["fields"][0]["field"] == "start_date"
        r = await c.post("/v1/cases/c1/messages", headers=auth | {"content-type": "application/json"}, content=b"\xff\xfe{")
        assert r.status_code in (400, 422)
        _shape(r)
        deep = b"[" * 100_000 + b"]" * 100_000
        r = await c.post("/v1/cases/c1/messages", headers=auth | {"content-type": "application/json"}, content=deep)
        assert r.status_code in (400, 422)
        _shape(r)
        r = await c.get("/v1/no-such-thing", headers=auth)
        assert r.status_code == 404
        assert _shape(r)["error"] == "not_found"
        r = await c.get("/v1/inbox?after=-1", headers=auth)
        assert r.status_code == 422
        assert _shape(r)["fields"][0]["field"] == "after"


async def test_every_refusal_is_in_the_openapi_document() -> None:
    async with _client("dac") as c:
        doc = (await c.get("/openapi.json")).json()
    post = doc["paths"]["/v1/referrals"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "422", "429", "503"} <= set(post)
    assert post["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


async def test_the_territorial_coordination_endpoints_are_in_the_openapi_document() -> None:
    async with _client("crt") as c:
        doc = (await c.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in ("/v1/referrals/{referral_id}/commissions", "/v1/referrals/{referral_id}/commissions/{commission_id}/opinions",
                 "/v1/referrals/{referral_id}/join"):
        operation = paths[path]["post"]
        assert "202" in operation["responses"], path
        assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"]), path
    assert "/v1/directory" in paths
    schemas = doc["components"]["schemas"]
    assert set(schemas["CommissionIn"]["required"]) == {"invited", "opinion_deadline"}
    assert schemas["OpinionIn"]["properties"]["opinion"]["enum"] == ["favourable", "unfavourable", "reserved"]
    assert "alternative" in schemas["AdmissionIn"]["properties"]
    assert schemas["JoinIn"]["required"] == ["followed_by"]


@pytest.mark.parametrize("url", ["http://G\u007f[(\u00bb c/x", "http://[::1", "https://exa mple.org/", "https://:80/x",
                                 "ftp://partner.example/x", "https://partner.example:99999/x"])
async def test_a_malformed_webhook_url_is_a_422_naming_the_field(url: str) -> None:
    async with _client("crt") as c:
        r = await c.put("/v1/webhook", json={"url": url}, headers={"Authorization": "Bearer dev-crt-31-muret"})
    assert r.status_code == 422, r.text
    assert _shape(r)["fields"][0]["field"] == "url"


async def test_each_adapter_serves_its_kinds_asyncapi_document_without_a_token() -> None:
    async with _client("crt") as c:
        whole = await c.get("/asyncapi.json")
        one = await c.get("/asyncapi.json", params={"structure": "crt-31-nord"})
        other = await c.get("/asyncapi.json", params={"structure": "dac-31"})
    assert whole.status_code == 200, whole.text
    assert whole.json()["asyncapi"] == "3.0.0"
    assert whole.json()["channels"]["views"]["parameters"]["structure"]["enum"] == ["crt-31-muret", "crt-31-nord"]
    assert one.json()["channels"]["inbox"]["parameters"]["structure"]["enum"] == ["crt-31-nord"]
    assert other.status_code == 404
    assert _shape(other)["error"] == "not_found"


async def test_not_ready_while_its_read_model_does_not_follow_kafka() -> None:
    """Without its lifespan the read model's tail never started: the adapter is not ready, and says
    why before it even asks Kafka (a tail that ended would serve stale views while looking alive)."""
    async with _client("dac") as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert "not following Kafka" in _shape(r)["message"]
