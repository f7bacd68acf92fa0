"""Webhook push: every notification of a structure is POSTed to its registered endpoint, in
sequence order (hence in order per case), signed with HMAC-SHA256 over the body
(`X-Parcours-Signature: sha256=<hex>`), retried with exponential backoff; after the last attempt
it is kept on the `webhook-deadletters` topic for `parcours webhooks redeliver`, and delivery
goes on with the next one. The cursor (last sequence handled) is kept on the `webhooks` topic.
One adapter instance per kind delivers (run more and they would deliver twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from parcours.adapters.errors import Invalid
from parcours.adapters.publisher import Publisher
from parcours.kafkaio import KafkaAccess
from parcours.readmodel.store import EdgeStore
from parcours.security.errors import SealError
from parcours.security.sealing import Sealer
from parcours.topology.catalogue import Catalogue

log = logging.getLogger("parcours.adapter.webhooks")
SIGNATURE_HEADER = "X-Parcours-Signature"


async def check_endpoint(url: str, *, https_only: bool, private_networks: bool) -> None:
    """A webhook endpoint Parcours may call: https in production, and never (unless allowed, as in
    the dev profile) an address of the operator's own networks: loopback, link-local, private,
    multicast, reserved, unspecified. Names are resolved and every address is checked; deliveries
    do not follow redirects."""
    malformed = Invalid("not an http(s) URL", fields=[{"field": "url", "rule": "an absolute http(s) URL"}])
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # both parse, and may refuse, the authority
        if host:
            host.encode("idna")
    except (ValueError, UnicodeError):
        raise malformed from None
    if parts.scheme not in ("https", "http") or not host or any(c.isspace() or not c.isprintable() for c in url):
        raise malformed
    if https_only and parts.scheme != "https":
        raise Invalid("webhooks are https", fields=[{"field": "url", "rule": "https only (production profile)"}])
    if private_networks:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Invalid("the host does not resolve", fields=[{"field": "url", "rule": "a resolvable public host"}]) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (address.is_loopback or address.is_link_local or address.is_private or address.is_multicast
                or address.is_reserved or address.is_unspecified):
            raise Invalid("the webhook points into a private network",
                          fields=[{"field": "url", "rule": f"a public address ({address} is not)"}])


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.5
    factor: float = 2.0
    timeout: float = 5.0

    def delays(self) -> list[float]:
        return [self.first_delay * self.factor**i for i in range(self.attempts - 1)]


async def post_signed(client: httpx.AsyncClient, url: str, secret: str, note: dict[str, Any], timeout: float) -> None:
    body = json.dumps(note, separators=(",", ":"), sort_keys=True).encode()
    resp = await client.post(url, content=body, timeout=timeout,
                             headers={"content-type": "application/json", SIGNATURE_HEADER: sign(secret, body)})
    resp.raise_for_status()


class WebhookDelivery:
    def __init__(self, store: EdgeStore, publisher: Publisher, catalogue: Catalogue, metrics: Any, retry: RetryPolicy,
                 sealer: Sealer) -> None:
        self.store, self.publisher, self.catalogue, self.metrics, self.retry = store, publisher, catalogue, metrics, retry
        self.sealer = sealer
        self.cursors: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(slug), name=f"webhook-{slug}") for slug in self.store.slugs]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self, slug: str) -> None:
        await self.store.caught_up.wait()
        cursor = int(self.store.webhooks.get(f"cursor/{slug}", {}).get("sequence", 0))
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while True:
                endpoint = self.store.webhooks.get(f"endpoint/{slug}")
                if endpoint is None:
                    await asyncio.sleep(0.5)
                    continue
                if cursor == 0 and endpoint.get("from_sequence"):
                    cursor = int(endpoint["from_sequence"])
                notes = await self.store.wait_notifications(slug, cursor, 100, wait=1.0)
                self.metrics.webhook_backlog.labels(slug).set(len(self.store.notifications(slug, cursor, 10**9)))
                for note in notes:
                    await self._deliver(client, slug, endpoint, note)
                    cursor = note["sequence"]
                if notes:
                    await self.publisher.send(self.catalogue.topic("webhooks").name, f"cursor/{slug}".encode(),
                                              json.dumps({"sequence": cursor}).encode())

    async def _deliver(self, client: httpx.AsyncClient, slug: str, endpoint: dict[str, Any], note: dict[str, Any]) -> None:
        delays = self.retry.delays()
        try:
            secret = self.sealer.unseal(endpoint["secret"])
        except SealError:
            reason, attempts = "sealed_secret_unreadable", 0  # cannot sign: no attempt can succeed
        else:
            attempts = self.retry.attempts
        for attempt in range(attempts):
            try:
                await post_signed(client, endpoint["url"], secret, note, self.retry.timeout)
                self.metrics.webhook_deliveries.labels(slug).inc()
                return
            except (httpx.HTTPError, OSError) as exc:
                reason = type(exc).__name__
                if attempt < len(delays):
                    self.metrics.webhook_retries.labels(slug).inc()
                    await asyncio.sleep(delays[attempt])
        self.metrics.webhook_failures.labels(slug).inc()
        log.warning("webhook delivery failed; dead-lettered", extra={"structure": slug, "sequence": note["sequence"], "reason": reason})
        await self.publisher.send(self.catalogue.topic("webhook-deadletters").name,
                                  f"{slug}/{note['notification_id']}".encode(),
                                  json.dumps({"structure": slug, "reason": reason, "notification": note}).encode())


async def redeliver(catalogue: Catalogue, kafka: KafkaAccess, retry: RetryPolicy, sealer: Sealer,
                    structure: str | None = None) -> tuple[int, int]:
    """Send dead-lettered notifications again; tombstone those delivered. Returns (sent, failed)."""
    from parcours.kafkaio import read_compacted

    hooks = {k.decode(): json.loads(v) for k, v in (await read_compacted(kafka, catalogue.topic("webhooks").name)).items()}
    dead = await read_compacted(kafka, catalogue.topic("webhook-deadletters").name)
    publisher = Publisher(kafka, catalogue)
    sent = failed = 0
    try:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            for key, raw in sorted(dead.items(), key=lambda kv: json.loads(kv[1])["notification"]["sequence"]):
                item = json.loads(raw)
                if structure and item["structure"] != structure:
                    continue
                endpoint = hooks.get(f"endpoint/{item['structure']}")
                try:
                    if endpoint is None:
                        raise httpx.HTTPError("no webhook registered")
                    await post_signed(client, endpoint["url"], sealer.unseal(endpoint["secret"]), item["notification"],
                                      retry.timeout)
                except (httpx.HTTPError, SealError):
                    failed += 1
                    continue
                await publisher.send(catalogue.topic("webhook-deadletters").name, key, None)
                sent += 1
    finally:
        await publisher.close()
    return sent, failed
