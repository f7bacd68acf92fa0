"""The adapter's Prometheus metrics, on a registry of its own (served at `/metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from parcours.ops.metrics import cache_discards


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
