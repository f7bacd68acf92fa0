"""`parcours structures add|update|remove|list|follow`: the structure registry changed while the
stack runs. Each change is one record on the registry topic, then the cluster made to match
(topics, the structure's principal, its ACLs; a structure that left loses its credential); every
service follows the topic and picks the change up within seconds. `follow` applies the changes
others write (the adapters' operator API) for as long as it runs."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from parcours.errors import ParcoursError


def _keys(path: str | None) -> list[dict[str, Any]]:
    """The public keys of a JWKS file ({"keys": [...]}) or of one JWK."""
    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ParcoursError(f"cannot read the keys in {path}: {exc}") from None
    keys = data.get("keys", [data]) if isinstance(data, dict) else data
    return list(keys)


def structures(args: argparse.Namespace) -> int:
    from parcours.bootstrap import cluster
    from parcours.security.credentials import ADMIN
    from parcours.topology import changes, live
    from parcours.topology.catalogue import default_catalogue
    from parcours.topology.registry import dev_token, hash_token

    cat, where = default_catalogue(), cluster()
    kafka = where.access(ADMIN)
    if args.action == "list":
        registry = asyncio.run(live.read_registry(kafka, cat)) or cat.registry
        for s in registry.structures.values():
            print(f"{s.slug:<20} {s.kind:<5} {s.territory:<4} keys {','.join(k['kid'] for k in s.jwks) or '-':<30} {s.name}")
        for s in registry.retired.values():
            print(f"{s.slug:<20} {s.kind:<5} {s.territory:<4} (left)")
        return 0
    if args.action == "follow":
        print("applying each change of the structure registry (Ctrl-C stops)", flush=True)
        asyncio.run(live.reconcile(cat, kafka, where.credentials))
        return 0
    if not args.slug:
        raise ParcoursError(f"structures {args.action}: name the structure (its slug)")
    token = hash_token(dev_token(args.slug)) if getattr(args, "dev_token", False) else None
    fields = {"slug": args.slug, "kind": args.kind, "territory": args.territory, "name": args.name, "token_sha256": token}
    if args.action == "add":
        edit = changes.add({**{k: v for k, v in fields.items() if v is not None}, "jwks": {"keys": _keys(args.jwks)}})
    elif args.action == "update":
        edit = changes.update(args.slug, {k: v for k, v in fields.items() if k != "slug"}, add_keys=_keys(args.add_key),
                              remove_kids=args.remove_key or [])
    else:
        edit = changes.remove(args.slug)
    registry, done = asyncio.run(live.change(cat, kafka, where.credentials, edit))
    state = "left" if args.slug in registry.retired else "registered"
    print(f"{args.slug}: {state}; {len(done)} cluster change(s)")
    for c in done:
        print(f"done: {c}")
    return 0


def add_parser(sub: Any) -> None:
    st = sub.add_parser("structures", help="the structure registry while the stack runs: add, update (keys), remove, list, follow")
    st.add_argument("action", choices=["add", "update", "remove", "list", "follow"])
    st.add_argument("slug", nargs="?", default="")
    st.add_argument("--kind", choices=["dac", "cpts", "crt"])
    st.add_argument("--territory")
    st.add_argument("--name")
    st.add_argument("--jwks", help="add: a file holding the structure's public keys (JWKS or one JWK; ES384 or RS384)")
    st.add_argument("--add-key", help="update: a file holding public keys to add (rotation: add the new key first)")
    st.add_argument("--remove-key", action="append", help="update: the kid of a key to remove (rotation: once the new one is in use)")
    st.add_argument("--dev-token", action="store_true", help="development only: the static token dev-<slug> (refused in production)")
    st.set_defaults(func=structures)
