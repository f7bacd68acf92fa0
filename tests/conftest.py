"""Session fixtures: one real Apache Kafka broker per test session (or PARCOURS_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess

ROOT = Path(__file__).resolve().parent.parent

# no per-example time limit: the suite runs on two workers beside brokers, and a property test's
# verdict must not depend on how loaded the machine is (speed is the benchmarks' business)
settings.register_profile("parcours", deadline=None)
settings.load_profile("parcours")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/e2e/" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real broker: the configured cluster, or an embedded one started with the project's code
    (SASL/SCRAM and ACLs on, as in production; its credential store beside its data)."""
    from parcours.bootstrap import cluster
    from parcours.devbroker.broker import EmbeddedBroker
    from parcours.settings import Settings
    from tests.stack import cluster_of

    if os.environ.get("PARCOURS_KAFKA_BOOTSTRAP"):
        yield cluster(Settings())
        return
    broker = EmbeddedBroker(tmp_path_factory.mktemp("kafka"), Settings().cache_dir)
    info = broker.start()
    try:
        yield cluster_of(broker, info)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka(kafka_cluster: Cluster) -> KafkaAccess:
    """The cluster as its administrator (topics, ACLs, test data); services run as their own principals."""
    from parcours.security.credentials import ADMIN

    return kafka_cluster.access(ADMIN)


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own, so tests never share topics."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def stack(kafka_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    """The processor, the three adapters and the validator as subprocesses, on topics of their own."""
    from tests.stack import Stack

    s = Stack(kafka_cluster, f"s{uuid.uuid4().hex[:10]}", tmp_path_factory.mktemp("stack"))
    s.start()
    try:
        yield s
    finally:
        s.stop()
