"""Prometheus metrics: one registry per service, names with units, no person data in labels.

Labels are bounded sets: event types, structure kinds and slugs (from the registry), reasons
(a fixed vocabulary). Case ids, pseudonyms and free text never become labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# From event time to view written: the target is p99 < 1 s on one node; buckets resolve
# 5 ms..30 s around it so both a healthy run and a lagging one are readable.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def cache_discards(registry: CollectorRegistry) -> Counter:
    """Local caches (`cache`: state, read_model) discarded and rebuilt from Kafka because they did not
    describe the cluster they read (`reason`: cluster, topic, unrecorded; see `lineage.py`)."""
    return Counter("parcours_cache_discarded_total", "Local caches discarded and rebuilt from Kafka: built from another cluster "
                   "or topic incarnation", ["cache", "reason"], registry=registry)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("parcours_processor_events_total", "Events applied to case state", ["type"], registry=r)
        self.duplicates = Counter("parcours_processor_duplicates_total", "Events ignored as already applied", ["type"], registry=r)
        self.dead_letters = Counter("parcours_dead_letters_total", "Records sent to the dead-letter topic", ["service", "reason"], registry=r)
        self.view_writes = Counter("parcours_view_writes_total", "Case views written (tombstones included)", ["structure"], registry=r)
        self.notifications = Counter("parcours_inbox_notifications_total", "Inbox notifications written", ["structure", "type"], registry=r)
        self.redactions = Counter("parcours_consent_redactions_total", "Items removed from a view by consent changes", ["structure"], registry=r)
        self.latency = Histogram("parcours_event_to_view_seconds", "From event occurred_at to views written", buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("parcours_consumer_lag_records", "Records behind the end of each partition", ["topic", "partition"], registry=r)
        self.up = Gauge("parcours_processor_up", "1 while the processor runs", registry=r)
        #: with the wall clock: the share of the processor's time spent in the case-file step, the
        #: rest being the stream engine, the Kafka client and the commits (`parcours bench` splits it)
        self.step_seconds = Counter("parcours_processor_step_seconds_total",
                                    "Time spent in the case-file step (decode, fold, projection), outside the engine", registry=r)
        self.records_out = Counter("parcours_processor_records_written_total",
                                   "Records the processor produced (views, inboxes, audit, marks, schedule, dead letters)", registry=r)
        self.state_writes = Counter("parcours_processor_state_writes_total",
                                    "Case-state keys written (each one a changelog record)", registry=r)
        self.cache_discarded = cache_discards(r)


class ValidatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.accepted = Counter("parcours_events_accepted_total", "Events accepted onto canonical topics", ["type", "kind", "channel"], registry=r)
        self.refused = Counter("parcours_events_refused_total", "Events refused", ["type", "kind", "reason", "channel"], registry=r)
        self.dead_letters = Counter("parcours_dead_letters_total", "Records sent to the dead-letter topic", ["service", "reason"], registry=r)
        self.cache_discarded = cache_discards(r)


def serve(registry: CollectorRegistry, port: int) -> None:
    """Expose /metrics on PARCOURS_METRICS_HOST:port (0 disables)."""
    from parcours.settings import get_settings

    if port:
        start_http_server(port, addr=get_settings().metrics_host, registry=registry)


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose (counters as *_total, histograms as *_bucket...)."""
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "gauge": [""], "summary": ["", "_sum", "_count"]}
    names: set[str] = set()
    for metric in registry.collect():
        names.update(metric.name + s for s in suffixes.get(metric.type, [""]))
    return names
