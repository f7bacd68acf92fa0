"""The bench's reference: a bare FastAPI endpoint that does nothing but validate a pydantic body and
answer 202 `{}` on the adapter's message path, served exactly as `parcours adapter` serves
(`adapters.serving.serve`: uvicorn on uvloop and httptools, in a process of its own)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from fastapi import FastAPI


class BareMessage(BaseModel):
    body: str


def bare_app() -> FastAPI:
    """A FastAPI app whose only route takes the adapter's message body and does nothing."""
    from fastapi import FastAPI

    from parcours.adapters.http.app import NO_OPENTELEMETRY

    app = FastAPI(telemetry=NO_OPENTELEMETRY)  # configured as the adapter is

    @app.post("/v1/cases/{case_id}/messages", status_code=202)
    async def post_message(case_id: str, body: BareMessage) -> dict[str, Any]:
        return {}

    return app


def serve_bare(port: int, host: str = "127.0.0.1") -> None:
    """Serve `bare_app` as `parcours adapter` serves the adapter (`adapters.serving`)."""
    from parcours.adapters.serving import serve
    from parcours.ops.logs import setup_logging

    setup_logging("bench-bare")
    serve(bare_app(), host, port)
