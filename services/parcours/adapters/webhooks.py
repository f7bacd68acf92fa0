"""Webhook push: every notification of a structure is POSTed to its registered endpoint, in
sequence order (hence in order per case), signed with HMAC-SHA256 over the body
(`X-Parcours-Signature: sha256=<hex>`), retried with exponential backoff; after the last attempt
it is kept on the `webhook-deadletters` topic for `parcours webhooks redeliver`, and delivery
goes on with the next one. The instances of a kind share the structures through a consumer
group whose committed offsets are the cursors (`WebhookDelivery`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from parcours.adapters.errors import Invalid
from parcours.bus.kafkaio import KafkaAccess, keep_tailing, release
from parcours.bus.publisher import Publisher
from parcours.fhir.outbound import MEDIA_TYPE, notification
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


async def post_signed(client: httpx.AsyncClient, url: str, secret: str, body: bytes, timeout: float, *,
                      media_type: str = "application/json", headers: list[tuple[str, str]] | None = None) -> None:
    resp = await client.post(url, content=body, timeout=timeout,
                             headers={**dict(headers or []), "content-type": media_type, SIGNATURE_HEADER: sign(secret, body)})
    resp.raise_for_status()


def rendered(endpoint: dict[str, Any], note: dict[str, Any]) -> tuple[bytes, str]:
    """A notification as its endpoint takes it: the Parcours notification (JSON), or for a FHIR
    Subscription a backport Bundle (id-only: the case to read, no content), whose event number
    counts from the subscription's start."""
    if endpoint.get("format") != "fhir":
        return json.dumps(note, separators=(",", ":"), sort_keys=True).encode(), "application/json"
    since = int(note["sequence"]) - int(endpoint.get("from_sequence") or 0)
    return notification("event-notification", endpoint["subscription"], endpoint["base"], since, note,
                        endpoint.get("content", "id-only")), MEDIA_TYPE


def channel_headers(endpoint: dict[str, Any], sealer: Sealer) -> list[tuple[str, str]]:
    """The HTTP headers a FHIR Subscription asked for (`channel.header`), sealed on the bus."""
    sealed = endpoint.get("headers")
    return [(str(k), str(v)) for k, v in json.loads(sealer.unseal(sealed))] if sealed else []


async def deliver_note(client: httpx.AsyncClient, endpoint: dict[str, Any], sealer: Sealer, note: dict[str, Any],
                       timeout: float) -> None:
    body, media = rendered(endpoint, note)
    await post_signed(client, endpoint["url"], sealer.unseal(endpoint["secret"]), body, timeout, media_type=media,
                      headers=channel_headers(endpoint, sealer))


async def handshake(registration: dict[str, Any], secret: str, headers: list[tuple[str, str]], timeout: float) -> str | None:
    """The backport's handshake to a new FHIR Subscription's endpoint: None when it answered 2xx,
    else why not. Redirects are not followed (as for every delivery)."""
    body = notification("handshake", registration["subscription"], registration["base"], 0)
    try:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            await post_signed(client, registration["url"], secret, body, timeout, media_type=MEDIA_TYPE, headers=headers)
    except httpx.HTTPStatusError as exc:
        return f"HTTP {exc.response.status_code}"
    except Exception as exc:  # noqa: BLE001 - whatever the endpoint or the URL does, the answer is "not registered"
        return type(exc).__name__
    return None


class WebhookDelivery:
    """Deliveries of the notifications of a kind's structures, shared by the kind's instances.

    The instances form one consumer group over the kind's inbox topics (one partition each): the
    group gives each structure to one instance, whose committed offset is the structure's cursor
    (offset = the last sequence delivered). The notifications themselves are read from the
    instance's read model (`EdgeStore`), which holds every inbox; the group's consumer fetches
    nothing (its partitions are paused), it only owns and commits. A structure moves to another
    instance on a rebalance (an instance joins, stops or dies: after the session timeout) and
    resumes at the committed cursor. Each delivery is committed as soon as the endpoint answered
    2xx: an instance killed between the answer and the commit (milliseconds) makes the next owner
    deliver that one notification again, so receivers deduplicate by `notification_id`.
    """

    #: a dead instance's structures move to the survivors after this long without its heartbeat
    SESSION_TIMEOUT_MS = 6000

    def __init__(self, store: EdgeStore, kafka: KafkaAccess, publisher: Publisher, catalogue: Catalogue, metrics: Any,
                 retry: RetryPolicy, sealer: Sealer, kind: str) -> None:
        self.store, self.kafka, self.publisher, self.catalogue, self.metrics, self.retry = store, kafka, publisher, catalogue, metrics, retry
        self.sealer = sealer
        self.group = catalogue.group_id("adapter", "-webhooks", kind)
        self.topics = {catalogue.per_structure("inbox", s).name: s for s in store.slugs}
        #: the structures this instance delivers now, and their cursors (last sequence delivered)
        self.cursors: dict[str, int] = {}
        self._workers: dict[TopicPartition, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(keep_tailing(lambda _: self._run(), "webhooks", silence_s=None), name="webhooks")

    async def follow(self) -> None:
        """Deliver to the structures the store follows now (the registry changed)."""
        topics = {self.catalogue.per_structure("inbox", s).name: s for s in self.store.slugs}
        if topics != self.topics:
            await self.stop()
            self.topics = topics
            self.start()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        await self.store.caught_up.wait()
        consumer = AIOKafkaConsumer(**self.kafka.aiokafka(), group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", session_timeout_ms=self.SESSION_TIMEOUT_MS,
                                    heartbeat_interval_ms=self.SESSION_TIMEOUT_MS // 3,
                                    # one partition per structure: round robin spreads the structures
                                    # (the default range assignor gives every 1-partition topic to one member)
                                    partition_assignment_strategy=(RoundRobinPartitionAssignor,))
        await consumer.start()
        try:
            consumer.subscribe(list(self.topics), listener=_Owners(self, consumer))
            while True:  # fetches nothing (every partition is paused): keeps the membership alive
                await consumer.getmany(timeout_ms=1000)
        finally:
            await self._release(list(self._workers))
            await release(consumer)

    async def _take(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        consumer.pause(*tps)
        for tp in tps:
            stopping = asyncio.Event()
            task = asyncio.create_task(self._deliver_all(consumer, tp, stopping), name=f"webhook-{self.topics[tp.topic]}")
            self._workers[tp] = (task, stopping)
            self.metrics.webhook_delivering.labels(self.topics[tp.topic]).set(1)

    async def _release(self, tps: list[TopicPartition]) -> None:
        """Let each worker finish the delivery in hand (and commit it), then stop."""
        workers = [self._workers.pop(tp) for tp in tps if tp in self._workers]
        for _, stopping in workers:
            stopping.set()
        tasks = [t for t, _ in workers]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.retry.timeout + 1)
            for t in late:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for tp in tps:
            slug = self.topics[tp.topic]
            self.cursors.pop(slug, None)
            self.metrics.webhook_delivering.labels(slug).set(0)
            # the backlog is the delivering instance's to report: a released structure's last value
            # would otherwise stay, flat, beside its new owner's
            self.metrics.webhook_backlog.labels(slug).set(0)

    async def _deliver_all(self, consumer: AIOKafkaConsumer, tp: TopicPartition, stopping: asyncio.Event) -> None:
        """One structure's deliveries while this instance owns it, again after any failure (a
        dead-letter write Kafka refused, the store, a seal): the cursor only moves past a
        notification delivered or dead-lettered. A commit the group refuses means the structure
        has moved to another instance: stop."""
        slug = self.topics[tp.topic]
        while not stopping.is_set():
            try:
                await self._deliver_from_cursor(consumer, tp, slug, stopping)
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning("webhook deliveries of a structure given up: no longer its owner",
                            extra={"structure": slug, "error": type(exc).__name__})
                return
            except Exception as exc:  # noqa: BLE001 - a structure's deliveries must not stop for good
                log.error("webhook deliveries interrupted; resuming at the cursor", extra={"structure": slug, "error": type(exc).__name__})
                await asyncio.sleep(1)

    async def _deliver_from_cursor(self, consumer: AIOKafkaConsumer, tp: TopicPartition, slug: str,
                                   stopping: asyncio.Event) -> None:
        endpoint = None
        while endpoint is None:
            endpoint = await self.store.until(lambda: self.store.webhook(f"endpoint/{slug}"), 1.0)
            if stopping.is_set():
                return
        cursor = self.cursors[slug] = await self._start(consumer, tp, slug, endpoint)
        last_sent = time.monotonic()
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while not stopping.is_set():
                endpoint = self.store.webhook(f"endpoint/{slug}") or endpoint
                notes = await self.store.wait_notifications(slug, cursor, 100, wait=1.0)
                self.metrics.webhook_backlog.labels(slug).set(max(0, self.store.last_sequence(slug) - cursor))
                if notes:
                    last_sent = time.monotonic()
                elif _heartbeat_due(endpoint, last_sent):
                    await self._heartbeat(client, slug, endpoint, cursor)
                    last_sent = time.monotonic()
                for note in notes:
                    if stopping.is_set():
                        return
                    if not _before_subscription(endpoint, note):  # a FHIR Subscription starts with its own events
                        await self._deliver(client, slug, endpoint, note)
                        last_sent = time.monotonic()
                    cursor = self.cursors[slug] = note["sequence"]
                    try:
                        await consumer.commit({tp: cursor})  # next offset to deliver = this sequence
                    except (CommitFailedError, IllegalStateError):
                        raise
                    except KafkaError as exc:  # the next delivery's commit covers this one
                        log.warning("webhook cursor not committed", extra={"structure": slug, "error": type(exc).__name__})

    async def _start(self, consumer: AIOKafkaConsumer, tp: TopicPartition, slug: str, endpoint: dict[str, Any]) -> int:
        """Where a structure's deliveries resume: this instance's cursor, the group's, or (first
        owner) the registration's (or the cursor of a single-instance version)."""
        committed = self.cursors.get(slug)
        if committed is None:
            committed = await consumer.committed(tp)
        if committed is None:
            legacy = self.store.webhook(f"cursor/{slug}") or {}
            committed = max(int(endpoint.get("from_sequence") or 0), int(legacy.get("sequence", 0)))
        return int(committed)

    async def _heartbeat(self, client: httpx.AsyncClient, slug: str, endpoint: dict[str, Any], cursor: int) -> None:
        """A FHIR Subscription's heartbeat: nothing changed for its period. Not retried, never
        dead-lettered: the next one follows a period later."""
        since = max(0, cursor - int(endpoint.get("from_sequence") or 0))
        body = notification("heartbeat", endpoint["subscription"], endpoint["base"], since)
        try:
            await post_signed(client, endpoint["url"], self.sealer.unseal(endpoint["secret"]), body, self.retry.timeout,
                              media_type=MEDIA_TYPE, headers=channel_headers(endpoint, self.sealer))
        except (httpx.HTTPError, OSError, SealError) as exc:
            log.warning("webhook heartbeat failed", extra={"structure": slug, "error": type(exc).__name__})

    async def _deliver(self, client: httpx.AsyncClient, slug: str, endpoint: dict[str, Any], note: dict[str, Any]) -> None:
        delays = self.retry.delays()
        try:
            secret, headers = self.sealer.unseal(endpoint["secret"]), channel_headers(endpoint, self.sealer)
        except SealError:
            reason, attempts = "sealed_secret_unreadable", 0  # cannot sign: no attempt can succeed
        else:
            attempts = self.retry.attempts
        body, media = rendered(endpoint, note)
        for attempt in range(attempts):
            try:
                await post_signed(client, endpoint["url"], secret, body, self.retry.timeout, media_type=media, headers=headers)
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


def _before_subscription(endpoint: dict[str, Any], note: dict[str, Any]) -> bool:
    """A notification older than the FHIR Subscription now registered (the backlog of an earlier
    endpoint): not an event of this subscription, so not sent to it (its events count from 1)."""
    return endpoint.get("format") == "fhir" and int(note["sequence"]) <= int(endpoint.get("from_sequence") or 0)


def _heartbeat_due(endpoint: dict[str, Any], last_sent: float) -> bool:
    period = endpoint.get("heartbeat_s") if endpoint.get("format") == "fhir" else None
    return bool(period) and time.monotonic() - last_sent >= float(period or 0)


class _Owners(ConsumerRebalanceListener):  # type: ignore[misc]
    """Starts a worker per structure the group gives this instance; stops it when taken away."""

    def __init__(self, delivery: WebhookDelivery, consumer: AIOKafkaConsumer) -> None:
        self.delivery, self.consumer = delivery, consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.delivery._release(list(revoked))  # noqa: SLF001 - the listener is part of the delivery

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.delivery._take(self.consumer, list(assigned))  # noqa: SLF001


async def redeliver(catalogue: Catalogue, kafka: KafkaAccess, retry: RetryPolicy, sealer: Sealer,
                    structure: str | None = None) -> tuple[int, int]:
    """Send dead-lettered notifications again; tombstone those delivered. Returns (sent, failed)."""
    from parcours.bus.kafkaio import read_compacted

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
                    await deliver_note(client, endpoint, sealer, item["notification"], retry.timeout)
                except (httpx.HTTPError, SealError):
                    failed += 1
                    continue
                await publisher.send(catalogue.topic("webhook-deadletters").name, key, None)
                sent += 1
    finally:
        await publisher.close()
    return sent, failed
