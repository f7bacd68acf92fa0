"""The `parcours` command: one entry point for every service and tool. Wiring only."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parcours.errors import ParcoursError
from parcours.ports import SERVICE_PORTS

if TYPE_CHECKING:
    from parcours.bootstrap import Cluster
    from parcours.supervisor import Supervisor


def _broker(args: argparse.Namespace) -> int:
    from parcours.bootstrap import embedded_broker
    from parcours.devbroker.broker import fetch_jars
    from parcours.settings import get_settings

    s = get_settings()
    broker = embedded_broker(s)
    if args.action == "fetch":
        lib, size, secs = fetch_jars(s.cache_dir)
        print(f"Kafka jars in {lib}: {size / 1e6:.1f} MB ({secs:.1f}s)")
    elif args.action == "start":
        t0 = time.monotonic()
        started = broker.start(tls=args.tls or s.broker_tls)
        print(f"Kafka broker running: bootstrap {started.bootstrap} ({started.security_protocol}), pid {started.pid}, "
              f"data in {started.folder} ({time.monotonic() - t0:.1f}s)")
    elif args.action == "stop":
        print("Kafka broker stopped" if broker.stop() else f"no Kafka broker running in {broker.folder}")
    elif args.action == "repair":
        return _repair(args.dry_run)
    else:
        info = broker.status()
        if info is None:
            print(f"no Kafka broker running in {broker.folder}")
            return 3
        print(f"Kafka broker running: bootstrap {info.bootstrap}, pid {info.pid}, data in {info.folder}")
    return 0


def _repair(dry_run: bool) -> int:
    """Abort the hanging transactions an unclean broker restart left (ops/transactions.py)."""
    from parcours.bootstrap import cluster
    from parcours.devbroker.broker import fetch_jars
    from parcours.ops.transactions import Transactions
    from parcours.security.credentials import ADMIN
    from parcours.settings import get_settings

    lib, _, _ = fetch_jars(get_settings().cache_dir)
    found = Transactions(cluster().access(ADMIN), lib).repair(dry_run=dry_run)
    for h in found:
        print(f"{'hanging' if dry_run else 'aborted'}: {h}")
    print(f"{len(found)} hanging transaction partition(s){' found' if dry_run else ' aborted'}; "
          "then run `parcours views rebuild --write`" if found else "no hanging transaction")
    return 0


def _topics(args: argparse.Namespace) -> int:
    from parcours.bootstrap import cluster
    from parcours.security.credentials import ADMIN
    from parcours.topology import admin
    from parcours.topology.catalogue import default_catalogue

    cat = default_catalogue()
    if args.action == "acls":
        for acl in cat.acls():
            print(acl)
        return 0
    where = cluster()
    kafka = where.access(ADMIN)
    run = admin.plan if args.action == "plan" else admin.apply
    changes = asyncio.run(run(cat, kafka, where.credentials))
    verb = "to do" if args.action == "plan" else "done"
    if not kafka.sasl:
        print(f"warning: {kafka} does not authenticate: principals and ACLs are not managed", file=sys.stderr)
    if not changes:
        print(f"no changes: {len(cat.topics)} topics, {len(cat.principals())} principals and {len(cat.acls())} ACLs "
              f"match the catalogue ({cat.profile} profile)")
    for c in changes:
        print(f"{verb}: {c}")
    return 1 if any(c.action in admin.DRIFT for c in changes) else 0


def _credentials(args: argparse.Namespace) -> int:
    """What a partner (or an operator) needs to connect as a principal: the client settings and
    the rights the catalogue gives it. The secret is printed only when asked (`--show-secret`)."""
    from parcours.bootstrap import cluster
    from parcours.topology.catalogue import default_catalogue

    cat, where = default_catalogue(), cluster()
    if args.principal not in cat.principals():
        raise ParcoursError(f"unknown principal {args.principal!r}; the catalogue's: {', '.join(cat.principals())}")
    kafka = where.access(args.principal)
    secret = kafka.password.get_secret_value() if kafka.password and args.show_secret else "********"
    print(f"bootstrap.servers={kafka.bootstrap}")
    print(f"security.protocol={kafka.security_protocol}")
    if kafka.sasl:
        print(f"sasl.mechanism=SCRAM-SHA-512\nsasl.username={kafka.username}\nsasl.password={secret}")
    if kafka.cafile:
        print(f"ssl.ca.location={kafka.cafile}")
    print(f"# rights of User:{args.principal} (topics/catalogue.yaml):")
    for acl in cat.acls():
        if acl.principal == f"User:{args.principal}":
            print(f"#   {acl}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    """The whole audit history of a case, for the data protection officer (as `svc-ops`)."""
    import json

    from parcours.bootstrap import cluster
    from parcours.bus.kafkaio import read_to_end
    from parcours.topology.catalogue import default_catalogue

    cat = default_catalogue()
    kafka = cluster().access(cat.service_principal("ops"))

    async def read() -> list[dict[str, Any]]:
        out = []
        async for batch in read_to_end(kafka, [cat.topic("audit").name]):
            out += [json.loads(r.value) for r in batch if r.key == args.case_id.encode()]
        return sorted(out, key=lambda r: (r["at"], r["audit_id"]))

    records = asyncio.run(read())
    if args.json:
        print(json.dumps(records, indent=1, sort_keys=True))
        return 0
    print(f"{'at':<25} {'change':<10} {'structure':<14} {'item':<34} {'basis':<15} {'ref':<22} cause")
    for r in records:
        print(f"{r['at']:<25} {r['change']:<10} {r['structure']:<14} {r.get('item') or '-':<34} "
              f"{r.get('basis') or '-':<15} {r.get('ref') or '-':<22} {r.get('cause') or '-'}")
    print(f"{len(records)} audit records for case {args.case_id}")
    return 0


def _docs(args: argparse.Namespace) -> int:
    """The generated documents (docs/events.md, docs/asyncapi.json) from schemas/ and the
    catalogue; `--check` fails when a committed one differs."""
    from parcours.paths import project_root
    from parcours.topology.docs import generated

    root = project_root() / "docs"
    stale = []
    for name, text in generated().items():
        out = root / name
        if args.check:
            if not out.exists() or out.read_text() != text:
                stale.append(str(out))
            continue
        out.write_text(text)
        print(f"wrote {out}")
    if stale:
        print(f"{', '.join(stale)} differ from the catalogue and schemas: run `parcours docs`", file=sys.stderr)
        return 1
    if args.check:
        print("docs/ is up to date")
    return 0


def _asyncapi(args: argparse.Namespace) -> int:
    """The AsyncAPI 3.0 document of the Kafka side, whole or for one kind or structure."""
    from parcours.contract.schemas import default_schema_set
    from parcours.topology import asyncapi
    from parcours.topology.catalogue import Catalogue

    text = asyncapi.dumps(asyncapi.render(Catalogue.load(), default_schema_set(), kind=args.kind, structure=args.structure))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from parcours.contract.schemas import SchemaSet
    from parcours.paths import schemas_dir

    folder = Path(args.dir) if args.dir else schemas_dir()
    ss = SchemaSet.load(folder)
    ss.check_backward_transitive()
    for et in ss.event_types():
        vs = ss.versions[et]
        print(f"{et:<24} v{vs[-1].version} fingerprint {vs[-1].fingerprint} ({len(vs)} version(s))")
    print("all schemas backward-transitive compatible")
    return 0


def _processor(args: argparse.Namespace) -> int:
    import faulthandler

    from parcours import bootstrap
    from parcours.ops.logs import setup_logging
    from parcours.ops.metrics import ProcessorMetrics, serve

    faulthandler.enable()  # a crash in native code (librdkafka, RocksDB) leaves its Python stack in the log
    setup_logging("processor")
    metrics = ProcessorMetrics()
    serve(metrics.registry, args.metrics_port)
    service = bootstrap.processor(metrics, state_dir=Path(args.state_dir) if args.state_dir else None, commit_interval=args.commit_interval)
    service.run()  # until SIGTERM or SIGINT; the open transaction is aborted, never half-committed
    return 0


def _views(args: argparse.Namespace) -> int:
    from parcours.bootstrap import resolve_kafka
    from parcours.processors import rebuild as rb
    from parcours.topology.catalogue import default_catalogue
    from parcours.topology.registry import default_policy

    cat = default_catalogue()
    # the rebuild is the processor's step run again: it reads and writes what the processor does
    kafka = resolve_kafka(cat.service_principal("processor"))

    async def run() -> int:
        t0 = time.monotonic()
        result = await rb.rebuild(cat, kafka, default_policy(), progress=rb.print_progress())
        print(file=sys.stderr)
        live = await rb.live_views(cat, kafka)
        diffs = rb.differences(live, result.views)
        print(f"rebuilt {len(result.views)} view items of {result.cases} cases from {result.events} events "
              f"({result.undecodable} dead letters skipped) in {time.monotonic() - t0:.1f}s")
        if args.write:
            print(f"wrote {await rb.write(cat, kafka, live, result.views)} view item records")
            return 0
        for d in diffs:
            print(f"  {d}")
        print("live views are identical to the rebuild" if not diffs else f"{len(diffs)} views differ (use --write)")
        return 1 if diffs else 0

    return asyncio.run(run())


def _adapter(args: argparse.Namespace) -> int:
    from parcours import bootstrap
    from parcours.adapters.http.app import create_app
    from parcours.adapters.serving import serve
    from parcours.ops.logs import setup_logging
    from parcours.ports import ADAPTER_PORTS, INSTANCE_PORT_STEP

    setup_logging(f"adapter-{args.kind}")
    adapter = bootstrap.adapter(args.kind, args.instance)
    port = args.port or ADAPTER_PORTS[args.kind] + INSTANCE_PORT_STEP * args.instance
    _check_port(args.host, port)
    serve(create_app(adapter), args.host, port)
    return 0


def _validator(args: argparse.Namespace) -> int:
    import signal

    from parcours import bootstrap
    from parcours.ops.logs import setup_logging
    from parcours.ops.metrics import ValidatorMetrics, serve

    setup_logging("validator")
    metrics = ValidatorMetrics()
    serve(metrics.registry, args.metrics_port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await bootstrap.validator(metrics).run(stop)

    asyncio.run(run())
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    from parcours.bootstrap import redeliver_webhooks

    sent, failed = asyncio.run(redeliver_webhooks(args.structure))
    print(f"redelivered {sent} notification(s); {failed} still failing")
    return 1 if failed else 0


def _bench(args: argparse.Namespace) -> int:
    from parcours import bench
    from parcours.bootstrap import cluster_or_start
    from parcours.settings import get_settings

    s = get_settings()
    where, broker = cluster_or_start(s)
    try:
        edge = bench.EdgeLoad(wrk_seconds=args.wrk_seconds, wrk_connections=args.wrk_connections, rate=args.rate,
                              open_seconds=args.open_seconds, grace_s=args.view_grace)
        figures = bench.run(where, cases=args.cases, per_case=args.per_case, long_cases=args.long_cases,
                            long_per_case=args.long_per_case, rss_cases=args.rss_cases, rebuild_events=args.rebuild_events,
                            edge=edge, logdir=s.broker_dir.parent / "bench-logs", only=args.only)
    finally:
        if broker is not None:
            broker.stop()
    print(bench.report(figures))
    return 0


def _record(args: argparse.Namespace) -> int:
    from parcours import recording
    from parcours.bootstrap import resolve_kafka
    from parcours.security.credentials import ADMIN
    from parcours.topology.catalogue import default_catalogue

    cat = default_catalogue()
    topics = args.topics.split(",") if args.topics else [t.name for t in cat.canonical()]
    n = asyncio.run(recording.record(cat, resolve_kafka(ADMIN), topics, Path(args.out)))
    print(f"recorded {n} records of {len(topics)} topics into {args.out}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from parcours import recording
    from parcours.bootstrap import resolve_kafka
    from parcours.security.credentials import ADMIN
    from parcours.topology.catalogue import default_catalogue

    n = asyncio.run(recording.replay(default_catalogue(), resolve_kafka(ADMIN), Path(args.file), progress=not args.quiet))
    print(f"replayed {n} records from {args.file}")
    return 0




def _up(args: argparse.Namespace) -> int:
    """`parcours up` and `parcours demo`: the whole backbone, seeded with the demo story."""
    import signal

    from parcours.bootstrap import cluster_or_start
    from parcours.settings import get_settings

    s = get_settings()
    for port in SERVICE_PORTS.values():
        _check_port("127.0.0.1", port)
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
    from parcours.topology import admin
    from parcours.topology.catalogue import default_catalogue

    cat, kafka = default_catalogue(), where.access(ADMIN)
    changes = asyncio.run(admin.apply(cat, kafka, where.credentials))
    print(f"Kafka at {kafka}; {len(cat.topics)} topics, {len(cat.principals())} principals, {len(cat.acls())} ACLs "
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
    for kind, url in urls.items():
        sup.add(f"adapter-{kind}", "adapter", kind, "--port", str(SERVICE_PORTS[kind]), ready=f"{url}/readyz")
    return sup


def _seed(urls: dict[str, str]) -> dict[str, str]:
    """The demo's cases: found on the cluster as they are, or told now (a story cut short is completed)."""
    from parcours import demo

    found = asyncio.run(demo.present(urls))
    if found is not None:
        print(f"the demo territory (Haute-Garonne) is already on this cluster ({len(found)} cases): serving it", flush=True)
        return found
    print("seeding the demo territory (Haute-Garonne) ...", flush=True)
    return asyncio.run(demo.seed(urls))


def _print_views(urls: dict[str, str], cases: dict[str, str]) -> None:
    from parcours import demo

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

    from parcours import demo

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
    print(f"\n  try: curl -s -H 'Authorization: Bearer dev-dac-31' {urls['dac']}/v1/cases\n", flush=True)


def _check_port(host: str, port: int) -> None:
    import socket

    with socket.socket() as s:
        # as uvicorn binds: a socket of a service that just stopped (TIME_WAIT) does not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ParcoursError(f"port {host}:{port} is already taken ({exc.strerror}); pass --port") from None


def _admin_parsers(sub: Any) -> None:
    """The administrative commands: credentials, docs, topics."""
    c = sub.add_parser("credentials", help="client settings and rights of a Kafka principal (a partner's, a service's)")
    c.add_argument("principal")
    c.add_argument("--show-secret", action="store_true", help="print the SCRAM secret (to hand it to the partner)")
    c.set_defaults(func=_credentials)

    a = sub.add_parser("audit", help="the audit history of a case: disclosures, withdrawals, reads, their legal basis")
    a.add_argument("what", choices=["case"])
    a.add_argument("case_id")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_audit)

    d = sub.add_parser("docs", help="write docs/events.md and docs/asyncapi.json from schemas/ and topics/ (--check: compare only)")
    d.add_argument("--check", action="store_true")
    d.set_defaults(func=_docs)

    aa = sub.add_parser("asyncapi", help="the AsyncAPI 3.0 document of the Kafka side (whole, or one kind's or structure's part)")
    aa.add_argument("--kind", choices=["dac", "cpts", "crt"])
    aa.add_argument("--structure", help="a structure's slug")
    aa.add_argument("--out", default="-", help="a file (default: standard output; `parcours docs` writes docs/asyncapi.json)")
    aa.set_defaults(func=_asyncapi)

    t = sub.add_parser("topics", help="the topic catalogue against the cluster")
    t.add_argument("action", choices=["plan", "apply", "acls"])
    t.set_defaults(func=_topics)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parcours", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="the embedded Apache Kafka broker")
    b.add_argument("action", choices=["start", "stop", "status", "fetch", "repair"],
                   help="repair: abort the transactions an unclean broker restart left hanging (any configured cluster)")
    b.add_argument("--tls", action="store_true", help="client listener SASL_SSL, with a CA made on first start (PARCOURS_BROKER_TLS)")
    b.add_argument("--dry-run", action="store_true", help="repair: list the hanging transactions, abort nothing")
    b.set_defaults(func=_broker)

    _admin_parsers(sub)

    sc = sub.add_parser("schemas", help="the Avro schema set")
    sc.add_argument("action", choices=["check"])
    sc.add_argument("--dir", help="schema folder (default: schemas/)")
    sc.set_defaults(func=_schemas)
    for name, text in (("up", "the whole backbone on the embedded broker, seeded with the demo (Ctrl-C stops)"),
                       ("demo", "run the demo scenario, print each structure's view of each case, exit")):
        u = sub.add_parser(name, help=text)
        u.set_defaults(func=_up)

    rec = sub.add_parser("record", help="capture topics into an Avro container file")
    rec.add_argument("--topics", help="comma-separated catalogue names (default: the canonical topics)")
    rec.add_argument("--out", required=True)
    rec.set_defaults(func=_record)
    rep = sub.add_parser("replay", help="write a recording into the cluster (under this prefix)")
    rep.add_argument("file")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.set_defaults(func=_replay)

    b2 = sub.add_parser("bench", help="print throughput and latency figures (processor, rebuild, HTTP edge with wrk and an open loop)")
    b2.add_argument("--cases", type=int, default=10000, help="cases in the main burst")
    b2.add_argument("--per-case", type=int, default=10, help="events per case in the main burst")
    b2.add_argument("--long-cases", type=int, default=20)
    b2.add_argument("--long-per-case", type=int, default=1000)
    b2.add_argument("--rss-cases", type=int, default=100000, help="cases when the processor's memory is read again")
    b2.add_argument("--rebuild-events", type=int, default=1000000, help="0 skips the rebuild figure")
    b2.add_argument("--only", choices=["processor", "rebuild", "edge", "restart"], help="run one part only (default: all)")
    b2.add_argument("--wrk-seconds", type=float, default=15.0, help="edge, closed loop: seconds of wrk per endpoint")
    b2.add_argument("--wrk-connections", type=int, default=32, help="edge, closed loop: wrk's connections (1 thread)")
    b2.add_argument("--rate", type=float, default=500.0, help="edge, open loop: POSTs per second, sent on schedule")
    b2.add_argument("--open-seconds", type=float, default=60.0, help="edge, open loop: duration")
    b2.add_argument("--view-grace", type=float, default=10.0,
                    help="edge, open loop: seconds after the last answer for accepted messages to reach the view")
    b2.set_defaults(func=_bench)

    a = sub.add_parser("adapter", help="the HTTP edge for one structure kind")
    a.add_argument("kind", choices=["dac", "cpts", "crt"])
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=0, help="default 8101 dac, 8102 cpts, 8103 crt (+10 per instance)")
    a.add_argument("--instance", type=int, default=0,
                   help="this instance's number when several serve one kind: its read model's file and default port")
    a.set_defaults(func=_adapter)

    w = sub.add_parser("webhooks", help="webhook dead letters")
    w.add_argument("action", choices=["redeliver"])
    w.add_argument("--structure", help="only this structure's dead letters")
    w.set_defaults(func=_webhooks)

    va = sub.add_parser("validator", help="move valid ingress events to the canonical topics")
    va.add_argument("--metrics-port", type=int, default=8105)
    va.set_defaults(func=_validator)

    v = sub.add_parser("views", help="case views")
    v.add_argument("action", choices=["rebuild"])
    v.add_argument("--write", action="store_true", help="publish the rebuilt views where they differ")
    v.set_defaults(func=_views)

    pr = sub.add_parser("processor", help="the case-file processor (Quix Streams, exactly-once)")
    pr.add_argument("--metrics-port", type=int, default=8104)
    pr.add_argument("--state-dir", help="RocksDB state folder (default: PARCOURS_STATE_DIR/<prefix>-processor)")
    pr.add_argument("--commit-interval", type=float, default=None,
                    help="seconds per checkpoint: one Kafka transaction; readers see outputs after it "
                         "(default PARCOURS_PROCESSOR_COMMIT_INTERVAL_S)")
    pr.set_defaults(func=_processor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ParcoursError as exc:
        print(f"parcours: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
