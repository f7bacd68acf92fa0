"""An external OpenID issuer (production may name one instead of the embedded issuer): its
discovery document (`<issuer>/.well-known/openid-configuration`) gives its token endpoint and its
`jwks_uri`; the keys are read at start and again every few minutes, in the background, so the
edge checks tokens offline and follows the issuer's key rotation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from parcours.auth.errors import IssuerUnavailable

log = logging.getLogger("parcours.auth")
#: how often the issuer's keys are read again (and sooner after a failure)
REFRESH_S = 300.0
RETRY_S = 10.0


class Discovery:
    def __init__(self, issuer: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.keys: KeySet | None = None
        self.token_endpoint: str | None = None
        self._transport = transport
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the discovery document and the keys; IssuerUnavailable when either fails."""
        try:
            async with httpx.AsyncClient(timeout=10, transport=self._transport) as client:
                meta = await _json(client, f"{self.issuer}/.well-known/openid-configuration")
                if meta.get("issuer", "").rstrip("/") != self.issuer or not isinstance(meta.get("jwks_uri"), str):
                    raise IssuerUnavailable(f"{self.issuer}'s discovery document names another issuer or no jwks_uri")
                keys = KeySet.import_key_set(await _json(client, meta["jwks_uri"]))  # type: ignore[arg-type]
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise IssuerUnavailable(f"the keys of {self.issuer} cannot be read ({type(exc).__name__})") from None
        self.keys, self.token_endpoint = keys, meta.get("token_endpoint")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="issuer-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                await asyncio.sleep(REFRESH_S)
            except IssuerUnavailable as exc:
                log.warning("token issuer unreachable", extra={"error": exc.message})
                await asyncio.sleep(RETRY_S)


async def _json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    r = await client.get(url)
    r.raise_for_status()
    data = r.json()
    if not isinstance(data, dict):
        raise ValueError(f"{url} is not a JSON object")
    return data
