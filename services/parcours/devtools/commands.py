"""The development commands of `parcours`: `bench`, `record`, `replay`, once `cli` has parsed their arguments."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def bench(args: argparse.Namespace) -> int:
    from parcours.bootstrap import cluster_or_start
    from parcours.devtools import bench as benchrun
    from parcours.devtools import benchreport
    from parcours.settings import get_settings

    s = get_settings()
    where, broker = cluster_or_start(s)
    try:
        edge = benchrun.EdgeLoad(wrk_seconds=args.wrk_seconds, wrk_connections=args.wrk_connections, rate=args.rate,
                              open_seconds=args.open_seconds, grace_s=args.view_grace)
        figures = benchrun.run(where, cases=args.cases, per_case=args.per_case, long_cases=args.long_cases,
                            long_per_case=args.long_per_case, rss_cases=args.rss_cases, rebuild_events=args.rebuild_events,
                            edge=edge, logdir=s.broker_dir.parent / "bench-logs", only=args.only)
    finally:
        if broker is not None:
            broker.stop()
    print(benchreport.report(figures))
    return 0


def record(args: argparse.Namespace) -> int:
    from parcours.bootstrap import resolve_kafka
    from parcours.devtools import recording
    from parcours.security.credentials import ADMIN
    from parcours.topology.catalogue import default_catalogue

    cat = default_catalogue()
    topics = args.topics.split(",") if args.topics else [t.name for t in cat.canonical()]
    n = asyncio.run(recording.record(cat, resolve_kafka(ADMIN), topics, Path(args.out)))
    print(f"recorded {n} records of {len(topics)} topics into {args.out}")
    return 0


def replay(args: argparse.Namespace) -> int:
    from parcours.bootstrap import resolve_kafka
    from parcours.devtools import recording
    from parcours.security.credentials import ADMIN
    from parcours.topology.catalogue import default_catalogue

    n = asyncio.run(recording.replay(default_catalogue(), resolve_kafka(ADMIN), Path(args.file), progress=not args.quiet))
    print(f"replayed {n} records from {args.file}")
    return 0
