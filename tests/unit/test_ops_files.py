"""docker/: the compose stack's structure, the dashboard and alert rules against the real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from parcours.adapters.http.metrics import AdapterMetrics
from parcours.ops.metrics import ProcessorMetrics, ValidatorMetrics, exposed_names

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
    assert "SUCCESS: 8 rules found" in out.stdout


def test_compose_structure_and_referenced_files() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "topics", "processor", "validator", "adapter-dac", "adapter-cpts", "adapter-crt", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("processor", "validator", "adapter-dac", "adapter-cpts", "adapter-crt", "topics"):
        svc = services[name]
        assert (DOCKER.parent / svc["build"]["context"].replace("..", ".") / svc["build"]["dockerfile"]).is_file()
        assert svc["environment"]["PARCOURS_KAFKA_BOOTSTRAP"] == "kafka:9092"
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
