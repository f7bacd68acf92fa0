"""HAPI FHIR's validator (tools/fhir-validator), run once over a folder of resources.

Its jars are the closure of tools/fhir-validator/pom.xml, fetched by `make fhir-validator` into
~/.cache/parcours/fhir-validator-<the pom's digest>/lib (a changed pom, a new folder, as for the
broker's jars). `Validate.java` runs as a single-file source program: one JVM for the whole tier."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "fhir-validator"


def jars() -> Path:
    digest = hashlib.sha256((TOOL / "pom.xml").read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("PARCOURS_CACHE", Path.home() / ".cache" / "parcours"))
    lib = cache / f"fhir-validator-{digest}" / "lib"
    if not (lib / ".complete").exists():
        raise RuntimeError(f"HAPI FHIR's validator is not fetched ({lib}): run `make fhir-validator`")
    return lib


def validate(definitions: dict[str, dict[str, Any]], resources: dict[str, dict[str, Any]], work: Path) -> dict[str, list[dict[str, Any]]]:
    """{name: the validator's issues} for each resource, with `definitions` (the project's own
    StructureDefinitions, CodeSystems and ValueSets) loaded; offline (no terminology server)."""
    for folder, items in (("definitions", definitions), ("resources", resources)):
        (work / folder).mkdir()
        for name, res in items.items():
            (work / folder / f"{name}.json").write_text(json.dumps(res))
    cmd = ["java", "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{jars()}/*",
           str(TOOL / "Validate.java"), str(work / "definitions"), str(work / "resources")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the validator failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            found = json.loads(line)
            out[found["file"].removesuffix(".json")] = found["issues"]
    return out
