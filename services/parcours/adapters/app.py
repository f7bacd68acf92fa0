"""The adapter service for one structure kind: the composition root and the HTTP handlers.

Handlers are thin: authenticate, check the kind's rights (from the topic catalogue), build the
event (validated by the contract), publish it, and answer 202 once Kafka acknowledged it.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from parcours.adapters import requests as rq
from parcours.adapters.errors import AdapterError, Conflict, Forbidden, Invalid, NotFound, NotReady, Unauthorized, http_error
from parcours.adapters.guard import OPEN_PATHS, EdgeGuard, TokenBucket
from parcours.adapters.outcomes import MEDIA_TYPE as FHIR_MEDIA_TYPE
from parcours.adapters.outcomes import is_fhir, refusal
from parcours.adapters.webhooks import RetryPolicy, WebhookDelivery, check_endpoint
from parcours.bus.idempotency import IdempotencyClaims, body_hash, derived_event_id
from parcours.bus.kafkaio import KafkaAccess
from parcours.bus.publisher import Publisher
from parcours.casefile.followups import followed_elsewhere, person_digest
from parcours.contract.directory import Age, Gir, Need, Postcode, build_offer, encode_offer
from parcours.contract.errors import EventValidationError
from parcours.contract.models import Identifier, build_event
from parcours.errors import ParcoursError
from parcours.ops.metrics import cache_discards
from parcours.publishing.rules import check_stateful, check_stateless, current_recipient, eventually_referral, eventually_view
from parcours.readmodel.store import EdgeStore
from parcours.security.sealing import Sealer
from parcours.territory import commission
from parcours.territory.directory import Query as DirectoryQuery
from parcours.territory.directory import rank
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import Structure

log = logging.getLogger("parcours.adapter")
#: FastAPI's OpenTelemetry hooks, off: Parcours exports Prometheus metrics, and asking whether
#: OpenTelemetry is configured cost ~4% of a POST (README, Performance)
NO_OPENTELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
#: how long a write waits for the caller's view of its case before answering 404
VIEW_WAIT_S = 3.0


class AdapterMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.accepted = Counter("parcours_events_accepted_total", "Events accepted onto canonical topics", ["type", "kind", "channel"], registry=r)
        self.refused = Counter("parcours_events_refused_total", "Requests refused", ["type", "kind", "reason", "channel"], registry=r)
        self.request_seconds = Histogram("parcours_http_request_seconds", "HTTP request duration", ["route", "method"],
                                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.inbox_backlog = Gauge("parcours_inbox_notifications", "Notifications held in each structure's inbox", ["structure"], registry=r)
        self.webhook_backlog = Gauge("parcours_webhook_backlog_notifications", "Notifications not yet delivered by webhook", ["structure"], registry=r)
        self.webhook_deliveries = Counter("parcours_webhook_deliveries_total", "Webhook deliveries that succeeded", ["structure"], registry=r)
        self.webhook_retries = Counter("parcours_webhook_retries_total", "Webhook delivery retries", ["structure"], registry=r)
        self.webhook_delivering = Gauge("parcours_webhook_delivering", "1 for each structure whose webhooks this instance delivers", ["structure"], registry=r)
        self.webhook_failures = Counter("parcours_webhook_failures_total", "Notifications dead-lettered after the last attempt", ["structure"], registry=r)
        self.up = Gauge("parcours_adapter_up", "1 while the adapter runs", ["kind"], registry=r)
        self.cache_discarded = cache_discards(r)


@dataclass
class Adapter:
    """Everything an adapter's routes use: the composition root (`create_app`) takes it whole, so a
    test may pass fakes for any part."""

    kind: str
    catalogue: Catalogue
    publisher: Publisher
    store: EdgeStore
    metrics: AdapterMetrics
    sealer: Sealer
    delivery: WebhookDelivery
    limiter: TokenBucket
    claims: IdempotencyClaims
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: webhook endpoints: https only (production), or also in private networks (dev)
    webhook_https_only: bool = False
    webhook_private_networks: bool = True


class FieldError(BaseModel):
    field: str
    rule: str


class ErrorBody(BaseModel):
    """Every refusal: a stable `error` code, a `message`, the `rule` it enforces, each bad field."""

    error: str
    message: str
    rule: str | None = None
    fields: list[FieldError] | None = None


#: the refusals any route may answer, in the OpenAPI document
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "the body is not readable (not JSON, not UTF-8, nested too deep)"),
        (401, "no token, or an unknown one"),
        (403, "a rule forbids it (named in `rule`)"),
        (404, "no such case or referral visible to the caller"),
        (409, "the Idempotency-Key was used with another body"),
        (413, "the body is larger than a record may be"),
        (422, "a field breaks a rule (each named in `fields`)"),
        (429, "over the token's rate; see Retry-After"),
        (500, "an unexpected error (logged)"),
        (503, "Kafka is unreachable; nothing was written"),
    )}


def build_adapter(kind: str, catalogue: Catalogue, kafka: KafkaAccess, sealer: Sealer, retry: RetryPolicy | None = None,
                  rate_limit_per_s: float = 100.0, *, webhook_https_only: bool = False,
                  webhook_private_networks: bool = True, store_path: Path | None = None) -> Adapter:
    """The real collaborators of an adapter of `kind`, on `kafka` as the kind's own principal;
    `store_path`: its read model's file (one per instance; default: a temporary one)."""
    metrics = AdapterMetrics()
    publisher = Publisher(kafka, catalogue)
    slugs = [s.slug for s in catalogue.registry.of_kind(kind)]
    store = EdgeStore(kafka, catalogue, slugs, path=store_path, observatory=kind in catalogue.topic("observatory").readers,
                      audit=True, territory=True)
    store.on_discard = lambda reason: metrics.cache_discarded.labels("read_model", reason).inc()
    retry = retry or RetryPolicy()
    delivery = WebhookDelivery(store, kafka, publisher, catalogue, metrics, retry, sealer, kind)
    claims = IdempotencyClaims(kafka, catalogue.topic("idempotency").name, publisher)
    return Adapter(kind, catalogue, publisher, store, metrics, sealer, delivery,
                   TokenBucket(rate_limit_per_s, 2 * rate_limit_per_s), claims, retry,
                   webhook_https_only=webhook_https_only, webhook_private_networks=webhook_private_networks)


def create_app(adapter: Adapter) -> FastAPI:
    """The HTTP application of one adapter: its lifespan, its gate, its error mapping, its routes."""
    kind = adapter.kind

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        adapter.store.start()
        adapter.claims.start()
        adapter.delivery.start()
        adapter.metrics.up.labels(kind).set(1)
        yield
        await adapter.delivery.stop()
        await adapter.claims.stop()
        await adapter.store.stop()
        await adapter.publisher.close()

    app = FastAPI(
        telemetry=NO_OPENTELEMETRY,
        title=f"Parcours {kind.upper()} adapter",
        version="1",
        description=f"The Parcours partner edge for {kind.upper()} structures. Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.adapter = adapter
    _install_errors(app, adapter)
    _referral_routes(app, adapter)
    _commission_routes(app, adapter)
    _follow_up_routes(app, adapter)
    _item_routes(app, adapter)
    _view_routes(app, adapter)
    _webhook_routes(app, adapter)
    _directory_routes(app, adapter)
    _ops_routes(app, adapter)
    _document_headers(app)
    from parcours.adapters import fhir  # the FHIR routes use this module's handlers' path

    fhir.install(app, adapter)
    # before any body is read: authentication, the kind's rights, the rate, the size
    max_body = min(t.max_value_bytes for t in adapter.catalogue.canonical())
    app.add_middleware(EdgeGuard, kind=kind, catalogue=adapter.catalogue, max_body=max_body, limiter=adapter.limiter,
                       routes=lambda: app.router.routes,
                       on_refusal=lambda route, code: adapter.metrics.refused.labels(route, kind, code, "http").inc())
    return app


# --- errors -> precise statuses ----------------------------------------------------------

def _answer(request: Request, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    """A refusal in the documented shape: the JSON API's error body, or on the FHIR routes an
    OperationOutcome saying the same."""
    if is_fhir(request.url.path):
        fields = body.get("fields")
        return Response(refusal(status, str(body["message"]), rule=body.get("rule"), fields=fields if isinstance(fields, list) else None),
                        status_code=status, media_type=FHIR_MEDIA_TYPE, headers=headers)
    return JSONResponse(body, status_code=status, headers=headers)


def _channel(request: Request) -> str:
    return "fhir" if is_fhir(request.url.path) else "http"


def _install_errors(app: FastAPI, adapter: Adapter) -> None:
    @app.exception_handler(AdapterError)
    async def adapter_error(request: Request, exc: AdapterError) -> Response:
        adapter.metrics.refused.labels(_route_type(request), adapter.kind, exc.code, _channel(request)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == HTTPStatus.UNAUTHORIZED else None
        return _answer(request, exc.status, exc.body(), headers)

    @app.exception_handler(ParcoursError)
    async def area_error(request: Request, exc: ParcoursError) -> Response:
        mapped = http_error(exc)
        return await (unexpected(request, exc) if mapped is None else adapter_error(request, mapped))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = [{"field": _field_of(e["loc"]), "rule": e["msg"]} for e in exc.errors()]
        adapter.metrics.refused.labels(_route_type(request), adapter.kind, "invalid", _channel(request)).inc()
        return _answer(request, 422, Invalid("the request is invalid", fields=fields).body())

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Starlette's own refusals (unknown path, method, unreadable body) in the documented shape."""
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < HTTPStatus.INTERNAL_SERVER_ERROR else "error")
        adapter.metrics.refused.labels(_route_type(request), adapter.kind, code, _channel(request)).inc()
        return _answer(request, exc.status_code, {"error": code, "message": str(exc.detail)}, exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        """A bug: logged with its type and route (never the body), answered in the documented shape."""
        log.error("unexpected error", extra={"route": _route_type(request), "error": type(exc).__name__}, exc_info=exc)
        return _answer(request, 500, {"error": "internal", "message": "an unexpected error; it was logged"})


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}


def _field_of(loc: Any) -> str:
    """The field a validation error names: the body's path, or the query/path/header parameter."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        return ".".join(parts[1:]) or "body"
    return ".".join(parts[1:]) if len(parts) > 1 else (parts[0] if parts else "request")


def _route_type(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "name", None) or "unknown"


# --- the caller and its headers ------------------------------------------------------------
# Read from the request, not declared as FastAPI dependencies: solving them cost a fifth of a
# POST (README, Performance). `_document_headers` declares them in the OpenAPI document instead.

IDEMPOTENCY_KEY_MAX = 200


def caller_of(request: Request) -> Structure:
    """The structure the edge guard authenticated."""
    structure = getattr(request.state, "caller", None)
    if not isinstance(structure, Structure):
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return structure


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and len(key) > IDEMPOTENCY_KEY_MAX:
        raise Invalid("the request is invalid", fields=[
            {"field": "Idempotency-Key", "rule": f"String should have at most {IDEMPOTENCY_KEY_MAX} characters"}])
    return key


_AUTHORIZATION = {"name": "Authorization", "in": "header", "required": False, "description": "Bearer <the structure's token>",
                  "schema": {"type": "string"}}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX},
                "description": "a retried request with the same key yields the same event, once"}


def _document_headers(app: FastAPI) -> None:
    """The OpenAPI document, with the headers the handlers read themselves: Authorization on
    every route but the open ones, Idempotency-Key on every POST that publishes an event."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            for path, operations in doc.get("paths", {}).items():
                if path in OPEN_PATHS:
                    continue
                for method, operation in operations.items():
                    params = operation.setdefault("parameters", [])
                    params.append(_AUTHORIZATION)
                    tags = operation.get("tags", [])
                    if method == "post" and ("events" in tags or ("fhir" in tags and not path.endswith("/Subscription"))):
                        params.append(_IDEMPOTENCY)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


# --- handlers --------------------------------------------------------------------------------

async def _record_access(adapter: Adapter, caller: Structure, case_id: str) -> None:
    """An `accessed` audit record: who read which case's view, when (no content)."""
    at = datetime.now(UTC)
    record = {"audit_id": f"{case_id}:accessed:{caller.slug}:{uuid.uuid4().hex}", "change": "accessed",
              "structure": caller.slug, "case_id": case_id, "at": at.isoformat().replace("+00:00", "Z")}
    await adapter.publisher.send(adapter.catalogue.topic("audit").name, case_id.encode(),
                                 json.dumps(record, sort_keys=True).encode())


async def _visible_case(store: EdgeStore, caller: Structure, case_id: str, wait: float = 0.0) -> dict[str, Any]:
    view = await eventually_view(store, caller.slug, case_id, wait)
    if view is None:
        raise NotFound(f"no case {case_id} visible to {caller.slug}")
    return view


Build = Callable[[str], tuple[dict[str, Any], dict[str, Any]]]


async def _submit(adapter: Adapter, request: Request, caller: Structure, key: str | None, body: Any, event_type: str,
                  build: Build, channel: str = "http") -> dict[str, Any]:
    """Every POST's path: idempotency, event build + validation, rules, publish, answer. `body`:
    the validated request body, or (FHIR) the resource as posted."""
    cat = adapter.catalogue
    event_id = derived_event_id(caller.slug, key)
    fields, answer = build(event_id.hex[:16])
    data = {"event_id": str(event_id), "occurred_at": datetime.now(UTC), "source": caller.slug, **fields}
    try:
        event = build_event(event_type, data)
    except EventValidationError as exc:
        raise Invalid(str(exc), fields=[{"field": f, "rule": r} for f, r in exc.errors]) from None
    check_stateless(cat, caller, event)
    digest = body_hash(request.url.path, body if isinstance(body, dict) else body.model_dump(mode="json")) if key else ""
    if not (key and adapter.claims.accepted(caller.slug, key, digest)):  # a retry was checked when first accepted
        # a partner often writes right after opening a case: give the processor a moment
        await check_stateful(adapter.store, caller, event, wait=VIEW_WAIT_S)
    if key:  # a valid request claims its key; the first claim decides the key's body (409 for another)
        first = await adapter.claims.claim(caller.slug, key, digest, event.occurred_at)
        event = event.model_copy(update={"occurred_at": first})  # a retry publishes the very same event
    await adapter.publisher.publish(event)
    adapter.metrics.accepted.labels(event_type, caller.kind, channel).inc()
    return {"event_id": str(event.event_id), "case_id": event.case_id, **answer}


def _on_case(case_id: str, id_field: str | None, prefix: str, body: Any) -> Build:
    """Build function for an event on an existing case that creates an item `prefix-<id>`."""
    def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
        fields = {"case_id": case_id, **body.model_dump()}
        if id_field is None:
            return fields, {}
        fields[id_field] = f"{prefix}-{short}"
        return fields, {id_field: fields[id_field]}
    return build


def _referral_routes(app: FastAPI, adapter: Adapter) -> None:
    """Referrals and their statuses: decode the body, build the event, check the rules, publish."""
    store = adapter.store

    @app.post("/v1/referrals", status_code=202, name="ReferralSubmitted", tags=["events"])
    async def post_referral(request: Request, body: rq.ReferralIn) -> dict[str, Any]:
        """Refer a person to another structure; opens a new case unless `case_id` names one of yours."""
        caller, key = caller_of(request), idempotency_key(request)
        if body.case_id is not None:
            await _visible_case(store, caller, body.case_id, VIEW_WAIT_S)

        def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            referral_id = f"ref-{short}"
            fields = body.model_dump(exclude={"case_id"})
            fields |= {"case_id": body.case_id or f"case-{short}", "referral_id": referral_id}
            return fields, {"referral_id": referral_id}

        return await _submit(adapter, request, caller, key, body, "ReferralSubmitted", build)

    @app.post("/v1/referrals/{referral_id}/status", status_code=202, name="ReferralStatusChanged", tags=["events"])
    async def post_status(request: Request, referral_id: str, body: rq.StatusIn) -> dict[str, Any]:
        """Acknowledge, accept, decline, redirect, complete (recipient) or withdraw (sender) a referral."""
        caller, key = caller_of(request), idempotency_key(request)
        build = await _on_referral(store, caller, referral_id, body)
        return await _submit(adapter, request, caller, key, body, "ReferralStatusChanged", build)



async def _on_referral(store: EdgeStore, caller: Structure, referral_id: str, body: Any, fixed: dict[str, Any] | None = None,
                       new_id: tuple[str, str] | None = None) -> Build:
    """Build function for an event on a referral the caller sees (its case from the read model):
    `fixed` fields from the path, and `new_id` (field, prefix) the id of an item it creates."""
    found = await eventually_referral(store, caller.slug, referral_id, VIEW_WAIT_S)
    if found is None:
        raise NotFound(f"no referral {referral_id} visible to {caller.slug}")

    def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
        answer = {"referral_id": referral_id, **(fixed or {})}
        if new_id is not None:
            answer[new_id[0]] = f"{new_id[1]}-{short}"
        return {"case_id": found[0], **body.model_dump(), **answer}, answer
    return build


#: a referral still waiting for its recipient's answer: what a join passes on
OPEN_REFERRAL = frozenset({"submitted", "acknowledged"})


def _with_follow_up(store: EdgeStore, caller: Structure, case_id: str, referral: dict[str, Any]) -> dict[str, Any]:
    """A referral the caller receives, with the structures following its person in another case
    (`follow_up.followed_by`: their slugs, nothing of those cases), when there are any."""
    person = referral.get("person")
    if not person or current_recipient(referral) != caller.slug:
        return referral
    others = followed_elsewhere(store.followups(person_digest(person["pseudonym"])), case_id)
    return {**referral, "follow_up": {"followed_by": others}} if others else referral


def _follow_up_routes(app: FastAPI, adapter: Adapter) -> None:
    """One person, one coordinated follow-up: the recipient of a referral joins the case that
    another structure already follows instead of opening a second one."""
    store = adapter.store

    @app.post("/v1/referrals/{referral_id}/join", status_code=202, name="FollowUpJoined", tags=["events"])
    async def join(request: Request, referral_id: str, body: rq.JoinIn) -> dict[str, Any]:
        """(The referral's recipient) Join the follow-up of `followed_by` (one of the structures
        `GET /v1/cases/{case}` names under the referral's `follow_up`) instead of opening a second
        one: this referral is declined as joined; when `followed_by` is another structure, your
        referral to it, with this referral's content, is added to the case it follows (your kind
        must be one that refers: the catalogue's ReferralSubmitted rights)."""
        caller, key = caller_of(request), idempotency_key(request)
        found = await eventually_referral(store, caller.slug, referral_id, VIEW_WAIT_S)
        if found is None or not found[1].get("person"):
            raise NotFound(f"no referral {referral_id} visible to {caller.slug}")
        case_id, ref = found
        if current_recipient(ref) != caller.slug:
            raise Forbidden(f"only the recipient ({current_recipient(ref)}) may join another follow-up",
                            rule="join: the referral's recipient")
        entries = store.followups(person_digest(ref["person"]["pseudonym"]))
        joined = next((c for c, followers in entries if c != case_id and body.followed_by in followers), None)
        # the key stands for this body *and* the case joined: a retry that would land elsewhere is a 409
        claimed = {**body.model_dump(), "joined_case": joined}
        retry = key is not None and adapter.claims.accepted(caller.slug, f"{key}/declined", body_hash(request.url.path, claimed))
        if ref["status"] not in OPEN_REFERRAL and not retry:  # withdrawn, or already answered: nothing to pass on
            raise Conflict(f"referral {referral_id} is {ref['status']}", rule="join: an open referral (submitted or acknowledged)")
        if joined is None:
            raise Conflict(f"{body.followed_by} follows no other case of this referral's person",
                           rule="join: a follow-up named in the referral's follow_up.followed_by",
                           fields=[{"field": "followed_by", "rule": "a structure following the person in another case"}])
        answer: dict[str, Any] = {"joined_case": joined}
        reason = f"joined the follow-up of {body.followed_by}"
        if body.followed_by != caller.slug:  # its own follow-up needs no referral: the caller follows that case already
            content = {k: ref[k] for k in ("person", "reasons", "urgency", "context", "summary")}

            def referral(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
                new_id = f"ref-{short}"
                return ({**content, "case_id": joined, "referral_id": new_id, "to_structure": body.followed_by},
                        {"referral_id": new_id})

            answer |= await _submit(adapter, request, caller, key, claimed, "ReferralSubmitted", referral)
            reason += f" (referral {answer['referral_id']})"

        def declined(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            return {"case_id": case_id, "referral_id": referral_id, "status": "declined", "reason": reason}, {}

        closed = await _submit(adapter, request, caller, f"{key}/declined" if key else None, claimed, "ReferralStatusChanged", declined)
        return {**answer, "declined": {"event_id": closed["event_id"], "referral_id": referral_id}}


def _commission_routes(app: FastAPI, adapter: Adapter) -> None:
    """A CRT's admission commission on a referral it received, and the invited structures' opinions."""
    store = adapter.store

    @app.post("/v1/referrals/{referral_id}/commissions", status_code=202, name="CommissionOpened", tags=["events"])
    async def open_commission(request: Request, referral_id: str, body: rq.CommissionIn) -> dict[str, Any]:
        """(CRT, the referral's recipient) Open an admission commission: invite structures to give an
        opinion before `opinion_deadline`; they become parties of the referral. One at a time."""
        caller, key = caller_of(request), idempotency_key(request)
        build = await _on_referral(store, caller, referral_id, body, new_id=("commission_id", "com"))
        return await _submit(adapter, request, caller, key, body, "CommissionOpened", build)

    @app.post("/v1/referrals/{referral_id}/commissions/{commission_id}/opinions", status_code=202, name="OpinionGiven",
              tags=["events"])
    async def give_opinion(request: Request, referral_id: str, commission_id: str, body: rq.OpinionIn) -> dict[str, Any]:
        """(An invited structure) Your opinion, until the commission's deadline; a later one replaces it."""
        caller, key = caller_of(request), idempotency_key(request)
        build = await _on_referral(store, caller, referral_id, body, {"commission_id": commission_id})
        return await _submit(adapter, request, caller, key, body, "OpinionGiven", build)


def _item_routes(app: FastAPI, adapter: Adapter) -> None:
    """The items of a case (and territorial ruptures): one POST per event type."""

    @app.post("/v1/cases/{case_id}/evaluations", status_code=202, name="EvaluationRecorded", tags=["events"])
    async def post_evaluation(request: Request, case_id: str, body: rq.EvaluationIn) -> dict[str, Any]:
        caller, key = caller_of(request), idempotency_key(request)
        return await _submit(adapter, request, caller, key, body, "EvaluationRecorded", _on_case(case_id, "evaluation_id", "eval", body))

    @app.post("/v1/cases/{case_id}/admission-decisions", status_code=202, name="AdmissionDecided", tags=["events"])
    async def post_admission(request: Request, case_id: str, body: rq.AdmissionIn) -> dict[str, Any]:
        caller, key = caller_of(request), idempotency_key(request)
        build = _on_case(case_id, None, "", body)

        def with_referral(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            fields, _ = build(short)
            return fields, {"referral_id": body.referral_id}

        return await _submit(adapter, request, caller, key, body, "AdmissionDecided", with_referral)

    @app.post("/v1/cases/{case_id}/consents", status_code=202, name="ConsentRecorded", tags=["events"])
    async def post_consent(request: Request, case_id: str, body: rq.ConsentIn) -> dict[str, Any]:
        caller, key = caller_of(request), idempotency_key(request)
        return await _submit(adapter, request, caller, key, body, "ConsentRecorded", _on_case(case_id, "consent_id", "consent", body))

    @app.post("/v1/cases/{case_id}/messages", status_code=202, name="MessagePosted", tags=["events"])
    async def post_message(request: Request, case_id: str, body: rq.MessageIn) -> dict[str, Any]:
        caller, key = caller_of(request), idempotency_key(request)
        return await _submit(adapter, request, caller, key, body, "MessagePosted", _on_case(case_id, "message_id", "msg", body))

    @app.post("/v1/ruptures", status_code=202, name="RuptureReported", tags=["events"])
    async def post_rupture(request: Request, body: rq.RuptureIn) -> dict[str, Any]:
        caller, key = caller_of(request), idempotency_key(request)
        def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            rid = f"rupture-{short}"
            return {"rupture_id": rid, **body.model_dump()}, {"rupture_id": rid}

        return await _submit(adapter, request, caller, key, body, "RuptureReported", build)


def _view_routes(app: FastAPI, adapter: Adapter) -> None:
    """The caller's consent-filtered views, its inbox feed and (DAC) the observatory."""
    cat, store = adapter.catalogue, adapter.store

    @app.get("/v1/cases/{case_id}", tags=["views"])
    async def get_case(request: Request, case_id: str) -> dict[str, Any]:
        caller = caller_of(request)
        view = await _visible_case(store, caller, case_id)
        await _record_access(adapter, caller, case_id)  # no record, no read: 503 when Kafka cannot take it
        now = datetime.now(UTC)  # each commission's state (open, deliberating, decided) at the time of the read
        referrals = [_with_follow_up(store, caller, case_id, commission.annotated(r, now)) for r in view["referrals"]]
        return {**view, "referrals": referrals}

    @app.get("/v1/cases/{case_id}/disclosures", tags=["views"])
    async def disclosures(request: Request, case_id: str) -> dict[str, Any]:
        """Right of access: for the items you authored in this case, who received them (or lost
        them), when, and on which legal basis."""
        caller = caller_of(request)
        await _visible_case(store, caller, case_id)
        records = [r for r in store.disclosures(caller.slug, case_id) if r["structure"] != caller.slug]
        return {"case_id": case_id, "structure": caller.slug, "disclosures": [
            {k: r[k] for k in ("item", "structure", "change", "basis", "ref", "at", "cause")} for r in records]}

    @app.get("/v1/cases", tags=["views"])
    async def list_cases(request: Request, after: Annotated[str, Query(max_length=200)] = "",
                         limit: Annotated[int, Query(ge=1, le=1000)] = 1000) -> dict[str, Any]:
        """Your cases in `case_id` order, `limit` at a time: pass the last `case_id` as `after`."""
        caller = caller_of(request)
        views = [v for v in (store.view(caller.slug, cid) for cid in store.cases(caller.slug, after, limit)) if v is not None]
        return {"structure": caller.slug, "next_after": views[-1]["case_id"] if len(views) == limit else None, "cases": [
            {"case_id": v["case_id"], "version": v["version"], "updated_at": v["updated_at"], "referrals": len(v["referrals"])}
            for v in views
        ]}

    @app.get("/v1/inbox", tags=["views"])
    async def inbox(request: Request, after: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    wait: Annotated[float, Query(ge=0, le=60)] = 0) -> dict[str, Any]:
        caller = caller_of(request)
        notes = await store.wait_notifications(caller.slug, after, limit, wait)
        adapter.metrics.inbox_backlog.labels(caller.slug).set(store.inbox_size(caller.slug))
        return {"structure": caller.slug, "notifications": notes,
                "next_after": notes[-1]["sequence"] if notes else after}

    @app.get("/v1/observatory", tags=["views"])
    async def observatory(request: Request) -> dict[str, Any]:
        caller = caller_of(request)
        spec = cat.topic("observatory")
        if caller.kind not in spec.readers:
            raise Forbidden(f"a {caller.kind} may not read the observatory", rule=f"topics/catalogue.yaml: observatory readers {sorted(spec.readers)}")
        return {"ruptures": [{"territory": t, "week": w, "type": ty, "count": n} for t, w, ty, n in store.observatory_counts()]}


def _directory_routes(app: FastAPI, adapter: Adapter) -> None:
    """The territory's shared resource directory: each structure publishes its offers; every
    structure reads them all, ranked for a person's postcode, need, GIR and age."""
    cat, store = adapter.catalogue, adapter.store
    topic = cat.topic("directory").name

    @app.put("/v1/directory/offers/{offer_id}", status_code=202, tags=["directory"])
    async def put_offer(request: Request, offer_id: Annotated[Identifier, PathParam()], body: rq.OfferIn) -> dict[str, Any]:
        """Publish (or replace) an offer of your structure: what, for whom, where, capacity, contact.
        No person data. Answered (202) once Kafka holds it; it shows in `GET /v1/directory` moments after."""
        caller = caller_of(request)
        try:
            offer = build_offer({**body.model_dump(), "structure": caller.slug, "offer_id": offer_id, "updated_at": datetime.now(UTC)})
        except EventValidationError as exc:
            raise Invalid(str(exc), fields=[{"field": f, "rule": r} for f, r in exc.errors]) from None
        await adapter.publisher.send(topic, offer.key.encode(), encode_offer(offer))
        return offer.model_dump(mode="json")

    @app.delete("/v1/directory/offers/{offer_id}", status_code=202, tags=["directory"])
    async def delete_offer(request: Request, offer_id: Annotated[Identifier, PathParam()]) -> dict[str, Any]:
        """Withdraw an offer of your structure (idempotent)."""
        caller = caller_of(request)
        key = f"{caller.slug}/{offer_id}"
        await adapter.publisher.send(topic, key.encode(), None)
        return {"withdrawn": key}

    @app.get("/v1/directory", tags=["directory"])
    async def directory(request: Request, postcode: Annotated[Postcode | None, Query()] = None,
                        need: Annotated[Need | None, Query()] = None, gir: Annotated[Gir | None, Query()] = None,
                        age: Annotated[Age | None, Query()] = None) -> dict[str, Any]:
        """Every offer of the territory's structures, best fit first (README, "Resource directory"):
        an offer's `structure` is what a referral's `to_structure` names."""
        caller_of(request)
        ranked = rank(store.offers(), DirectoryQuery(postcode, need, gir, age))
        return {"query": {"postcode": postcode, "need": need, "gir": gir, "age": age},
                "offers": [{**o.model_dump(mode="json"), "fit": f.as_dict()} for o, f in ranked]}


def _webhook_routes(app: FastAPI, adapter: Adapter) -> None:
    cat, store = adapter.catalogue, adapter.store

    @app.put("/v1/webhook", tags=["webhooks"])
    async def put_webhook(request: Request, body: rq.WebhookIn) -> dict[str, Any]:
        caller = caller_of(request)
        await check_endpoint(body.url, https_only=adapter.webhook_https_only,
                             private_networks=adapter.webhook_private_networks)
        secret = body.secret or secrets.token_urlsafe(32)
        # the signing secret travels sealed: Kafka readers without the key never see it
        registration = {"url": body.url, "secret": adapter.sealer.seal(secret),
                        "from_sequence": store.last_sequence(caller.slug)}
        await adapter.publisher.send(cat.topic("webhooks").name, f"endpoint/{caller.slug}".encode(), json.dumps(registration).encode())
        return {"url": body.url, "secret": secret, "signature_header": "X-Parcours-Signature",
                "from_sequence": registration["from_sequence"]}


def _ops_routes(app: FastAPI, adapter: Adapter) -> None:
    store = adapter.store

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "kind": adapter.kind}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> dict[str, Any]:
        if not await adapter.publisher.ping():
            raise NotReady("Kafka is unreachable")
        if not store.caught_up.is_set():
            raise NotReady("views are still loading")
        if not adapter.claims.caught_up.is_set():
            raise NotReady("idempotency keys are still loading")
        return {"status": "ready", "kind": adapter.kind,
                "read_model": {"resumed": store.resumed, "offsets_read_at_start": store.records_at_start}}

    documents: dict[str | None, dict[str, Any]] = {}

    @app.get("/asyncapi.json", tags=["ops"])
    async def asyncapi_document(structure: Annotated[str | None, Query(max_length=100)] = None) -> dict[str, Any]:
        """The AsyncAPI 3.0 document of what this kind's structures (or one `structure` of this
        kind) may use on Kafka, from the topic catalogue and the schemas."""
        from parcours.contract.schemas import default_schema_set
        from parcours.topology import asyncapi

        known = adapter.catalogue.registry.structures
        if structure is not None and (structure not in known or known[structure].kind != adapter.kind):
            raise NotFound(f"no {adapter.kind} structure {structure}")
        if structure not in documents:
            documents[structure] = asyncapi.render(adapter.catalogue, default_schema_set(), kind=adapter.kind, structure=structure)
        return documents[structure]

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(adapter.metrics.registry), media_type=CONTENT_TYPE_LATEST)
