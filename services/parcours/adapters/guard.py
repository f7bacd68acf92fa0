"""The edge's gate, before any body is read: who is calling (401), may its kind do this (403),
is it within its rate (429 with Retry-After), is its body within the size Kafka can take (413).

It is a plain ASGI middleware, so nothing here depends on the body: a CPTS posting an admission
decision gets 403 whatever it sends, even bytes that are not JSON. Tokens are compared by their
SHA-256 in constant time (`Registry.by_token`); the authenticated structure is left in the
request's state for the handlers.

Who is calling and what its token allows is `adapters.auth.EdgeAuth`'s answer: an access token
(SMART Backend Services) is checked offline, and its scopes must cover the route (403 otherwise,
after the kind's own rights); a static token (development profile) carries every right of its kind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from parcours.adapters.auth import ADMIN_PREFIX, JWKS_PATH, SMART_PATHS, TOKEN_PATH, EdgeAuth
from parcours.adapters.errors import AdapterError, PayloadTooLarge, TooManyRequests, Unauthorized, from_domain
from parcours.adapters.outcomes import MEDIA_TYPE, is_fhir, refusal
from parcours.auth.scopes import Scopes
from parcours.publishing.errors import PublishingError
from parcours.publishing.rules import check_kind
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Structure

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: routes anyone may call: probes, metrics, the API description
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc",
                        "/asyncapi.json", "/fhir/r4/metadata", TOKEN_PATH, JWKS_PATH, *SMART_PATHS})
#: and the FHIR bridge's own definitions (its extensions and code systems: what metadata points to)
OPEN_PREFIXES = ("/fhir/r4/StructureDefinition/", "/fhir/r4/CodeSystem/", "/fhir/r4/ValueSet/")


@dataclass
class TokenBucket:
    """`rate` requests per second per token on average, bursts of `burst`."""

    rate: float
    burst: float
    _level: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go; else the seconds to wait before one would."""
        now = time.monotonic() if now is None else now
        tokens, at = self._level.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._level[key] = (tokens - 1, now)
            return 0.0
        self._level[key] = (tokens, now)
        return (1 - tokens) / self.rate


class EdgeGuard:
    def __init__(self, app: App, *, kind: str, catalogue: Catalogue, auth: EdgeAuth, limiter: TokenBucket, max_body: int,
                 routes: Callable[[], list[Any]], on_refusal: Callable[[str, str], None]) -> None:
        self.app, self.kind, self.catalogue, self.auth = app, kind, catalogue, auth
        self.limiter, self.max_body, self.routes, self.on_refusal = limiter, max_body, routes, on_refusal
        self.event_types = set(catalogue.event_topic)
        self._table: list[tuple[Any, Any, str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        caller = None
        try:
            if scope["path"].startswith(ADMIN_PREFIX):  # the operators, not a partner
                self.auth.operator(self._bearer(scope))
            else:
                caller = self._admit(scope, route)
            receive = await self._sized(scope, receive)
        except AdapterError as exc:
            self.on_refusal(route or "unknown", exc.code)
            await _answer(send, exc, fhir=is_fhir(scope["path"]))
            return
        if caller is not None:
            scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope, route: str | None) -> Structure:
        """The partner, if its token, its kind's rights, its token's scopes and its rate allow the route."""
        caller, granted = self._authenticate(scope)
        if route in self.event_types:
            try:
                check_kind(self.catalogue, caller, route)
            except PublishingError as exc:
                raise from_domain(exc) from None
        self.auth.check_scope(granted, route)
        wait = self.limiter.take(caller.slug)
        if wait:
            raise TooManyRequests(f"more than {self.limiter.rate:g} requests/s for {caller.slug}; retry later",
                                  retry_after=math.ceil(wait))
        return caller

    async def _sized(self, scope: Scope, receive: Receive) -> Receive:
        """413 for a body over the limit, declared or (chunked) counted as it arrives."""
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            raise PayloadTooLarge(f"the body of {declared} bytes exceeds {self.max_body} bytes",
                                  rule="the largest record the catalogue's topics accept")
        if declared is None:  # chunked: read up to the limit here, then hand it on
            return await self._buffered(receive)
        return receive

    def _route(self, scope: Scope) -> str | None:
        """The name of the route the request goes to (its event type for the event routes)."""
        if self._table is None:  # routes are all added before the first request
            self._table = [(r.path_regex, r.methods, str(r.name)) for r in self.routes()
                           if hasattr(r, "path_regex") and getattr(r, "methods", None)]
        path, method, root = scope["path"], scope["method"], scope.get("root_path", "")
        if root and path.startswith(root):  # as Starlette's router matches: below the root path
            path = path[len(root):]
        for regex, methods, name in self._table:
            if method in methods and regex.match(path):
                return name
        return None

    def _authenticate(self, scope: Scope) -> tuple[Structure, Scopes | None]:
        return self.auth.caller(self._bearer(scope))

    @staticmethod
    def _bearer(scope: Scope) -> str:
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not authorization.lower().startswith("bearer "):
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        return str(authorization[7:]).strip()

    async def _buffered(self, receive: Receive) -> Receive:
        """A body sent without Content-Length, counted as it arrives and replayed to the app."""
        chunks: list[bytes] = []
        seen, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                chunks = []
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                raise PayloadTooLarge(f"the body exceeds {self.max_body} bytes",
                                      rule="the largest record the catalogue's topics accept")
            chunks.append(chunk)
            more = message.get("more_body", False)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        return replayed


def _content_length(scope: Scope) -> int | None:
    raw = dict(scope["headers"]).get(b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


async def _answer(send: Send, exc: AdapterError, *, fhir: bool = False) -> None:
    """The refusal as the JSON API's error body, or (a FHIR route) as an OperationOutcome."""
    if fhir:
        body, media = refusal(exc.status, exc.message, rule=exc.rule, fields=exc.fields), MEDIA_TYPE.encode()
    else:
        body, media = orjson.dumps(exc.body()), b"application/json"
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:  # noqa: PLR2004 - the status itself
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, TooManyRequests):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
