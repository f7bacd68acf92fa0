"""`parcours bench`: throughput, memory and latency figures on the real broker, printed, never asserted.

On topics of its own (prefix `bench<random>`), from one run (`--only processor|rebuild|edge`: one part):
1. raw produce, and raw consume + decode (confluent-kafka, the client under Quix Streams, and the
   project's Avro codec): the ceiling of the plumbing for the processor;
2. the engine baseline: a Quix Streams pipeline over the same records and settings as the
   processor (exactly-once, RocksDB) that only updates state and sends one output per event;
3. the processor (`parcours processor`, a subprocess): events/s from its first event to no lag,
   for cases of 10 events and of 1,000 events, its ratios to 1 and 2, its resident memory
   after 10,000 and after 100,000 cases, and a restart after SIGKILL (to its first event, and a
   new case's way to a view once it has caught up); where its time goes per event (the case-file
   step, the rest, its CPU) and the rate a free step would reach; two instances in one group;
   the same burst on one node and on an embedded three-node cluster (`benchnodes`);
4. `views rebuild` over `--rebuild-events` events (default 1,000,000);
5. the HTTP edge (`benchload`), with the processor running: accepted message POSTs/s of one DAC
   adapter and of a bare FastAPI endpoint that does nothing, served the same way, both driven by
   `wrk` (closed loop, 1 thread, 32 connections, 15 s), and their ratio; the adapter again with a
   JWT access token from its token endpoint instead of the static token, and that ratio; then an open loop at a
   fixed rate (500 POSTs/s for 60 s, sent on schedule whatever the answers) against the adapter:
   scheduled send -> 202 and 202 -> the message's item in `views.dac-31` (p50, p99, max), errors,
   and accepted messages never seen in the view; and the whole system's CPU per accepted POST.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import uvloop
from confluent_kafka import Producer

from parcours.bootstrap import Cluster
from parcours.bus.kafkaio import KafkaAccess, produce_waiting
from parcours.devbroker.broker import free_port
from parcours.devtools.benchkit import (
    CpuMeter,
    ProcessorRun,
    broker_pid,
    case_events,
    consume_decode,
    produce,
    rate_of_instances,
    rss_mb,
    spawn,
    until_in_view,
)
from parcours.devtools.benchnodes import fresh, one_and_three_nodes
from parcours.security.credentials import ADMIN
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import default_policy, dev_token


class _Figures(dict[str, Any]):
    """The figures, each also printed to stderr as soon as it is measured (a late failure keeps them)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        print(f"bench: {key} = {value}", file=sys.stderr, flush=True)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


@dataclass(frozen=True)
class EdgeLoad:
    """The HTTP edge's load (`parcours bench` options)."""

    wrk_seconds: float = 15.0
    wrk_connections: int = 32
    rate: float = 500.0  # open loop: POSTs per second
    open_seconds: float = 60.0
    grace_s: float = 10.0  # how long a message accepted by the open loop may take to reach the view
    cases: int = 500


PARTS = ("processor", "nodes", "rebuild", "edge", "restart")
#: views in the adapter's read model when its restart is timed
RESTART_VIEWS = (10_000, 100_000)


def run(where: Cluster, *, cases: int, per_case: int, long_cases: int, long_per_case: int, rss_cases: int,  # noqa: PLR0913 - one keyword per `parcours bench` option
        rebuild_events: int, edge: EdgeLoad, logdir: Path, only: str | None = None) -> dict[str, Any]:
    """Every part of the bench, or `only` one of PARTS."""
    logdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = _Figures()
    kafka = where.access(ADMIN)  # the bench's own clients; each service runs as its own principal
    if only in (None, "processor"):
        out.update(cases=cases, per_case=per_case)
        _processor(where, kafka, out, cases=cases, per_case=per_case, long_cases=long_cases, long_per_case=long_per_case,
                   rss_cases=rss_cases, logdir=logdir)
    # 3d. the same burst on one node and on a three-node cluster (replication factor 3, min ISR 2)
    if only in (None, "nodes"):
        one_and_three_nodes(where, out, cases=cases, per_case=per_case, logdir=logdir)
    # 4. rebuild at scale
    if only in (None, "rebuild") and rebuild_events:
        from parcours.processors import rebuild as rb

        cat3, _ = fresh(where)
        rcases = max(1, rebuild_events // 100)
        produce(kafka, cat3, case_events(rcases, rebuild_events // rcases, "r"))
        result = asyncio.run(rb.rebuild(cat3, kafka, default_policy(), progress=rb.print_progress()))
        print(file=sys.stderr)
        out["rebuild_events"] = result.events
        out["rebuild_seconds"] = result.seconds
    # 5. the HTTP edge on fresh, small topics: the adapter's start-up read of every view it serves
    #    (issue 13) must not be what this figure measures
    if only in (None, "edge"):
        cat4, env4 = fresh(where)
        produce(kafka, cat4, case_events(edge.cases, 2, "a"))
        _edge(kafka, cat4, env4, logdir, edge, out, broker=broker_pid(where))
    # 6. the adapter's restart with its read model holding many views
    if only in (None, "restart"):
        cat5, env5 = fresh(where)
        _restart(kafka, cat5, env5, logdir, out)
    return out


def _restart(kafka: KafkaAccess, cat: Catalogue, env: dict[str, str], logdir: Path, out: dict[str, Any]) -> None:
    """Start, then restart, a DAC adapter whose views topic holds 10,000 then 100,000 case views
    (one item record each, as the processor writes them): the first start reads them all, a
    restart resumes at the positions its read model stored (issue 13: flat, whatever the history)."""
    topic = cat.per_structure("views", BENCH_STRUCTURE).name
    edge_dir = logdir / f"edge-{cat.prefix}"
    env = {**env, "PARCOURS_EDGE_DIR": str(edge_dir)}
    figures: dict[str, dict[str, float]] = {}
    written = 0
    for views in RESTART_VIEWS:
        written += _write_views(kafka, topic, written, views - written)
        first = _timed_start(env, logdir)
        restart = _timed_start(env, logdir)
        figures[str(views)] = {"first_start_s": first[0], "restart_s": restart[0], "rss_mb": restart[1],
                               "offsets_read_at_restart": restart[2]}
        out["adapter_restart"] = figures
    out["adapter_store_mb"] = sum(f.stat().st_size for f in edge_dir.glob("*")) / 1e6


def _write_views(kafka: KafkaAccess, topic: str, start: int, n: int) -> int:
    producer = Producer(kafka.producer_config(**{"linger.ms": 20, "batch.size": 512 * 1024}))
    for i in range(start, start + n):
        record = {"item": f"referral:r{i}", "first": [1764000000000 + i, f"e{i}"], "basis": "referral_party",
                  "entry": {"referral_id": f"r{i}", "from": "cpts-31-nord", "to": BENCH_STRUCTURE, "urgency": "soon",
                            "reasons": ["retour à domicile"], "summary": "Synthetic benchmark view item of a plausible size.",
                            "person": {"pseudonym": f"P-{i:08d}", "birth_year": 1940, "postcode": "31000"}}}
        produce_waiting(producer, topic, json.dumps(record).encode(), f"case-v{i}/referral:r{i}".encode())
    producer.flush(120)
    return n


def _timed_start(env: dict[str, str], logdir: Path) -> tuple[float, float, int]:
    """(seconds from spawn to ready, resident MB once ready, offsets its read model read)."""
    port = free_port()
    t0 = time.perf_counter()
    proc = spawn(["adapter", "dac", "--port", str(port)], env, logdir / "adapter-restart.log")
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError("bench: the adapter exited")
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if r.status_code == HTTPStatus.OK:
                    return time.perf_counter() - t0, rss_mb(proc.pid), int(r.json()["read_model"]["offsets_read_at_start"])
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bench: timed out waiting for the adapter")
            time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _processor(where: Cluster, kafka: KafkaAccess, out: dict[str, Any], *, cases: int, per_case: int, long_cases: int,
               long_per_case: int, rss_cases: int, logdir: Path) -> None:
    # 1. the burst on fresh topics, produced before anything reads it
    cat, env = fresh(where)
    n, secs = produce(kafka, cat, case_events(cases, per_case, "a"))
    out["events"] = n
    out["produce_events_per_s"] = n / secs
    n, secs = consume_decode(kafka, cat)
    out["raw_consume_decode_events_per_s"] = n / secs
    # 2. the engine baseline on the same records
    res = subprocess.run([sys.executable, "-c", ("import sys; from parcours.devtools.benchkit import engine_baseline; "
                                                 "print(engine_baseline(sys.argv[1], int(sys.argv[2])))"),
                          cat.prefix, str(n)],
                         capture_output=True, text=True, timeout=1800, check=True, env=env)
    out["engine_baseline_events_per_s"] = float(res.stdout.strip().splitlines()[-1])
    # 3. the processor on the same records (cases of `per_case` events), then memory as cases grow
    proc = ProcessorRun(kafka, cat, env, logdir)
    try:
        out["processor_events_per_s"] = proc.rate(n)
        out["processor_time_split"] = proc.split
        rss = {cases: proc.rss_mb()}
        out["processor_rss_mb_at_cases"] = rss
        more = max(0, rss_cases - cases)
        if more:
            m, _ = produce(kafka, cat, case_events(more, 1, "b"))
            proc.wait_for(n + m)
            rss[rss_cases] = proc.rss_mb()
            out["processor_rss_mb_at_cases"] = rss
        # 3a. a restart after SIGKILL, as the supervisor does it (same instance, same state folder)
        proc, out["processor_restart_after_kill"] = _restart_after_kill(kafka, cat, env, logdir, proc)
    finally:
        proc.stop()
    # 3b. long cases on fresh topics
    cat2, env2 = fresh(where)
    n2, _ = produce(kafka, cat2, case_events(long_cases, long_per_case, "l"))
    proc = ProcessorRun(kafka, cat2, env2, logdir)
    try:
        out["processor_long_cases_events_per_s"] = proc.rate(n2)
        out["long_cases"] = long_cases
        out["long_per_case"] = long_per_case
    finally:
        proc.stop()
    # 3c. scale-out: two instances in one group on fresh topics (the same burst), on the same cores
    cat3, env3 = fresh(where)
    n3, _ = produce(kafka, cat3, case_events(cases, per_case, "s"))
    runs = [ProcessorRun(kafka, cat3, env3, logdir, instance=suffix) for suffix in ("", "-2")]
    try:
        out["processor_two_instances_events_per_s"] = rate_of_instances(runs, n3)
    finally:
        for r in runs:
            r.stop()


BENCH_STRUCTURE = "dac-31"  # the load posts as this DAC (the bench's cases are referred to it), with its dev token
BENCH_TOKEN = dev_token(BENCH_STRUCTURE)


def _edge(kafka: KafkaAccess, cat: Catalogue, env: dict[str, str], logdir: Path, load: EdgeLoad, out: dict[str, Any], *,
          broker: dict[str, int]) -> None:
    """wrk against a bare FastAPI endpoint then against the DAC adapter (closed loop, same
    settings), then the open loop against the adapter with its view topic tailed. `broker`: the
    broker's process when it is the embedded one, for the whole system's CPU per POST."""
    from parcours.devtools import benchload as bl

    proc = ProcessorRun(kafka, cat, env, logdir)
    port = free_port()
    bare_port = next(p for p in iter(free_port, None) if p != port)
    key = _register_key(kafka, cat)  # the DAC signs in with SMART Backend Services too: its access token outlives the run
    adapter = spawn(["adapter", "dac", "--port", str(port)], env | {"PARCOURS_ACCESS_TOKEN_TTL_S": "3600"}, logdir / "adapter-dac.log")
    with (logdir / "bench-bare.log").open("ab") as log:
        bare = subprocess.Popen([sys.executable, "-c", "import sys; from parcours.devtools.benchbare import serve_bare; serve_bare(int(sys.argv[1]))",
                                 str(bare_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base, bare_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
    try:
        _wait_drained(proc, 300)
        asyncio.run(_edge_ready(base, bare_base, load.cases))
        with tempfile.TemporaryDirectory(prefix="parcours-bench-") as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(bl.wrk_script(load.cases, BENCH_TOKEN))
            out["wrk"] = {"threads": 1, "connections": load.wrk_connections, "seconds": load.wrk_seconds}
            print(f"bench: wrk on the bare endpoint (pid {bare.pid}) for {load.wrk_seconds:g} s", file=sys.stderr, flush=True)
            out.update(bl.run_wrk(bare_base, str(script), seconds=load.wrk_seconds, connections=load.wrk_connections).figures("bare"))
            # the edge alone: the processor stopped while wrk runs (on 2 cores it would take the
            # CPU the adapter is measured on), then the whole system, the processor consuming
            proc.stop()
            print(f"bench: wrk on the adapter (pid {adapter.pid}), processor stopped, for {load.wrk_seconds:g} s", file=sys.stderr, flush=True)
            out.update(bl.run_wrk(base, str(script), seconds=load.wrk_seconds, connections=load.wrk_connections).figures("adapter"))
            # the same with a JWT access token (SMART Backend Services) instead of the static token
            (Path(tmp) / "jwt.lua").write_text(bl.wrk_script(load.cases, asyncio.run(_access_token(base, key))))
            print(f"bench: wrk on the adapter with a JWT access token for {load.wrk_seconds:g} s", file=sys.stderr, flush=True)
            out.update(bl.run_wrk(base, str(Path(tmp) / "jwt.lua"), seconds=load.wrk_seconds,
                                  connections=load.wrk_connections).figures("adapter_jwt"))
            out["adapter_jwt_to_static"] = out["adapter_jwt_posts_per_s"] / out["adapter_posts_per_s"]
            proc = ProcessorRun(kafka, cat, env, logdir)
            _wait_drained(proc, 600)
            print(f"bench: wrk on the adapter, processor running, for {load.wrk_seconds:g} s", file=sys.stderr, flush=True)
            meter = CpuMeter({"adapter": adapter.pid, "processor": proc.proc.pid, **broker})
            w = bl.run_wrk(base, str(script), seconds=load.wrk_seconds, connections=load.wrk_connections)
            out.update(w.figures("adapter_with_processor"))
            out["system_cpu_us_per_post"] = meter.per(w.requests)
        out["adapter_to_bare"] = out["adapter_posts_per_s"] / out["bare_posts_per_s"]
        out["adapter_with_processor_to_bare"] = out["adapter_with_processor_posts_per_s"] / out["bare_posts_per_s"]
        _wait_drained(proc, 600)  # the processor works through what wrk posted before the open loop begins
        print(f"bench: open loop on the adapter, {load.rate:g} POSTs/s for {load.open_seconds:g} s", file=sys.stderr, flush=True)
        # on uvloop, as the adapter: the generator's own cost per request is what limits the rate it keeps on 2 cores
        figures, conns = uvloop.run(bl.open_loop(kafka, cat.per_structure("views", BENCH_STRUCTURE).name, "127.0.0.1", port, BENCH_TOKEN,
                                                  load.cases, rate=load.rate, seconds=load.open_seconds, grace_s=load.grace_s))
        out.update(figures)
        out["open_connections"] = conns
    finally:
        for p in (adapter, bare):
            p.terminate()
        for p in (adapter, bare):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        proc.stop()


def _register_key(kafka: KafkaAccess, cat: Catalogue) -> Any:
    """A key for the bench's DAC, in the registry topic the adapter reads at start."""
    from parcours.auth.client import new_key, public_jwk
    from parcours.topology import changes, live

    key = new_key("ES384", "bench")
    asyncio.run(live.change(cat, kafka, None, changes.update(BENCH_STRUCTURE, {}, add_keys=[public_jwk(key)])))
    return key


async def _access_token(base: str, key: Any) -> str:
    from parcours.auth.client import assertion, token_form

    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(base + "/auth/token", data=token_form(assertion(BENCH_STRUCTURE, key, base + "/auth/token"), "system/*.cruds"))
        r.raise_for_status()
        return str(r.json()["access_token"])


def _wait_drained(proc: ProcessorRun, timeout: float) -> None:
    """Until the processor has no lag on its input topics."""
    deadline = time.monotonic() + timeout
    while proc.lag():
        if proc.proc.poll() is not None:
            raise RuntimeError("bench: the processor exited")
        if time.monotonic() > deadline:
            raise RuntimeError("bench: timed out waiting for the processor")
        time.sleep(0.2)


async def _edge_ready(base: str, bare_base: str, cases: int) -> None:
    """The adapter serves the view of the last pre-produced case; the bare endpoint answers."""
    headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
    async with httpx.AsyncClient(timeout=30) as client:
        async def adapter_ready() -> bool:
            return (await client.get(base + "/readyz")).status_code == HTTPStatus.OK and \
                (await client.get(f"{base}/v1/cases/case-a{cases - 1}", headers=headers)).status_code == HTTPStatus.OK

        async def bare_ready() -> bool:
            r = await client.post(f"{bare_base}/v1/cases/case-a0/messages", json={"body": "Ready?"})
            return r.status_code == HTTPStatus.ACCEPTED

        await _wait(adapter_ready, 300, "the adapter")
        await _wait(bare_ready, 60, "the bare endpoint")


async def _wait(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await probe():
                return
        except (httpx.HTTPError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"bench: timed out waiting for {what}")


def _restart_after_kill(kafka: KafkaAccess, cat: Catalogue, env: dict[str, str], logdir: Path,
                        proc: ProcessorRun) -> tuple[ProcessorRun, dict[str, float]]:
    """SIGKILL the processor while it has a transaction open (a burst of new cases arriving), start
    it again, and time: its first event, and a new case's item readable (read_committed) in a
    view once it has caught up (a transaction left open by the killed instance would hold it back)."""
    more, _ = produce(kafka, cat, case_events(2000, 2, "k"))
    start = proc.events_seen()
    proc.wait_for(start + more / 4)
    proc.proc.kill()
    proc.proc.wait()
    t0 = time.perf_counter()
    again = ProcessorRun(kafka, cat, env, logdir)
    try:
        again.wait_for(1)
        first = time.perf_counter() - t0
        _wait_drained(again, 600)
        probe = next(iter(case_events(1, 1, f"probe{uuid.uuid4().hex[:6]}")))
        t1 = time.perf_counter()
        produce(kafka, cat, iter([probe]))
        asyncio.run(until_in_view(kafka, cat.per_structure("views", BENCH_STRUCTURE).name, f"{probe.case_id}/".encode()))
    except BaseException:
        again.stop()
        raise
    return again, {"first_event_s": first, "new_event_to_view_s": time.perf_counter() - t1}
