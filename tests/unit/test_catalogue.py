"""The topic catalogue, the registry and the kind policy: loading, refusals with line numbers, ACLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from parcours.paths import topics_dir
from parcours.topology.catalogue import Catalogue
from parcours.topology.errors import CatalogueError
from parcours.topology.registry import KindPolicy, Registry, dev_token

CATALOGUE = (topics_dir() / "catalogue.yaml").read_text()


def _load_with(tmp_path: Path, text: str, **kw) -> Catalogue:
    path = tmp_path / "catalogue.yaml"
    path.write_text(text)
    return Catalogue.load(path, **kw)


def test_shipped_catalogue_has_every_family_co_partitioned() -> None:
    cat = Catalogue.load()
    canonical = cat.canonical()
    assert {t.name for t in canonical} == {
        f"parcours.{n}" for n in ("referrals", "evaluations", "admissions", "consents", "messages", "ruptures")
    }
    assert len({t.partitions for t in canonical}) == 1
    assert all(t.key == "case_id" for t in canonical)
    assert cat.topic("case-state").config["cleanup.policy"] == "compact"
    assert cat.topic("case-state").partitions == canonical[0].partitions  # the processor's changelog
    assert cat.topic("deadletter").role == "deadletter"


def test_per_structure_topics_exist_for_every_registered_structure() -> None:
    cat = Catalogue.load()
    for slug in cat.registry.structures:
        assert cat.per_structure("inbox", slug).partitions == 1
        assert cat.per_structure("ingress", slug).owner == slug
        views = cat.per_structure("views", slug)
        assert views.config["cleanup.policy"] == "compact"
        assert views.owner == slug
        # an item's JSON may be several times its Avro form: views allow far more than events
        assert int(views.config["max.message.bytes"]) >= 6 * 1048588


def test_prefix_and_profiles() -> None:
    prod = Catalogue.load(prefix="t1", profile="production")
    assert all(t.name.startswith("t1.") for t in prod.topics.values())
    assert {t.replication_factor for t in prod.topics.values()} == {3}
    assert {t.config["min.insync.replicas"] for t in prod.topics.values()} == {"2"}
    dev = Catalogue.load(profile="dev")
    assert {t.replication_factor for t in dev.topics.values()} == {1}


def test_kind_rights_come_from_the_catalogue() -> None:
    cat = Catalogue.load()
    assert cat.may_publish("crt", "AdmissionDecided")
    assert not cat.may_publish("cpts", "AdmissionDecided")
    assert not cat.may_publish("dac", "AdmissionDecided")
    assert not cat.may_publish("crt", "ReferralSubmitted")
    assert cat.publishable("cpts") == ["MessagePosted", "OpinionGiven", "ReferralStatusChanged", "ReferralSubmitted", "RuptureReported"]
    assert not cat.may_publish("cpts", "CommissionOpened")
    assert not cat.may_publish("cpts", "AdmissionDecided")
    assert cat.may_publish("crt", "CommissionOpened")


def test_acls_are_derived_from_producers_and_consumers() -> None:
    acls = {str(a) for a in Catalogue.load().acls()}
    # a partner: its own ingress, views and inbox, its own consumer groups, nothing else
    mine = {a for a in acls if a.startswith("User:cpts-31-nord ")}
    assert mine == {
        "User:cpts-31-nord WRITE topic:parcours.ingress.cpts-31-nord",
        "User:cpts-31-nord READ topic:parcours.views.cpts-31-nord",
        "User:cpts-31-nord READ topic:parcours.inbox.cpts-31-nord",
        "User:cpts-31-nord READ group:parcours-cpts-31-nord*",
    }
    assert "User:svc-processor READ topic:parcours.consents" in acls
    assert "User:svc-processor WRITE transactional_id:parcours-processor*" in acls


def test_an_adapter_writes_only_what_its_kind_may_publish_and_reads_only_its_kind() -> None:
    acls = {str(a) for a in Catalogue.load().acls()}
    assert "User:svc-adapter-crt WRITE topic:parcours.admissions" in acls
    # a CPTS gives opinions to a CRT's commission (admissions); deciding and opening a commission
    # are refused to it by kind, at the edge (test_kind_rights_come_from_the_catalogue)
    assert "User:svc-adapter-cpts WRITE topic:parcours.admissions" in acls
    assert "User:svc-adapter-cpts WRITE topic:parcours.evaluations" not in acls
    assert "User:svc-adapter-cpts WRITE topic:parcours.consents" not in acls
    assert "User:svc-adapter-cpts READ topic:parcours.views.cpts-31-sud" in acls
    assert "User:svc-adapter-cpts READ topic:parcours.views.dac-31" not in acls
    assert "User:svc-adapter-dac READ topic:parcours.observatory" in acls
    assert "User:svc-adapter-crt READ topic:parcours.observatory" not in acls  # readers: [dac]


def test_principals_are_the_structures_and_one_per_service() -> None:
    cat = Catalogue.load()
    assert cat.principals() == ["cpts-31-nord", "cpts-31-sud", "crt-31-muret", "crt-31-nord", "dac-31",
                                "svc-adapter-cpts", "svc-adapter-crt", "svc-adapter-dac", "svc-ops",
                                "svc-processor", "svc-validator"]
    assert cat.service_principal("adapter", "dac") == "svc-adapter-dac"
    assert cat.group_id("processor", "-clock") == "parcours-processor-clock"
    assert cat.owns("parcours.views.dac-31")
    assert cat.owns("parcours-processor-x")
    assert not cat.owns("parcoursX.views.dac-31")
    assert not cat.owns("other.views.dac-31")


def test_unknown_schema_is_refused_with_its_line(tmp_path: Path) -> None:
    text = CATALOGUE.replace("MessagePosted: [dac, cpts, crt]", "MessagePostd: [dac, cpts, crt]")
    with pytest.raises(CatalogueError, match=r"catalogue.yaml:\d+: topic messages: unknown schema 'MessagePostd'") as err:
        _load_with(tmp_path, text)
    assert err.value.line is not None
    assert text.splitlines()[err.value.line - 1].strip() == "MessagePostd: [dac, cpts, crt]"


def test_bad_setting_is_refused_with_its_line(tmp_path: Path) -> None:
    text = CATALOGUE.replace("cleanup.policy: compact}", "cleanup.policy: compakt}")
    with pytest.raises(CatalogueError, match=r"bad value 'compakt' for cleanup\.policy") as err:
        _load_with(tmp_path, text)
    assert err.value.line is not None
    assert "compakt" in text.splitlines()[err.value.line - 1]


def test_unknown_config_key_and_broken_copartitioning_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"unknown config 'retention\.hours'"):
        _load_with(tmp_path, CATALOGUE.replace("max.message.bytes: 2097152}", "max.message.bytes: 2097152, retention.hours: 168}"))
    text = CATALOGUE.replace("  evaluations:\n    role: canonical\n", "  evaluations:\n    role: canonical\n    partitions: 3\n")
    with pytest.raises(CatalogueError, match="must all have 6 partitions"):
        _load_with(tmp_path, text)


def test_registry_and_dev_tokens(tmp_path: Path) -> None:
    reg = Registry.load(topics_dir() / "structures.yaml")
    assert set(reg.structures) == {"dac-31", "cpts-31-nord", "cpts-31-sud", "crt-31-muret", "crt-31-nord"}
    muret = reg.by_token(dev_token("crt-31-muret"))
    assert muret is not None
    assert muret.slug == "crt-31-muret"
    assert reg.by_token("dev-nobody") is None
    assert reg.with_dev_tokens() == list(reg.structures)
    assert [s.slug for s in reg.covered_by("cpts")] == ["cpts-31-nord", "cpts-31-sud"]
    bad = tmp_path / "s.yaml"
    bad.write_text("structures:\n  - slug: dac-31\n    kind: hospital\n    territory: '31'\n    name: x\n    token_sha256: " + "0" * 64 + "\n")
    with pytest.raises(CatalogueError, match=r"s.yaml:2: kind 'hospital'"):
        Registry.load(bad)


def test_kind_policy_ceiling() -> None:
    policy = KindPolicy.load(topics_dir() / "policy.yaml")
    assert policy.hidden["cpts"] == {"social", "medical", "functional"}
    assert policy.hidden["dac"] == frozenset()
    assert policy.hidden["crt"] == frozenset()


def test_retention_comes_from_named_policies_and_production_keeps_no_event_forever(tmp_path: Path) -> None:
    dev, prod = Catalogue.load(profile="dev"), Catalogue.load(profile="production")
    assert dev.topic("referrals").config["retention.ms"] == "-1"
    for t in prod.canonical():
        assert int(t.config["retention.ms"]) > 0, t.name
    assert prod.topic("audit").config["retention.ms"] == prod.topic("referrals").config["retention.ms"]
    text = CATALOGUE.replace("care_record:      {dev: -1, production: 631152000000}", "care_record:      {dev: -1, production: -1}")
    with pytest.raises(CatalogueError, match="may not keep events forever in production"):
        _load_with(tmp_path, text, profile="production")
    unknown = CATALOGUE.replace("retention: clock\n", "retention: forever_and_ever\n")
    with pytest.raises(CatalogueError, match="unknown retention policy 'forever_and_ever'"):
        _load_with(tmp_path, unknown)


def test_a_registry_change_keeps_the_replication_the_catalogue_was_loaded_with() -> None:
    """A three-node cluster replicates as production does while its profile stays dev: a structure
    joining must not make every topic look drifted (replication 1) to `topics apply`."""
    cat = Catalogue.load(prefix="t", replication="production")
    again = cat.with_registry(cat.registry)
    assert {t.replication_factor for t in cat.topics.values()} == {3}
    assert {t.replication_factor for t in again.topics.values()} == {3}
    assert again.profile == "dev"
