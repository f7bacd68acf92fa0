"""Showing a referral's person to its reader: the edge opens the sealed identity for whoever is
served the referral (the consent rules already decided that: a view holds the referrals its
structure may see), and records each disclosure on the audit topic (`identity_disclosed`, legal
basis: the referral's party), which the author reads in `GET /v1/cases/{case}/disclosures`.
A referral without an identity shows none: nothing says one exists elsewhere."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from parcours.adapters.http.deps import Adapter
from parcours.topology.registry import Structure


async def with_identities(adapter: Adapter, caller: Structure, case_id: str, referrals: list[dict[str, Any]],
                          cause: str) -> list[dict[str, Any]]:
    """`referrals` as `caller` is shown them: each sealed identity opened (or `erased`), each
    opening audited; `cause`: the read that showed it (`GET /v1/cases/{case}`, FHIR `$everything`)."""
    out = []
    for ref in referrals:
        person = ref.get("person")
        if not person or adapter.vault is None:
            out.append(ref)
            continue
        shown = await adapter.vault.open(person)
        if isinstance(shown.get("identity"), dict):
            await _audit(adapter, caller, case_id, ref, cause)
        out.append({**ref, "person": shown})
    return out


async def _audit(adapter: Adapter, caller: Structure, case_id: str, ref: dict[str, Any], cause: str) -> None:
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record = {"audit_id": f"{case_id}:identity:{ref['referral_id']}:{caller.slug}:{uuid.uuid4().hex}",
              "change": "identity_disclosed", "structure": caller.slug, "case_id": case_id,
              "item": f"referral:{ref['referral_id']}", "item_type": "ReferralSubmitted", "category": "administrative",
              "author": ref.get("by"), "basis": "referral_party", "ref": ref["referral_id"], "cause": cause, "at": at}
    await adapter.publisher.send(adapter.catalogue.topic("audit").name, case_id.encode(),
                                 json.dumps(record, sort_keys=True).encode())
