"""The edge's gate on a bare ASGI app: nothing of the body is read before the caller is known,
allowed, within its rate and its size (no Kafka involved: the guard answers alone)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import SecretStr

from parcours.adapters.guard import EdgeGuard, TokenBucket
from parcours.bootstrap import AuthConfig, build_edge_auth
from parcours.topology.catalogue import Catalogue

CAT = Catalogue.load()


class NoLedger:
    async def first_use(self, name: str, until: int) -> bool:
        raise AssertionError("no token is issued here")


def _app(kind: str = "cpts", rate: float = 1000.0, max_body: int = 1000) -> tuple[FastAPI, list[str]]:
    app, refused = FastAPI(), []

    @app.post("/v1/cases/{case_id}/admission-decisions", name="AdmissionDecided")
    async def admission(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        return {"caller": request.state.caller.slug}

    @app.post("/v1/cases/{case_id}/messages", name="MessagePosted")
    async def message(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        return {"caller": request.state.caller.slug, "size": len(str(body))}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    auth = build_edge_auth(kind, CAT, NoLedger(), AuthConfig(SecretStr("s" * 32)))
    app.add_middleware(EdgeGuard, kind=kind, catalogue=CAT, auth=auth, limiter=TokenBucket(rate, 2 * rate), max_body=max_body,
                       routes=lambda: app.router.routes, on_refusal=lambda route, code: refused.append(f"{route}:{code}"))
    return app, refused


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


AUTH = {"Authorization": "Bearer dev-cpts-31-nord"}


async def test_a_cpts_posting_an_admission_decision_gets_403_whatever_its_body() -> None:
    app, refused = _app()
    async with _client(app) as c:
        for body in (b"not json at all", b'{"decision": "admitted"}', b"\xff\xfe"):
            r = await c.post("/v1/cases/c1/admission-decisions", content=body, headers=AUTH)
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "forbidden"
            assert "may not publish AdmissionDecided" in r.json()["message"]
    assert refused == ["AdmissionDecided:forbidden"] * 3


async def test_no_token_a_wrong_token_or_another_kind_is_refused_before_the_body() -> None:
    app, _ = _app()
    async with _client(app) as c:
        r = await c.post("/v1/cases/c1/messages", content=b"{{{")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/v1/cases/c1/messages", content=b"{{{", headers={"Authorization": "Bearer nope"})
        assert r.json() == {"error": "unauthorized", "message": "unknown or revoked token"}
        r = await c.post("/v1/cases/c1/messages", content=b"{{{", headers={"Authorization": "Bearer dev-dac-31"})
        assert r.status_code == 403
        assert (await c.get("/healthz")).status_code == 200  # probes need no token


async def test_a_partner_over_its_rate_gets_429_with_retry_after() -> None:
    app, refused = _app(rate=2.0)  # bursts of 4
    async with _client(app) as c:
        codes = [(await c.post("/v1/cases/c1/messages", json={"body": "x"}, headers=AUTH)).status_code for _ in range(6)]
        assert codes[:4] == [200] * 4
        assert codes[4:] == [429, 429]
        r = await c.post("/v1/cases/c1/messages", json={"body": "x"}, headers=AUTH)
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"] == "rate_limited"
        # another partner has its own budget
        other = await c.post("/v1/cases/c1/messages", json={"body": "x"}, headers={"Authorization": "Bearer dev-cpts-31-sud"})
        assert other.status_code == 200
    assert "MessagePosted:rate_limited" in refused


async def test_a_body_over_the_limit_gets_413_declared_or_streamed() -> None:
    app, _ = _app(max_body=100)
    async with _client(app) as c:
        ok = await c.post("/v1/cases/c1/messages", json={"body": "x" * 50}, headers=AUTH)
        assert ok.status_code == 200
        big = await c.post("/v1/cases/c1/messages", json={"body": "x" * 500}, headers=AUTH)
        assert big.status_code == 413
        assert big.json()["error"] == "payload_too_large"

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b'{"body": "' + b"x" * 30 + b'"}'

        streamed = await c.post("/v1/cases/c1/messages", content=chunks(), headers=AUTH)
        assert streamed.status_code == 413
        assert streamed.json()["message"] == "the body exceeds 100 bytes"

        async def small():
            yield b'{"body": '
            yield b'"short"}'

        fine = await c.post("/v1/cases/c1/messages", content=small(), headers=AUTH | {"content-type": "application/json"})
        assert fine.status_code == 200
        assert fine.json()["caller"] == "cpts-31-nord"


def test_the_token_bucket_refills_at_its_rate() -> None:
    b = TokenBucket(rate=1.0, burst=2.0)
    assert b.take("a", now=0.0) == 0
    assert b.take("a", now=0.0) == 0
    assert b.take("a", now=0.0) == pytest.approx(1.0)
    assert b.take("a", now=1.0) == 0  # one token back after a second
    assert b.take("b", now=1.0) == 0
