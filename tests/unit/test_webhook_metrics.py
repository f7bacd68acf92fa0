"""The webhook deliveries' gauges when an instance hands a structure over (no broker: the
group's consumer is not needed to release a structure that has no delivery in hand)."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition

from parcours.adapters.http.metrics import AdapterMetrics
from parcours.adapters.webhooks import RetryPolicy, WebhookDelivery
from parcours.topology.catalogue import Catalogue


async def test_a_released_structure_reports_no_backlog_left_on_the_instance_that_gave_it_up() -> None:
    cat = Catalogue.load(prefix="t")
    metrics = AdapterMetrics()
    store = SimpleNamespace(slugs=["cpts-31-nord", "cpts-31-sud"])
    delivery = WebhookDelivery(store, None, None, cat, metrics, RetryPolicy(), None, "cpts")  # type: ignore[arg-type]
    for slug in store.slugs:  # both were delivered here, 7 notifications behind
        metrics.webhook_delivering.labels(slug).set(1)
        metrics.webhook_backlog.labels(slug).set(7)
    await delivery._release([TopicPartition(cat.per_structure("inbox", "cpts-31-nord").name, 0)])  # noqa: SLF001 - the rebalance's hook
    gauge = {s.labels["structure"]: s.value for m in metrics.registry.collect() if m.name == "parcours_webhook_backlog_notifications"
             for s in m.samples}
    assert gauge == {"cpts-31-nord": 0.0, "cpts-31-sud": 7.0}  # the new owner reports it; the other is still ours
    assert metrics.webhook_delivering.labels("cpts-31-nord")._value.get() == 0.0  # noqa: SLF001
