"""docker/: the compose stack's structure, the dashboard and alert rules against the real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from parcours.adapters.http.metrics import AdapterMetrics
from parcours.devbroker.config import MIN_INSYNC, REPLICAS, NodePorts, Security, server_properties
from parcours.devbroker.jars import KAFKA_VERSION
from parcours.ops.metrics import ProcessorMetrics, ValidatorMetrics, exposed_names
from parcours.security.credentials import ADMIN
from parcours.topology.catalogue import Catalogue

DOCKER = Path(__file__).resolve().parents[2] / "docker"
BUILTIN = {"up"}


def _exposed() -> set[str]:
    names: set[str] = set()
    for metrics in (ProcessorMetrics(), ValidatorMetrics(), AdapterMetrics()):
        names |= exposed_names(metrics.registry)
    return names


def _used(expr: str) -> set[str]:
    return set(re.findall(r"\b(parcours_[a-z_]+)\b", expr))


def test_every_dashboard_and_rule_metric_is_exposed() -> None:
    exposed = _exposed()
    dash = json.loads((DOCKER / "grafana/dashboards/parcours.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DOCKER / "prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(_used(e) for e in exprs))
    assert used, "no metric found in the dashboard and rules"
    assert used <= exposed, f"not exposed by any service: {sorted(used - exposed)}"
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"ParcoursProcessorDown", "ParcoursConsumerLagGrowing", "ParcoursDeadLetters",
            "ParcoursWebhookFailures", "ParcoursViewLatencyOverTarget", "ParcoursValidatorDown",
            "ParcoursWebhookBacklogGrowing"} <= alerts


def test_metric_names_follow_prometheus_rules_and_carry_no_person_label() -> None:
    for metrics in (ProcessorMetrics(), ValidatorMetrics(), AdapterMetrics()):
        for m in metrics.registry.collect():
            assert re.fullmatch(r"parcours_[a-z_]+", m.name)
            if m.type == "histogram":
                assert m.name.endswith("_seconds"), m.name
    for metrics in (ProcessorMetrics(), ValidatorMetrics(), AdapterMetrics()):
        for collector in metrics.registry._collector_to_names:  # noqa: SLF001 - label names live here
            labels = set(getattr(collector, "_labelnames", ()))
            assert not labels & {"case_id", "pseudonym", "person", "postcode", "birth_year", "identity", "ins", "matricule", "oid",
                                 "birth_family_name", "birth_given_names", "birth_date", "sex", "birth_place", "used_name",
                                 "used_given_name", "contact", "phone", "address", "person_key", "identity_sealed"}, labels


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    out = subprocess.run([promtool, "check", "rules", str(DOCKER / "prometheus/alerts.yml")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 13 rules found" in out.stdout
    # and the Kafka alerts fire on what they watch (synthetic series, docker/prometheus/alerts.test.yml)
    tested = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=DOCKER / "prometheus", capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_kafka_metric_of_the_rules_is_one_the_exporter_names() -> None:
    exporter = {r["name"] for r in yaml.safe_load((DOCKER / "kafka/kafka.yml").read_text())["rules"]}
    rules = yaml.safe_load((DOCKER / "prometheus/alerts.yml").read_text())
    used = set().union(*(set(re.findall(r"\b(kafka_[a-z_]+)\b", r["expr"])) for g in rules["groups"] for r in g["rules"]))
    assert {"kafka_server_replicamanager_underreplicatedpartitions", "kafka_server_replicamanager_isrshrinks_total"} <= used
    assert used <= exporter, f"not exported by docker/kafka/kafka.yml: {sorted(used - exporter)}"


KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")
#: embedded-broker settings a compose node has its own value for: its identity and addresses, its
#: credential (start.sh writes it from a secret), and what the embedded broker shortens for tests
#: on one machine (internal topics' partitions, failure detection, cleaner and retention checks)
NODE_OWN = {"node.id", "listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"}
DEV_ONLY = {"offsets.topic.num.partitions", "transaction.state.log.num.partitions", "share.coordinator.state.topic.num.partitions",
            "broker.session.timeout.ms", "broker.heartbeat.interval.ms", "replica.lag.time.max.ms",
            "group.initial.rebalance.delay.ms", "log.cleaner.backoff.ms", "log.retention.check.interval.ms"}


def _properties(env: dict[str, object]) -> dict[str, str]:
    """A compose node's KAFKA_* variables as its start script maps them to server.properties."""
    out = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name == "KAFKA_CLUSTER_ID":
            continue
        key = name.removeprefix("KAFKA_").lower().replace("___", "-").replace("__", "\x01").replace("_", ".").replace("\x01", "_")
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _embedded(node_id: int) -> dict[str, str]:
    nodes = [NodePorts(i, 9092, 9093) for i in (1, 2, 3)]
    text = server_properties(nodes[node_id - 1], nodes, Path("/var/lib/kafka/data"), Security("secret"))
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_compose_kafka_is_the_embedded_broker_as_a_three_node_cluster_with_the_production_topic_profile() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    from_image = re.search(r"^FROM (\S+)", (DOCKER / "kafka/Dockerfile").read_text(), re.M)
    assert from_image
    assert from_image.group(1) == f"apache/kafka:{KAFKA_VERSION}"
    start = (DOCKER / "kafka/start.sh").read_text()
    assert "--add-scram" in start
    assert "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config" in start
    for i, name in enumerate(KAFKA_NODES, start=1):
        node = services[name]
        assert node["build"]["context"] == "kafka"
        props, embedded = _properties(node["environment"]), _embedded(i)
        shared = {k: v for k, v in embedded.items() if k not in NODE_OWN | DEV_ONLY}
        assert {k: props.get(k) for k in shared} == shared, name
        assert props["node.id"] == str(i)
        assert props["listeners"] == "SASL_PLAINTEXT://:9092,CONTROLLER://:9093"
        assert props["advertised.listeners"] == f"SASL_PLAINTEXT://{name}:9092"
        assert props["controller.quorum.voters"] == ",".join(f"{j}@{n}:9093" for j, n in enumerate(KAFKA_NODES, start=1))
    # the topics: the catalogue's production profile, which the embedded cluster of 3 nodes uses
    production = Catalogue.load(profile="production")
    assert {(t.replication_factor, t.config["min.insync.replicas"]) for t in production.topics.values()} == {(REPLICAS, str(MIN_INSYNC))}
    assert _embedded(1)["default.replication.factor"] == str(REPLICAS)
    assert _embedded(1)["min.insync.replicas"] == str(MIN_INSYNC)
    for name in ("topics", "processor", "adapter-dac"):
        env = services[name]["environment"]
        assert env["PARCOURS_TOPIC_REPLICATION"] == "production"
        assert env["PARCOURS_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert services["topics"]["environment"]["PARCOURS_KAFKA_USERNAME"] == ADMIN
    assert "PARCOURS_KAFKA_USERNAME" not in services["processor"]["environment"]  # each service as its own principal


def test_compose_structure_and_referenced_files() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {*KAFKA_NODES, "topics", "processor", "validator", "adapter-dac", "adapter-cpts", "adapter-crt", "prometheus", "grafana"} <= set(services)
    for name in ("processor", "validator", "adapter-dac", "adapter-cpts", "adapter-crt", "topics"):
        svc = services[name]
        assert (DOCKER.parent / svc["build"]["context"].replace("..", ".") / svc["build"]["dockerfile"]).is_file()
        assert svc["environment"]["PARCOURS_KAFKA_BOOTSTRAP"] == ",".join(f"{n}:9092" for n in KAFKA_NODES)
        assert svc["command"][0] in {"processor", "validator", "adapter", "topics"}
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), source
    prom = yaml.safe_load((DOCKER / "prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert {"adapter-dac:8101", "processor:8104", "validator:8105"} <= targets
    assert all(t.split(":")[0] in services for t in targets)
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (DOCKER.parent / copied).exists(), copied
