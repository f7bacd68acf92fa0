"""The FHIR R4 entry point of an adapter (`/fhir/r4/...`, `application/fhir+json`).

Thin, like the JSON handlers: read the resource, map it (`parcours.fhir.inbound`) onto the same
event fields the JSON API takes, and go through the same path (`submit`: idempotency, contract,
rights, the case's visibility, publish, 202 once Kafka acknowledged). Reads go through the
structure's consent-filtered view. Every refusal is an OperationOutcome (`refusal`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Request
from fastapi.responses import Response

from parcours.adapters.errors import AdapterError, Forbidden, NotFound, from_domain, http_error
from parcours.adapters.http.deps import VIEW_WAIT_S, Adapter, caller_of, idempotency_key
from parcours.adapters.http.identity import with_identities
from parcours.adapters.http.submit import record_access, submit, visible_case
from parcours.adapters.outcomes import PREFIX
from parcours.adapters.webhooks import check_endpoint, handshake
from parcours.contract.models import Identifier
from parcours.errors import ParcoursError
from parcours.fhir import definitions, inbound, outbound
from parcours.fhir.errors import FhirError, FhirUnreadable, Issue
from parcours.publishing.errors import PublishingError
from parcours.publishing.rules import ReferralCase, check_kind, eventually_referral

MEDIA_TYPE = outbound.MEDIA_TYPE

_OUTCOME = {"content": {MEDIA_TYPE: {"schema": {"type": "object", "description": "a FHIR R4 OperationOutcome",
                                                "properties": {"resourceType": {"const": "OperationOutcome"}}}}}}
#: what any FHIR route may answer, in the OpenAPI document (the JSON API's ErrorBody is not used here)
RESPONSES: dict[int | str, dict[str, Any]] = {status: {**_OUTCOME, "description": text} for status, text in (
    (400, "not a FHIR resource of this type (OperationOutcome)"),
    (401, "no token, or an unknown one (OperationOutcome)"),
    (403, "a rule forbids it (OperationOutcome)"),
    (404, "no such case or referral visible to the caller (OperationOutcome)"),
    (409, "the Idempotency-Key was used with another resource (OperationOutcome)"),
    (413, "the resource is larger than a record may be (OperationOutcome)"),
    (422, "an element breaks a rule: one issue per element, its FHIRPath in `expression` (OperationOutcome)"),
    (429, "over the token's rate; see Retry-After (OperationOutcome)"),
    (500, "an unexpected error (OperationOutcome)"),
    (503, "Kafka is unreachable; nothing was written (OperationOutcome)"),
)}
_ACCEPTED: dict[int | str, dict[str, Any]] = {202: {**_OUTCOME, "description": "accepted and durably on Kafka (an informational OperationOutcome); "
                                              "`Location` names the new resource, `Content-Location` the case's Bundle"}}
_RESOURCE_BODY = {"requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": {"type": "object"}},
                                                                "application/json": {"schema": {"type": "object"}}}}}


def fhir_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


async def read_resource(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FhirUnreadable([Issue("structure", None, "the body is not JSON (application/fhir+json)")]) from None


def fhir_routes(app: FastAPI, adapter: Adapter) -> None:
    """The FHIR routes of an adapter (their refusals: `answers.install_errors`)."""
    _write_routes(app, adapter)
    _read_routes(app, adapter)


def _new_id(prefix: str, field: str, parsed: inbound.Inbound, case_id: str | None) -> Callable[[str], tuple[dict[str, Any], dict[str, Any]]]:
    """The `build` of `submit` for a resource that creates an item `<prefix>-<short>` in `case_id`."""
    def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
        item_id = f"{prefix}-{short}"
        fields = {**parsed.fields, "case_id": case_id or f"case-{short}", field: item_id}
        return fields, {field: item_id, "case_id": fields["case_id"]}
    return build


async def _post(adapter: Adapter, request: Request, caller: Any, key: str | None, raw: Any, parsed: inbound.Inbound,
                build: Callable[[str], tuple[dict[str, Any], dict[str, Any]]],
                location: Callable[[dict[str, Any]], str], referral_case: ReferralCase = "existing") -> Response:
    """`submit`, with the contract's field names turned back into the resource's elements."""
    try:
        answer = await submit(adapter, request, caller, key, raw, parsed.event_type, build, channel="fhir", referral_case=referral_case)
    except ParcoursError as exc:
        mapped = http_error(exc)
        if mapped is None:
            raise
        raise _located(mapped, parsed) from None
    ids = {k: str(v) for k, v in answer.items() if k != "event_id"}
    where = location(answer)
    base = base_url(request)
    # Location: the new resource; Content-Location: where it will show, the case's Bundle
    return fhir_response(outbound.accepted(parsed.event_type, answer["event_id"], ids), 202,
                         {"Location": f"{base}/{where}",
                          "Content-Location": f"{base}/EpisodeOfCare/{answer['case_id']}/$everything"})


async def _parsed(request: Request, adapter: Adapter, caller: Any, resource_type: str) -> tuple[Any, inbound.Inbound]:
    """The posted resource and the event it asks for, once the caller's kind may publish that
    event (the edge guard could not tell a Task's event type before reading the body)."""
    raw = await read_resource(request)
    parsed = inbound.parse(resource_type, raw)
    try:
        check_kind(adapter.catalogue, caller, parsed.event_type)
    except PublishingError as exc:
        raise from_domain(exc) from None
    return raw, parsed


def _located(exc: AdapterError, parsed: inbound.Inbound) -> AdapterError:
    if exc.fields:
        exc.fields = [{"field": parsed.expression(f["field"]), "rule": f["rule"]} for f in exc.fields]
    return exc


#: the resources that add an item to a case named in them: (type, route name, summary, item id prefix, id field)
_ITEM_ROUTES = (
    ("Consent", "ConsentRecorded", "A consent (permit or deny) to share categories of a case", "consent", "consent_id"),
    ("Communication", "MessagePosted", "A message in a case's discussion (Communication)", "msg", "message_id"),
    ("Observation", "EvaluationRecorded", "An evaluation (Observation): AGGIR and its GIR, ICOPE step 1, multidimensional",
     "eval", "evaluation_id"),
)


def _item_route(route: Callable[[str, str, str], Callable[[Any], Any]], adapter: Adapter, resource_type: str, name: str,
                summary: str, prefix: str, field: str) -> None:
    """`POST /fhir/r4/<resource_type>`: a new item `<prefix>-<short>` in the case the resource names."""

    @route(f"/{resource_type}", name, summary)
    async def post_item(request: Request) -> Response:
        caller, key = caller_of(request), idempotency_key(request)
        raw, parsed = await _parsed(request, adapter, caller, resource_type)
        return await _post(adapter, request, caller, key, raw, parsed, _new_id(prefix, field, parsed, parsed.case_id),
                           lambda a: f"{resource_type}/{a[field]}")


def _write_routes(app: FastAPI, adapter: Adapter) -> None:
    store = adapter.store

    def route(path: str, name: str, summary: str) -> Callable[[Any], Any]:
        return app.post(PREFIX + path, status_code=202, name=name, tags=["fhir"], summary=summary,
                        response_class=Response, responses={**RESPONSES, **_ACCEPTED}, openapi_extra=_RESOURCE_BODY)

    @route("/ServiceRequest", "ReferralSubmitted", "A referral (ServiceRequest); opens a case unless supportingInfo names one of yours")
    async def post_service_request(request: Request) -> Response:
        caller, key = caller_of(request), idempotency_key(request)
        raw, parsed = await _parsed(request, adapter, caller, "ServiceRequest")
        if parsed.author is not None and parsed.author != caller.slug:
            raise Forbidden(f"ServiceRequest.requester is {parsed.author}, not the authenticated {caller.slug}",
                            rule="source is the authenticated structure")
        return await _post(adapter, request, caller, key, raw, parsed,
                           _new_id("ref", "referral_id", parsed, parsed.case_id), lambda a: f"ServiceRequest/{a['referral_id']}",
                           "door" if parsed.case_id is None else "existing")

    @route("/Task", "FhirTask", "A referral's status (Task.status) or an admission decision (Task.businessStatus)")
    async def post_task(request: Request) -> Response:
        caller, key = caller_of(request), idempotency_key(request)
        raw, parsed = await _parsed(request, adapter, caller, "Task")
        found = await eventually_referral(store, caller.slug, str(parsed.referral_id), VIEW_WAIT_S)
        if found is None:
            raise NotFound(f"no referral {parsed.referral_id} visible to {caller.slug}")

        def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            return {**parsed.fields, "case_id": found[0]}, {"referral_id": str(parsed.referral_id), "case_id": found[0]}

        return await _post(adapter, request, caller, key, raw, parsed, build, lambda a: f"Task/{a['event_id']}")

    for item_route in _ITEM_ROUTES:
        _item_route(route, adapter, *item_route)

    @app.post(PREFIX + "/Subscription", status_code=201, name="FhirSubscription", tags=["fhir"], response_class=Response,
              summary="Notifications of your cases' changes, Subscriptions backport style (rest-hook, id-only)",
              responses={**RESPONSES, 201: {**_OUTCOME, "description": "the Subscription, active (handshake answered)"}},
              openapi_extra=_RESOURCE_BODY)
    async def post_subscription(request: Request) -> Response:
        caller = caller_of(request)
        sub = inbound.subscription(await read_resource(request))
        try:
            await check_endpoint(sub.endpoint, https_only=adapter.webhook_https_only,
                                 private_networks=adapter.webhook_private_networks)
        except AdapterError as exc:
            raise FhirError([Issue("value", "Subscription.channel.endpoint", f["rule"]) for f in exc.fields or []]) from None
        base, sub_id = base_url(request), f"sub-{caller.slug}"
        secret = secrets.token_urlsafe(32)
        registration = {"url": sub.endpoint, "secret": adapter.sealer.seal(secret),
                        "from_sequence": store.last_sequence(caller.slug), "format": "fhir", "subscription": sub_id,
                        "base": base, "content": sub.content, "heartbeat_s": sub.heartbeat_s,
                        "headers": adapter.sealer.seal(json.dumps(sub.headers)) if sub.headers else None}
        failure = await handshake(registration, secret, sub.headers, adapter.retry.timeout)
        if failure is not None:
            raise FhirError([Issue("processing", "Subscription.channel.endpoint",
                                   f"the endpoint did not accept the handshake ({failure}): nothing was registered")])
        # the structure's one endpoint, as PUT /v1/webhook registers it: this replaces any earlier one
        await adapter.publisher.send(adapter.catalogue.topic("webhooks").name, f"endpoint/{caller.slug}".encode(),
                                     json.dumps(registration).encode())
        body = outbound.subscription_answer(sub_id, base, sub.endpoint, sub.content, sub.heartbeat_s, secret)
        return fhir_response(body, 201, {"Location": f"{base}/Subscription/{sub_id}"})


def _definition_route(app: FastAPI, resource_type: str) -> None:
    """`GET /fhir/r4/<resource_type>/<id>`: one of Parcours' own definitions (no token, like metadata)."""

    @app.get(f"{PREFIX}/{resource_type}/{{rid}}", name=f"Fhir{resource_type}", tags=["fhir"], response_class=Response,
             summary=f"One of Parcours' own {resource_type}s (its extensions and code systems; no token)",
             responses={404: RESPONSES[404], 422: RESPONSES[422],
                        200: {"content": {MEDIA_TYPE: {"schema": {"type": "object", "description": f"a FHIR R4 {resource_type}"}}},
                              "description": "the definition"}})
    async def get_definition(rid: Annotated[str, Path(pattern="^[A-Za-z0-9.-]{1,64}$")]) -> Response:
        found = definitions.definition(resource_type, rid)
        if found is None:
            raise NotFound(f"no {resource_type} {rid} here")
        return fhir_response(orjson.dumps(found))


def _read_routes(app: FastAPI, adapter: Adapter) -> None:
    store = adapter.store

    @app.get(PREFIX + "/metadata", name="FhirMetadata", tags=["fhir"], response_class=Response,
             summary="The CapabilityStatement of this FHIR entry point (no token)",
             responses={200: {"content": {MEDIA_TYPE: {"schema": {"type": "object", "description": "a FHIR R4 CapabilityStatement"}}},
                              "description": "what this adapter's FHIR routes do"}})
    async def metadata(request: Request) -> Response:
        return fhir_response(outbound.capability_statement(adapter.kind, base_url(request), app.version))

    @app.get(PREFIX + "/EpisodeOfCare/{case_id}/$everything", name="FhirCase", tags=["fhir"], response_class=Response,
             summary="Your view of a case as a FHIR Bundle, filtered by the consent rules like GET /v1/cases/{case_id}",
             responses={**RESPONSES, 200: {"content": {MEDIA_TYPE: {"schema": {"type": "object", "description": "a FHIR R4 Bundle (searchset)"}}},
                                           "description": "the case as a Bundle"}})
    async def get_case(request: Request, case_id: Annotated[Identifier, Path()]) -> Response:
        """The whole view (`$everything`), audited as a read of the case."""
        caller = caller_of(request)
        view = await visible_case(store, caller, case_id)
        await record_access(adapter, caller, case_id)  # no record, no read
        referrals = await with_identities(adapter, caller, case_id, view["referrals"], f"FHIR EpisodeOfCare/{case_id}/$everything")
        return fhir_response(outbound.case_bundle({**view, "referrals": referrals}, base_url(request)))

    for resource_type in definitions.PUBLISHED:
        _definition_route(app, resource_type)

    @app.get(PREFIX + "/EpisodeOfCare/{case_id}", name="FhirEpisode", tags=["fhir"], response_class=Response,
             summary="The case alone (what a notification's focus names), if you see it",
             responses={**RESPONSES, 200: {"content": {MEDIA_TYPE: {"schema": {"type": "object", "description": "a FHIR R4 EpisodeOfCare"}}},
                                           "description": "the case"}})
    async def get_episode(request: Request, case_id: Annotated[Identifier, Path()]) -> Response:
        caller = caller_of(request)
        return fhir_response(outbound.episode(await visible_case(store, caller, case_id)))
