"""The embedded broker's jars: Apache Kafka's runtime closure (pom.xml beside this file), copied
from Maven Central by Maven into a cache outside the repository."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

from parcours.devbroker.errors import BrokerError, ToolMissingError

KAFKA_VERSION = "4.3.1"


def require_tool(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissingError(f"{tool} not found on PATH: {why} (Debian: apt-get install {'openjdk-17-jre-headless' if tool == 'java' else 'maven'})")
    return path


def jars_dir(cache_dir: Path) -> Path:
    """The jars of this pom: a changed pom gets a folder of its own, so the jars a running broker
    was started from are never replaced under it."""
    return cache_dir / f"kafka-{KAFKA_VERSION}-{_pom_digest()[:12]}" / "lib"


def _pom_digest() -> str:
    return hashlib.sha256(resources.files("parcours.devbroker").joinpath("pom.xml").read_bytes()).hexdigest()


def fetch_jars(cache_dir: Path, *, quiet: bool = True) -> tuple[Path, int, float]:
    """Make sure the broker jars are cached; return (folder, total bytes, seconds spent)."""
    lib = jars_dir(cache_dir)
    marker = lib / ".complete"
    t0 = time.monotonic()
    if not marker.exists():
        mvn = require_tool("mvn", "the embedded broker's jars come from Maven Central")
        require_tool("java", "the embedded broker is Apache Kafka, a JVM program")
        tmp = lib.with_name("lib.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        pom = resources.files("parcours.devbroker").joinpath("pom.xml")
        with resources.as_file(pom) as pom_path:
            cmd = [
                mvn, "-B", *(["-q"] if quiet else []), "-f", str(pom_path),
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"maven could not fetch Kafka {KAFKA_VERSION}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        marker.write_text(_pom_digest())
    size = sum(p.stat().st_size for p in lib.glob("*.jar"))
    return lib, size, time.monotonic() - t0
