"""The `parcours` command: one entry point for every service and tool. It parses the arguments and
hands them to the command's module: the services' parts come from `bootstrap`, the administrative
commands are `ops.commands`, the main job is `up`, the development tools `devtools.commands`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from parcours import up
from parcours.devtools import commands as devcommands
from parcours.errors import ParcoursError
from parcours.ops import commands
from parcours.ports import check_port


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


def _adapter(args: argparse.Namespace) -> int:
    from parcours import bootstrap
    from parcours.adapters.http.app import create_app
    from parcours.adapters.serving import serve
    from parcours.ops.logs import setup_logging
    from parcours.ports import ADAPTER_PORTS, INSTANCE_PORT_STEP

    setup_logging(f"adapter-{args.kind}")
    port = args.port or ADAPTER_PORTS[args.kind] + INSTANCE_PORT_STEP * args.instance
    check_port(args.host, port)
    adapter = bootstrap.adapter(args.kind, args.instance, port=port)
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
    validator = bootstrap.validator(metrics)  # before the loop: it reads the registry at start

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await validator.run(stop)

    asyncio.run(run())
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    from parcours.bootstrap import redeliver_webhooks

    sent, failed = asyncio.run(redeliver_webhooks(args.structure))
    print(f"redelivered {sent} notification(s); {failed} still failing")
    return 1 if failed else 0


def _erase(args: argparse.Namespace) -> int:
    from parcours.bootstrap import cluster
    from parcours.ops.persons import erase_case
    from parcours.topology.catalogue import default_catalogue

    cat = default_catalogue()
    done = asyncio.run(erase_case(cat, cluster().access(cat.service_principal("ops")), args.case_id))
    if not done.keys:
        print(f"no sealed identity known in case {args.case_id} (the processor may not have seen it yet: try again)")
        return 1
    print(f"erased: {len(done.keys)} data key(s) of {done.persons} person(s) of case {args.case_id} destroyed")
    return 0


def _admin_parsers(sub: Any) -> None:
    """The administrative commands: credentials, docs, topics."""
    c = sub.add_parser("credentials", help="client settings and rights of a Kafka principal (a partner's, a service's)")
    c.add_argument("principal")
    c.add_argument("--show-secret", action="store_true", help="print the SCRAM secret (to hand it to the partner)")
    c.set_defaults(func=commands.credentials)

    pe = sub.add_parser("persons", help="persons' identities: erase one by destroying its data keys")
    pe.add_argument("what", choices=["erase"])
    pe.add_argument("--case", required=True, dest="case_id", help="a case of the person (every case of theirs is erased)")
    pe.set_defaults(func=_erase)

    a = sub.add_parser("audit", help="the audit history of a case: disclosures, withdrawals, reads, their legal basis")
    a.add_argument("what", choices=["case"])
    a.add_argument("case_id")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=commands.audit)

    d = sub.add_parser("docs", help="write docs/events.md and docs/asyncapi.json from schemas/ and topics/ (--check: compare only)")
    d.add_argument("--check", action="store_true")
    d.set_defaults(func=commands.docs)

    aa = sub.add_parser("asyncapi", help="the AsyncAPI 3.0 document of the Kafka side (whole, or one kind's or structure's part)")
    aa.add_argument("--kind", choices=["dac", "cpts", "crt"])
    aa.add_argument("--structure", help="a structure's slug")
    aa.add_argument("--out", default="-", help="a file (default: standard output; `parcours docs` writes docs/asyncapi.json)")
    aa.set_defaults(func=commands.asyncapi)

    from parcours.ops.structures import add_parser as structures_parser

    structures_parser(sub)

    t = sub.add_parser("topics", help="the topic catalogue against the cluster")
    t.add_argument("action", choices=["plan", "apply", "acls"])
    t.set_defaults(func=commands.topics)


def _state_parser(sub: Any) -> None:
    st = sub.add_parser("state", help="rebuild the processor's state from its input topics (every processor instance stopped)")
    st.add_argument("action", choices=["rebuild"])
    st.add_argument("--state-dir", help="the processor's state folder, removed once rebuilt (default: as `parcours processor`)")
    st.set_defaults(func=commands.state)


NODES_HELP = ("the embedded broker's nodes: 1, or 3 for a replicated cluster (replication factor 3, min ISR 2) "
              "(PARCOURS_BROKER_NODES; default: as its folder was formatted, else 1)")


def _broker_parser(sub: Any) -> None:
    b = sub.add_parser("broker", help="the embedded Apache Kafka broker")
    b.add_argument("action", choices=["start", "stop", "status", "fetch", "repair", "restart"],
                   help="repair: abort the transactions an unclean broker restart left hanging (any configured cluster); "
                        "restart: a rolling restart of the nodes, each back in sync before the next")
    b.add_argument("--tls", action="store_true", help="client listener SASL_SSL, with a CA made on first start (PARCOURS_BROKER_TLS)")
    b.add_argument("--nodes", type=int, help=NODES_HELP)
    b.add_argument("--dry-run", action="store_true", help="repair: list the hanging transactions, abort nothing")
    b.set_defaults(func=commands.broker)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parcours", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    _broker_parser(sub)

    _admin_parsers(sub)

    sc = sub.add_parser("schemas", help="the Avro schema set")
    sc.add_argument("action", choices=["check"])
    sc.add_argument("--dir", help="schema folder (default: schemas/)")
    sc.set_defaults(func=commands.schemas)
    for name, text in (("up", "the whole backbone on the embedded broker, seeded with the demo (Ctrl-C stops)"),
                       ("demo", "run the demo scenario, print each structure's view of each case, exit")):
        u = sub.add_parser(name, help=text)
        u.add_argument("--nodes", type=int, help=NODES_HELP)
        u.set_defaults(func=up.up)

    rec = sub.add_parser("record", help="capture topics into an Avro container file")
    rec.add_argument("--topics", help="comma-separated catalogue names (default: the canonical topics)")
    rec.add_argument("--out", required=True)
    rec.set_defaults(func=devcommands.record)
    rep = sub.add_parser("replay", help="write a recording into the cluster (under this prefix)")
    rep.add_argument("file")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.set_defaults(func=devcommands.replay)

    b2 = sub.add_parser("bench", help="print throughput and latency figures (processor, rebuild, HTTP edge with wrk and an open loop)")
    b2.add_argument("--cases", type=int, default=10000, help="cases in the main burst")
    b2.add_argument("--per-case", type=int, default=10, help="events per case in the main burst")
    b2.add_argument("--long-cases", type=int, default=20)
    b2.add_argument("--long-per-case", type=int, default=1000)
    b2.add_argument("--rss-cases", type=int, default=100000, help="cases when the processor's memory is read again")
    b2.add_argument("--rebuild-events", type=int, default=1000000, help="0 skips the rebuild figure")
    b2.add_argument("--only", choices=["processor", "nodes", "rebuild", "edge", "restart"],
                    help="run one part only (default: all); nodes: the processor on one node and on a three-node cluster")
    b2.add_argument("--wrk-seconds", type=float, default=15.0, help="edge, closed loop: seconds of wrk per endpoint")
    b2.add_argument("--wrk-connections", type=int, default=32, help="edge, closed loop: wrk's connections (1 thread)")
    b2.add_argument("--rate", type=float, default=500.0, help="edge, open loop: POSTs per second, sent on schedule")
    b2.add_argument("--open-seconds", type=float, default=60.0, help="edge, open loop: duration")
    b2.add_argument("--view-grace", type=float, default=10.0,
                    help="edge, open loop: seconds after the last answer for accepted messages to reach the view")
    b2.set_defaults(func=devcommands.bench)

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
    v.set_defaults(func=commands.views)

    _state_parser(sub)

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
