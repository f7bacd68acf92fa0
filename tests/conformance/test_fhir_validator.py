"""The conformance tier: HAPI FHIR's validator (base R4 4.0.1 definitions, offline, one JVM for
the whole tier) over every resource the bridge serves for the reference story and a demo-like
story, and every sample the tests post, with the project's own extensions and code systems
loaded so that it checks them rather than ignoring them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parcours.fhir import codes, r4
from tests.conformance import hapi, resources
from tests.unit.test_fhir import R4_RULES

OWN = ("urn:parcours:",)
#: implementation guides whose packages cannot be fetched offline: a profile of theirs is "not found",
#: which says nothing of the resource (FHIR.md); the resources are still checked against base R4
OFFLINE_IGS = ("http://hl7.org/fhir/uv/subscriptions-backport/",)
#: HAPI's instance validation of a differential-only StructureDefinition looks for the base
#: definitions' package, which its embedded R4 definitions do not name: each own StructureDefinition's
#: snapshot is generated instead (the `snapshot__<id>` results), as the validator does to check instances
NO_PACKAGE = "Error generating Snapshot: Unable to resolve package id hl7.fhir.r4.core#null"
SERVED = resources.served()
POSTED = resources.posted()
DEFINITIONS = resources.own_definitions()
#: a consent-method the definitions do not hold: the validator must say so (they are loaded, and read)
WRONG_METHOD = {**POSTED["consent"], "extension": [{"url": codes.EXT_METHOD, "valueCode": "telepathic"}]}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    work: Path = tmp_path_factory.mktemp("hapi")
    everything = {**{f"served__{k}": v for k, v in SERVED.items()}, **{f"posted__{k}": v for k, v in POSTED.items()},
                  **{f"definition__{k}": v for k, v in DEFINITIONS.items()}, "wrong_method": WRONG_METHOD}
    found = hapi.validate(DEFINITIONS, everything, work)
    assert set(found) == set(everything) | {f"snapshot__{DEFINITIONS[k]['id']}" for k in DEFINITIONS if k.startswith("StructureDefinition__")}
    return found


def errors(issues: list[dict[str, Any]]) -> list[str]:
    return [f"{i['location']}: {i['message']}" for i in issues if i["severity"] in ("error", "fatal") and not excused(i["message"])]


def excused(message: str) -> bool:
    offline = any(ig in message for ig in OFFLINE_IGS) and ("Failed to retrieve profile" in message or "could not be found" in message)
    return offline or message.startswith(NO_PACKAGE)


def unknown_own(issues: list[dict[str, Any]]) -> list[str]:
    """What the validator could not resolve of the project's own (an extension, a code system)."""
    return [i["message"] for i in issues if any(f"{w} {o}" in i["message"] for o in OWN for w in (
        "Unknown extension", "CodeSystem is unknown and can't be validated:", "Unknown code system", "ValueSet"))
        or (any(o in i["message"] for o in OWN) and "could not be found" in i["message"])]


def test_what_the_bridge_serves_is_valid_r4(results: dict[str, list[dict[str, Any]]]) -> None:
    served = {k: v for k, v in results.items() if k.startswith(("served__", "definition__", "snapshot__"))}
    structures = [k for k in DEFINITIONS if k.startswith("StructureDefinition__")]
    assert len(served) == len(SERVED) + len(DEFINITIONS) + len(structures) > 60
    assert {k: errors(v) for k, v in served.items() if errors(v)} == {}
    assert {k: unknown_own(v) for k, v in served.items() if unknown_own(v)} == {}
    # every item of every Bundle was expressed (an item FHIR cannot express becomes an outcome entry)
    assert [k for k, b in SERVED.items() if any(e.get("search", {}).get("mode") == "outcome" for e in b.get("entry", []))] == []


def test_the_samples_the_tests_post_are_judged_as_hapi_judges_them(results: dict[str, list[dict[str, Any]]]) -> None:
    """What the bridge refuses as not R4 (fhir/r4.py) is exactly what the validator finds errors
    in; the rest is valid R4 (the bridge may refuse it for its own rules)."""
    disagree = {k: (errors(results[f"posted__{k}"]), [i.diagnostics for i in r4.issues(raw)])
                for k, raw in POSTED.items() if bool(errors(results[f"posted__{k}"])) != bool(r4.issues(raw))}
    assert disagree == {}
    assert all(errors(results[f"posted__r4_rule_{i}"]) for i in range(len(R4_RULES)))
    assert {k: unknown_own(v) for k, v in results.items() if k.startswith("posted__") and unknown_own(v)} == {}


def test_the_project_definitions_are_what_the_validator_checks(results: dict[str, list[dict[str, Any]]]) -> None:
    assert any("telepathic" in e for e in errors(results["wrong_method"])), results["wrong_method"]
