"""How the HTTP services are served: uvicorn on uvloop's event loop with httptools' HTTP parser.

Named, not left to uvicorn's "auto" (which takes them only when they happen to be installed):
measured on the 2-core machine under wrk (32 connections, six interleaved rounds, same hour),
against asyncio's own loop and the pure-Python h11 parser, a DAC adapter took 757-933 message
POSTs/s instead of 575-759 (+7% to +45% per pair, +22% on average; 1,056-1,321 µs of CPU per POST
instead of 1,317-1,726, its aiokafka publish included), and a bare FastAPI endpoint 2,192-2,942
instead of 1,182-1,617. `parcours bench` serves its bare endpoint through this function too, so
the two are served the same way.
"""

from __future__ import annotations

from typing import Any

#: uvicorn's settings for every HTTP service of Parcours
UVICORN: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "log_config": None, "access_log": False}


def serve(app: Any, host: str, port: int) -> None:
    """Serve an ASGI app until SIGINT or SIGTERM (uvicorn's own handling)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, **UVICORN)
