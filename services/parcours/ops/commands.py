"""The administrative commands of `parcours` (the broker, topics, credentials, the audit trail,
generated documents, schemas, views and state rebuild): what each does and prints, once `cli` has
parsed its arguments. Each imports what it needs when it runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from parcours.errors import ParcoursError


def broker(args: argparse.Namespace) -> int:
    from parcours.bootstrap import embedded_broker
    from parcours.devbroker.jars import fetch_jars
    from parcours.settings import get_settings

    s = get_settings()
    broker = embedded_broker(s)
    if args.action == "fetch":
        lib, size, secs = fetch_jars(s.cache_dir)
        print(f"Kafka jars in {lib}: {size / 1e6:.1f} MB ({secs:.1f}s)")
    elif args.action == "start":
        t0 = time.monotonic()
        started = broker.start(tls=args.tls or s.broker_tls, nodes=args.nodes or s.broker_nodes)
        print(f"Kafka {_shape(started.pids)} running: bootstrap {started.bootstrap} ({started.security_protocol}), "
              f"pids {_pids(started.pids)}, data in {started.folder} ({time.monotonic() - t0:.1f}s)")
    elif args.action == "restart":
        t0 = time.monotonic()
        done = broker.rolling_restart()
        print(f"nodes {', '.join(map(str, done))} restarted one at a time, each back in sync ({time.monotonic() - t0:.1f}s)")
    elif args.action == "stop":
        print("Kafka broker stopped" if broker.stop() else f"no Kafka broker running in {broker.folder}")
    elif args.action == "repair":
        return repair(args.dry_run)
    else:
        info = broker.status()
        if info is None:
            print(f"no Kafka broker running in {broker.folder}")
            return 3
        up = broker.running_nodes()
        down = sorted(set(info.pids) - set(up))
        print(f"Kafka {_shape(info.pids)} running: bootstrap {info.bootstrap}, pids {_pids(info.pids)}, data in {info.folder}"
              + (f"; nodes down: {', '.join(map(str, down))}" if down else ""))
        if len(info.pids) > 1 and (leader := broker.active_controller()) is not None:
            print(f"active controller: node {leader[0]} (epoch {leader[1]})")
    return 0


def _shape(pids: dict[int, int]) -> str:
    return "broker" if len(pids) == 1 else f"cluster of {len(pids)} nodes"


def _pids(pids: dict[int, int]) -> str:
    return ", ".join(f"{pid} (node {node})" for node, pid in sorted(pids.items())) if len(pids) > 1 else str(next(iter(pids.values())))


def repair(dry_run: bool) -> int:
    """Abort the hanging transactions an unclean broker restart left (ops/transactions.py)."""
    from parcours.bootstrap import cluster
    from parcours.devbroker.jars import fetch_jars
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


def topics(args: argparse.Namespace) -> int:
    from parcours.bootstrap import cluster
    from parcours.security.credentials import ADMIN
    from parcours.topology import admin, live
    from parcours.topology.catalogue import default_catalogue

    if args.action == "acls":
        for acl in default_catalogue().acls():
            print(acl)
        return 0
    where = cluster()
    cat, kafka = where.catalogue(), where.access(ADMIN)
    if args.action == "plan":
        cat = asyncio.run(live.live_catalogue(kafka, cat))
        changes = asyncio.run(admin.plan(cat, kafka, where.credentials))
    else:
        cat, changes = asyncio.run(live.apply(cat, kafka, where.credentials))
    verb = "to do" if args.action == "plan" else "done"
    if not kafka.sasl:
        print(f"warning: {kafka} does not authenticate: principals and ACLs are not managed", file=sys.stderr)
    if not changes:
        print(f"no changes: {len(cat.topics)} topics, {len(cat.principals())} principals and {len(cat.acls())} ACLs "
              f"match the catalogue ({cat.profile} profile)")
    for c in changes:
        print(f"{verb}: {c}")
    return 1 if any(c.action in admin.DRIFT for c in changes) else 0


def credentials(args: argparse.Namespace) -> int:
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


def audit(args: argparse.Namespace) -> int:
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


def docs(args: argparse.Namespace) -> int:
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


def asyncapi(args: argparse.Namespace) -> int:
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


def schemas(args: argparse.Namespace) -> int:
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


def views(args: argparse.Namespace) -> int:
    from parcours.bootstrap import live_catalogue, resolve_kafka
    from parcours.processors import rebuild as rb
    from parcours.topology.catalogue import default_catalogue
    from parcours.topology.registry import default_policy

    # the rebuild is the processor's step run again: it reads and writes what the processor does,
    # for the structures of the registry as its topic holds it
    kafka = resolve_kafka(default_catalogue().service_principal("processor"))
    cat = live_catalogue(kafka)

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


def state(args: argparse.Namespace) -> int:
    """`parcours state rebuild`: the processor's state from its input topics (processors/staterebuild.py)."""
    from parcours.bootstrap import live_catalogue, resolve_kafka
    from parcours.processors import rebuild as rb
    from parcours.processors.staterebuild import rebuild_state
    from parcours.security.credentials import ADMIN
    from parcours.settings import get_settings
    from parcours.topology.registry import default_policy

    cat = live_catalogue(resolve_kafka(ADMIN))  # the structures of the registry as its topic holds it
    state_dir = Path(args.state_dir) if args.state_dir else get_settings().state_dir / f"{cat.prefix}-processor"
    # the admin: it rewrites the processor's changelog and commits its group's offsets
    done = asyncio.run(rebuild_state(cat, resolve_kafka(ADMIN), default_policy(), state_dir, progress=rb.print_progress()))
    print(file=sys.stderr)
    print(done.summary())
    return 0
