"""`parcours bench`'s processor on one node next to a three-node cluster, in the same run: the same
burst (cases of `per_case` events, produced before the processor starts) on the cluster the bench
was given (one node), then on an embedded three-node cluster started for it in the bench's log
folder (every topic and Kafka's internal ones replicated 3 times, min ISR 2: each write of the
processor's transactions, its views, inboxes, changelog and offsets, acknowledged by two nodes
before its commit), stopped after."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from parcours.bootstrap import Cluster, child_env, embedded_cluster
from parcours.devbroker.broker import EmbeddedBroker
from parcours.devtools.benchkit import ProcessorRun, case_events, produce
from parcours.security.credentials import ADMIN
from parcours.topology import admin
from parcours.topology.catalogue import Catalogue

NODES = 3


def fresh(where: Cluster) -> tuple[Catalogue, dict[str, str]]:
    """Topics, principals and ACLs of a prefix of its own (replicated as `where` replicates); the
    environment of its services."""
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    cat = where.catalogue(prefix)
    asyncio.run(admin.apply(cat, where.access(ADMIN), where.credentials))
    # the load generator posts as one partner, far above the per-token rate a partner gets
    return cat, child_env(where, PARCOURS_TOPIC_PREFIX=prefix, PARCOURS_RATE_LIMIT_PER_S="1000000")


def burst_rate(where: Cluster, cases: int, per_case: int, logdir: Path) -> float:
    """The processor's events/s over a burst on fresh topics of `where`."""
    cat, env = fresh(where)
    kafka = where.access(ADMIN)
    n, _ = produce(kafka, cat, case_events(cases, per_case, "n"))
    run = ProcessorRun(kafka, cat, env, logdir)
    try:
        return run.rate(n)
    finally:
        run.stop()


def one_and_three_nodes(where: Cluster, out: dict[str, Any], *, cases: int, per_case: int, logdir: Path) -> None:
    """`processor_one_node_events_per_s` (unless this run measured it already as the processor's
    rate, on the same burst) and `processor_three_nodes_events_per_s`."""
    if "processor_events_per_s" in out and (out.get("cases"), out.get("per_case")) == (cases, per_case):
        out["processor_one_node_events_per_s"] = out["processor_events_per_s"]
    else:
        out["processor_one_node_events_per_s"] = burst_rate(where, cases, per_case, logdir)
    broker = EmbeddedBroker(logdir / f"cluster{NODES}", where.settings.cache_dir)
    t0 = time.monotonic()
    info = broker.start(nodes=NODES)
    out["three_nodes_start_s"] = time.monotonic() - t0
    try:
        # the embedded cluster's own address and credential store, whatever cluster the bench was given
        own = where.settings.model_copy(update={"kafka_bootstrap": "", "kafka_username": "", "kafka_password": None,
                                                 "credentials_file": None, "topic_replication": "", "kafka_ca_file": ""})
        out["processor_three_nodes_events_per_s"] = burst_rate(embedded_cluster(broker, info, own), cases, per_case, logdir)
    finally:
        broker.stop()
