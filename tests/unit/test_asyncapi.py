"""The AsyncAPI 3.0 document of the Kafka side: every catalogue topic has its channel, a partner's
part holds what its ACLs allow and nothing else, and the official AsyncAPI parser (npm,
`make asyncapi-tools`) accepts the documents and refuses a broken one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from parcours.contract.schemas import default_schema_set
from parcours.topology import asyncapi
from parcours.topology.catalogue import Catalogue

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "asyncapi"


def _validate(tmp_path: Path, docs: dict[str, dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    assert shutil.which("node"), "Node.js is not installed: make system-deps installs it"
    assert (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir(), "the AsyncAPI parser is not installed: make asyncapi-tools"
    files = []
    for name, doc in docs.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(doc))
        files.append(str(f))
    return subprocess.run(["node", str(TOOLS / "validate.mjs"), *files], capture_output=True, text=True, timeout=120, check=False)


def test_every_catalogue_topic_has_a_channel() -> None:
    cat = Catalogue.load()
    doc = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    titles = {c["title"] for c in doc["channels"].values()}
    for t in cat.topics.values():
        logical = asyncapi.logical_name(cat, t)
        assert (logical + (".<slug>" if t.owner else "")) in titles, f"topic {t.name} has no channel in docs/asyncapi.json"
    for et in default_schema_set().event_types():
        assert et in doc["components"]["messages"]


def test_a_channel_says_its_key_partitions_and_policy_and_a_message_its_headers() -> None:
    doc = asyncapi.render(Catalogue.load(), default_schema_set())
    views = doc["channels"]["views"]
    assert views["address"] == "parcours.views.{structure}"
    assert "dac-31" in views["parameters"]["structure"]["enum"]
    assert views["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["compact"]
    referral = doc["components"]["messages"]["ReferralSubmitted"]
    assert referral["payload"]["schemaFormat"].startswith("application/vnd.apache.avro")
    assert referral["headers"]["properties"]["ce_type"] == {"const": "fr.parcours.ReferralSubmitted"}
    assert doc["operations"]["receive_referrals"]["bindings"]["kafka"]["groupId"]["enum"] == ["parcours-processor"]


def test_a_partners_part_is_what_its_acls_allow() -> None:
    cat, schemas = Catalogue.load(), default_schema_set()
    dac = asyncapi.render(cat, schemas, kind="dac")
    cpts = asyncapi.render(cat, schemas, kind="cpts")
    one = asyncapi.render(cat, schemas, structure="cpts-31-nord")
    # a structure's own principal reads its views and inbox and writes its ingress; the observatory
    # is read by the DAC adapter and served over HTTP, never to a partner on Kafka
    assert set(dac["channels"]) == set(cpts["channels"]) == {"views", "inbox", "ingress"}
    assert one["channels"]["views"]["parameters"]["structure"]["enum"] == ["cpts-31-nord"]
    ingress = set(cpts["channels"]["ingress"]["messages"])
    assert "AdmissionDecided" not in ingress  # a CPTS may not decide admissions
    assert "ReferralSubmitted" in ingress
    assert set(one["operations"]) == {"send_ingress", "receive_views", "receive_inbox"}


def test_the_official_parser_accepts_the_documents(tmp_path: Path) -> None:
    cat, schemas = Catalogue.load(), default_schema_set()
    docs = {"whole": asyncapi.render(cat, schemas), **{k: asyncapi.render(cat, schemas, kind=k) for k in ("dac", "cpts", "crt")}}
    out = _validate(tmp_path, docs)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("valid AsyncAPI 3.0.0") == len(docs)


@pytest.mark.parametrize("breakage", ["dangling message", "avro schema"])
def test_the_official_parser_refuses_a_broken_document(tmp_path: Path, breakage: str) -> None:
    doc = asyncapi.render(Catalogue.load(), default_schema_set(), kind="dac")
    if breakage == "dangling message":
        doc["channels"]["views"]["messages"]["Nowhere"] = {"$ref": "#/components/messages/Nowhere"}
    else:
        doc["components"]["messages"]["ReferralSubmitted"]["payload"]["schema"]["fields"][0]["type"] = "no-such-type"
    out = _validate(tmp_path, {"broken": doc})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "INVALID" in out.stdout
