"""`parcours up` and `parcours demo`, the main job: the whole backbone as child processes under a
supervisor, on the embedded broker (started if none runs), seeded with the demo territory; `up`
runs until Ctrl-C, `demo` prints every structure's view of each case and exits."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parcours.errors import ParcoursError
from parcours.ports import SERVICE_PORTS, check_port

if TYPE_CHECKING:
    from parcours.bootstrap import Cluster
    from parcours.supervisor import Supervisor


def up(args: argparse.Namespace) -> int:
    """`parcours up` and `parcours demo`: the whole backbone, seeded with the demo story."""
    import signal

    from parcours.bootstrap import cluster_or_start
    from parcours.settings import get_settings

    s = get_settings()
    if args.nodes:
        s = s.model_copy(update={"broker_nodes": args.nodes})
    for port in SERVICE_PORTS.values():
        check_port("127.0.0.1", port)
    where, broker = cluster_or_start(s)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C stops everything even when launched with SIGINT ignored (a background job of a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logdir = s.broker_dir.parent / "logs"
    _apply_catalogue(where)
    urls = {k: f"http://127.0.0.1:{SERVICE_PORTS[k]}" for k in ("dac", "cpts", "crt")}
    sup = _supervisor(where, logdir, urls)
    sup.start()
    status = sup.serve(SERVICE_PORTS["supervisor"])
    try:
        _await_ready(sup)
        try:
            cases = _seed(urls)
            _sign_in(urls)
        except ParcoursError as exc:  # the stack stops cleanly, saying which step failed and what to do
            print(f"parcours: {exc}", file=sys.stderr, flush=True)
            print("\nstopping ...", flush=True)
            return 1
        if args.command == "demo":
            _print_views(urls, cases)
            return 0
        _print_endpoints(urls, logdir)
        while True:
            sup.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        status.shutdown()
        status.server_close()
        sup.stop()
        if broker is not None:
            broker.stop()


def _apply_catalogue(where: Cluster) -> None:
    from parcours.security.credentials import ADMIN
    from parcours.topology import live

    kafka = where.access(ADMIN)
    cat, changes = asyncio.run(live.apply(where.catalogue(), kafka, where.credentials))
    rf = next(iter(cat.topics.values())).replication_factor
    print(f"Kafka at {kafka}; {len(cat.topics)} topics (replication factor {rf}), {len(cat.principals())} principals, {len(cat.acls())} ACLs "
          f"in the catalogue; {len(changes)} changed", flush=True)


def _supervisor(where: Cluster, logdir: Path, urls: dict[str, str]) -> Supervisor:
    """Every service as a child process; each connects as its own principal, its secret read from
    the credential store the environment names."""
    from parcours.bootstrap import child_env
    from parcours.supervisor import Supervisor

    # PYTHONFAULTHANDLER: a crash in native code (librdkafka, RocksDB) during start-up leaves its stack
    sup = Supervisor(child_env(where, PYTHONFAULTHANDLER="1"), logdir)
    sup.add("processor", "processor", "--metrics-port", str(SERVICE_PORTS["processor"]))
    sup.add("validator", "validator", "--metrics-port", str(SERVICE_PORTS["validator"]))
    # the operator API's registry changes applied to the cluster (topics, principals, ACLs), as admin
    sup.add("registrar", "structures", "follow")
    for kind, url in urls.items():
        sup.add(f"adapter-{kind}", "adapter", kind, "--port", str(SERVICE_PORTS[kind]), ready=f"{url}/readyz")
    return sup


def _seed(urls: dict[str, str]) -> dict[str, str]:
    """The demo's cases: found on the cluster as they are, or told now (a story cut short is completed)."""
    from parcours.devtools import demo

    found = asyncio.run(demo.present(urls))
    if found is not None:
        print(f"the demo territory (Haute-Garonne) is already on this cluster ({len(found)} cases): serving it", flush=True)
        return found
    print("seeding the demo territory (Haute-Garonne) ...", flush=True)
    return asyncio.run(demo.seed(urls))


def _sign_in(urls: dict[str, str]) -> None:
    """The demo's partner signs in as SMART Backend Services say (a key, an assertion, a token)."""
    from parcours.bootstrap import DEV_ADMIN_TOKEN
    from parcours.devtools import demo

    asyncio.run(demo.sign_in(urls, DEV_ADMIN_TOKEN))


def _print_views(urls: dict[str, str], cases: dict[str, str]) -> None:
    from parcours.devtools import demo

    views = asyncio.run(_settled_views(urls, cases))
    for label, case_id in cases.items():
        print(f"\n== case {case_id}: {label}")
        for slug in demo.KIND_OF:
            print(demo.render(slug, views[(slug, case_id)]))
    print("\ndemo finished: every structure's view printed above")


def _await_ready(sup: Supervisor, timeout: float = 120) -> None:
    """Until the supervisor's readiness holds: every adapter answers its `/readyz`, and no service
    has been given up on (one that has is named when the wait times out)."""
    deadline = time.monotonic() + timeout
    while waiting := sup.given_up() + sup.not_ready():
        sup.check()
        if time.monotonic() > deadline:
            raise ParcoursError(f"{', '.join(waiting)} not ready after {timeout:.0f}s")
        time.sleep(0.3)


async def _settled_views(urls: dict[str, str], cases: dict[str, str]) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Every structure's view of every demo case, once two reads a second apart agree."""
    import httpx

    from parcours.devtools import demo

    async with httpx.AsyncClient(timeout=10) as client:
        d = demo.DemoClient(urls, client)
        previous: dict[tuple[str, str], dict[str, Any] | None] = {}
        for _ in range(60):
            current = {(slug, c): await d.view(slug, c) for c in cases.values() for slug in demo.KIND_OF}
            if current == previous:
                return current
            previous = current
            await asyncio.sleep(1)
        return previous


def _print_endpoints(urls: dict[str, str], logdir: Path) -> None:
    from parcours.topology.catalogue import default_catalogue

    print("\nParcours is running. Ctrl-C stops everything.\n")
    for kind, url in urls.items():
        print(f"  {kind.upper():<5} adapter  api {url}/v1/cases   docs {url}/docs   metrics {url}/metrics")
    print(f"  processor metrics  http://127.0.0.1:{SERVICE_PORTS['processor']}/metrics")
    print(f"  validator metrics  http://127.0.0.1:{SERVICE_PORTS['validator']}/metrics")
    sup = f"http://127.0.0.1:{SERVICE_PORTS['supervisor']}"
    print(f"  supervisor         {sup}/readyz (503 names a service given up on or not ready)   metrics {sup}/metrics")
    print(f"  service logs       {logdir}/")
    print("\n  demo tokens (dev profile only):")
    for st in default_catalogue().registry.structures.values():
        print(f"    {st.slug:<14} Authorization: Bearer dev-{st.slug}")
    print(f"\n  try: curl -s -H 'Authorization: Bearer dev-dac-31' {urls['dac']}/v1/cases")
    print(f"  partners sign in with SMART Backend Services: {urls['dac']}/.well-known/smart-configuration")
    print("  operator API (dev): Authorization: Bearer dev-admin on /v1/admin/structures; or `parcours structures`\n", flush=True)
