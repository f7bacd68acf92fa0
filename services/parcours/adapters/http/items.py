"""The routes that add an item to a case (and territorial ruptures): one POST per event type."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from parcours.adapters import requests as rq
from parcours.adapters.http.deps import Adapter, caller_of, idempotency_key
from parcours.adapters.http.submit import on_case, submit


async def submit_item(adapter: Adapter, request: Request, case_id: str, body: Any, event_type: str, id_field: str,
                      prefix: str) -> dict[str, Any]:
    """An event that adds the item `<prefix>-<id>` to `case_id`, from the request's caller."""
    caller, key = caller_of(request), idempotency_key(request)
    return await submit(adapter, request, caller, key, body, event_type, on_case(case_id, id_field, prefix, body))


def item_routes(app: FastAPI, adapter: Adapter) -> None:
    """The items of a case (and territorial ruptures): one POST per event type."""

    @app.post("/v1/cases/{case_id}/evaluations", status_code=202, name="EvaluationRecorded", tags=["events"])
    async def post_evaluation(request: Request, case_id: str, body: rq.EvaluationIn) -> dict[str, Any]:
        return await submit_item(adapter, request, case_id, body, "EvaluationRecorded", "evaluation_id", "eval")

    @app.post("/v1/cases/{case_id}/admission-decisions", status_code=202, name="AdmissionDecided", tags=["events"])
    async def post_admission(request: Request, case_id: str, body: rq.AdmissionIn) -> dict[str, Any]:
        caller, key = caller_of(request), idempotency_key(request)
        build = on_case(case_id, None, "", body)

        def with_referral(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            fields, _ = build(short)
            return fields, {"referral_id": body.referral_id}

        return await submit(adapter, request, caller, key, body, "AdmissionDecided", with_referral)

    @app.post("/v1/cases/{case_id}/consents", status_code=202, name="ConsentRecorded", tags=["events"])
    async def post_consent(request: Request, case_id: str, body: rq.ConsentIn) -> dict[str, Any]:
        return await submit_item(adapter, request, case_id, body, "ConsentRecorded", "consent_id", "consent")

    @app.post("/v1/cases/{case_id}/messages", status_code=202, name="MessagePosted", tags=["events"])
    async def post_message(request: Request, case_id: str, body: rq.MessageIn) -> dict[str, Any]:
        return await submit_item(adapter, request, case_id, body, "MessagePosted", "message_id", "msg")

    @app.post("/v1/ruptures", status_code=202, name="RuptureReported", tags=["events"])
    async def post_rupture(request: Request, body: rq.RuptureIn) -> dict[str, Any]:
        caller, key = caller_of(request), idempotency_key(request)
        def build(short: str) -> tuple[dict[str, Any], dict[str, Any]]:
            rid = f"rupture-{short}"
            return {"rupture_id": rid, **body.model_dump()}, {"rupture_id": rid}

        return await submit(adapter, request, caller, key, body, "RuptureReported", build)
