"""The OpenAPI document, completed with the headers the handlers read themselves (`deps`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from parcours.adapters.guard import OPEN_PATHS
from parcours.adapters.http.deps import IDEMPOTENCY_KEY_MAX

_AUTHORIZATION = {"name": "Authorization", "in": "header", "required": False, "description": "Bearer <the structure's token>",
                  "schema": {"type": "string"}}

_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX},
                "description": "a retried request with the same key yields the same event, once"}

def document_headers(app: FastAPI) -> None:
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
