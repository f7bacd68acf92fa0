"""A recorded story replays to the same views; record -> replay round-trips records exactly."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, cast

from parcours.bootstrap import Cluster
from parcours.processors import rebuild as rb
from parcours.topology.catalogue import Catalogue
from tests.stack import Stack, eventually

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "parcours.cli", *args], env=stack.env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


async def test_recorded_story_replays_to_the_expected_views(kafka_cluster: Cluster, tmp_path: Path) -> None:
    stack = Stack(kafka_cluster, f"r{uuid.uuid4().hex[:8]}", tmp_path)
    cat = Catalogue.load(prefix=stack.prefix)
    _cli(stack, "topics", "apply")
    replayed = _cli(stack, "replay", str(FIXTURES / "story.avro"))
    assert "replayed 12 records" in replayed.stdout
    assert "12/12 records" in replayed.stderr  # the progress bar
    expected = json.loads((FIXTURES / "story.views.json").read_text())
    stack.start_processor()
    try:
        async def views() -> dict | None:
            stack.check_alive()
            live = rb.assembled(await rb.live_views(cat, stack.kafka))
            return live if live == expected else None
        await eventually(views, 90, "the replayed story's views")
    finally:
        stack.stop()

    # record the replayed topics and compare with the fixture, record by record
    again = tmp_path / "again.avro"
    _cli(stack, "record", "--out", str(again))
    from fastavro import reader

    def rows(p: Path) -> list[tuple]:
        with p.open("rb") as fh:
            records = cast("list[dict[str, Any]]", list(reader(fh)))  # a recording's schema is a record
        return sorted((r["topic"], r["key"], r["value"], tuple((h["key"], h["value"]) for h in r["headers"]), r["timestamp_ms"])
                      for r in records)
    assert rows(again) == rows(FIXTURES / "story.avro")


async def test_replay_refuses_a_file_that_is_not_a_recording(kafka_cluster: Cluster, tmp_path: Path) -> None:
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"not avro at all")
    stack = Stack(kafka_cluster, f"r{uuid.uuid4().hex[:8]}", tmp_path)
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "parcours.cli", "replay", str(bad)], env=stack.env,
                                  capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "not a Parcours recording" in out.stderr
