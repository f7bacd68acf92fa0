"""The case file, processed one event at a time at a cost that does not grow with the case.

`project` (view.py) is the specification: the view of a structure is a pure function of the set
of the case's events and the clock. This module reaches the same views incrementally, over a small
key-value store per case (RocksDB in the processor, a dict in `views rebuild` and the tests):

- `e:<event_id>`  -> the item key the event belongs to (duplicates are recognised in one lookup);
- `k:<item key>`  -> the events of that item (usually one; more when an item is corrected) and
                     what each structure was last shown of it (`[digest, visible events]`);
- `ki:<n>`        -> the n-th item key of the case (enumerated only when the rules change);
- `idx`           -> what the rules need: referral parties, consents, structures concerned,
                     the next consent expiry;
- `cnt`           -> per structure: visible events (the view's version) and notifications sent.

An event that cannot change who sees what (a message, an evaluation, a status without
redirection, an admission decision) touches its own item only: a constant number of lookups and
one record per structure that sees it. An event that changes the rules (a referral and its
parties, a redirection, a consent) and a clock tick (a consent expiring) re-evaluate every item
of the case, which is what they may change.

A view is written as one record per item (`ItemRecord`), never as a whole case: a record's size is
bounded by its item's, and `records.assemble` turns a structure's item records back into the view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import orjson

from parcours.casefile import followups
from parcours.casefile.deadlines import next_due, overdue, track
from parcours.casefile.policy import (
    REFERRAL_EVENTS,
    Basis,
    Policy,
    Terms,
    Viewer,
    by_consent,
    concerned_by,
    from_ms,
    named_by,
    own,
    to_ms,
)
from parcours.casefile.records import AuditRecord, ItemRecord, Notice, Outcome
from parcours.casefile.state import canonical_digest
from parcours.casefile.view import iso, item_key, render, with_clock
from parcours.contract.models import ConsentRecorded, Event


class CaseStore(Protocol):
    """The state of one case: JSON-ready values under string keys."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class DictStore:
    """A case store in memory, holding values as JSON bytes (what the disk store holds)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> Any:
        raw = self.data.get(key)
        return None if raw is None else loads(raw)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = dumps(value)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON: what the stores hold and the view records carry (orjson: ~10x json's speed).

    Copied to its own size: the bytes object orjson returns keeps the 4 KiB buffer it was written
    into, whatever its length (orjson 3.13: 4,097 bytes held for a 12-byte value). Stores keep these
    values: a `views rebuild` of 100,000 events held 1.2 GB of such buffers for 64 MB of data."""
    return bytes(memoryview(orjson.dumps(value)))


loads = orjson.loads


# --- documents: what the store keeps of an event -----------------------------------------
def document(e: Event) -> dict[str, Any]:
    """The event as the rules and the views need it: plain values for the policy, its entry."""
    meta: dict[str, Any] = {"id": str(e.event_id), "t": e.event_type, "src": e.source, "cat": e.category,
                            "ms": to_ms(e.occurred_at), "named": [s for s in named_by(e) if s],
                            "rid": e.referral_id if isinstance(e, REFERRAL_EVENTS) else None, "canon": canonical_digest(e)}
    if isinstance(e, ConsentRecorded):
        t = Terms.of(e)
        meta["terms"] = [t.grantee, t.source, list(t.categories), t.decision, t.until_ms, t.at_ms, t.event_id, t.consent_id]
    return {"m": meta, "entry": render(e)}


def _terms(raw: list[Any]) -> Terms:
    grantee, source, categories, decision, until_ms, *more = raw  # state of older versions has fewer fields
    at_ms, event_id, consent_id = (more + [0, "", ""][len(more):])[:3]
    return Terms(grantee, source, tuple(categories), decision, until_ms, at_ms, event_id, consent_id)


def _consent_id(terms: list[Any] | None) -> str | None:
    """A consent document's id (state of older versions has none)."""
    if not terms or len(terms) <= _CONSENT_ID:
        return None
    return terms[_CONSENT_ID] or None


_CACHE_VERSION = 1  # of the consent decisions kept in the index (`_Rules`)
_CONSENT_ID = 7  # the position of the consent id in a document's terms (`document`)


def _order(doc: dict[str, Any]) -> tuple[int, str]:
    m = doc["m"]
    return (m["ms"], m["id"])  # UUID strings of one format sort as the UUIDs do


def _entry(doc: dict[str, Any], now_ms: int) -> dict[str, Any]:
    terms = doc["m"].get("terms")
    return with_clock(doc["entry"], terms[4], now_ms) if terms else doc["entry"]


# --- the rules (policy.py) on documents --------------------------------------------------
class _Rules:
    """The policy's answers for one step: who is concerned, and what each may see by consent.

    What rules 3 to 5 decide per structure and category (`by_consent`) depends on the case's
    consents and on the clock only through the consents' expiries, so it is computed once and kept
    in the case's index (`idx["acl"]`) with the interval of time over which it holds: from the
    latest expiry already past (`lo`) to the next one (`hi`). A step inside that interval reads it;
    a step outside it, or one that changes the consents or the structures concerned, computes it
    again (`refreshed`: the index must then be written)."""

    __slots__ = ("_by", "parties", "refreshed", "until", "viewers")

    def __init__(self, idx: dict[str, Any], viewers: Mapping[str, Viewer], policy: Policy, now_ms: int, force: bool,
                 fingerprint: str) -> None:
        self.parties: dict[str, list[str]] = idx["parties"]
        self.viewers = viewers
        acl = idx.get("acl")
        # what the cached answer was computed from: the consents and structures so far (both only
        # grow; a twin replacing a consent forces a refresh) and the policy and registry (a restart
        # with another kind ceiling, or state left by another version, must not reuse it)
        inputs = [len(idx["consents"]), len(idx["structs"]), fingerprint]
        self.refreshed = force or acl is None or acl.get("in") != inputs or not (
            (acl["lo"] is None or acl["lo"] <= now_ms) and (acl["hi"] is None or now_ms < acl["hi"]))
        if self.refreshed:
            consents = [_terms(c) for c in idx["consents"]]
            untils = [c.until_ms for c in consents if c.until_ms is not None]
            acl = idx["acl"] = {
                "in": inputs,
                "lo": max((u for u in untils if u <= now_ms), default=None),
                "hi": min((u for u in untils if u > now_ms), default=None),
                "by": {slug: {cat: list(b) for cat, b in by_consent(viewers[slug], consents, policy, now_ms).items()}
                       for slug in idx["structs"]}}
        #: the next consent expiry after now (`next_expiry`): the end of the interval
        self.until: int | None = acl["hi"] if acl else None
        self._by: dict[str, dict[str, list[Any]]] = acl["by"] if acl else {}

    def basis(self, m: dict[str, Any], slug: str) -> Basis:
        """`policy.basis` of an item for `slug`: the rules that need no consent, else the cached
        `by_consent` answer for the item's category."""
        terms = m.get("terms")
        rid = m["rid"]
        decided = own(self.viewers[slug], m["src"], m["t"], self.parties.get(rid, ()) if rid else (), rid,
                      terms[0] if terms else None, _consent_id(terms))
        return decided if decided is not None else Basis(*self._by[slug][m["cat"]])


def _new_index() -> dict[str, Any]:
    return {"parties": {}, "consents": [], "structs": [], "next": None}


class IncrementalCaseFile:
    """Apply an event (or a clock tick) to a case's store; return what to write."""

    def __init__(self, kinds: Mapping[str, str], policy: Policy, *, announce: bool = True) -> None:
        self.kinds = dict(kinds)  # slug -> kind, from the registry
        #: False: item records only, no notification or audit record (`views rebuild` keeps views only;
        #: the items are the same either way)
        self.announce = announce
        self.viewers = {slug: Viewer(slug, kind) for slug, kind in self.kinds.items()}
        self.policy = policy
        #: the registry and the kind ceilings, which the cached consent decisions depend on
        self.fingerprint = hashlib.blake2b(dumps([sorted(self.kinds.items()), sorted((k, sorted(v)) for k, v in policy.hidden.items()),
                                                  _CACHE_VERSION]), digest_size=8).hexdigest()

    def apply(self, store: CaseStore, case_id: str, event: Event | None, now: datetime) -> Outcome:
        now_ms = to_ms(now)
        idx = store.get("idx") or _new_index()
        cnt = store.get("cnt") or {"keys": 0, "s": {}}
        refs = idx.setdefault("refs", {})
        if event is None:  # a clock tick: every item may change, a referral may be overdue
            found = overdue(refs, now_ms)
            step = _Pass(self, store, case_id, idx, cnt, now_ms, rules_changed=False)
            out = step.run(self._all_keys(store, cnt), {}, ("clock", now_ms), idx_changed=bool(found), cnt_changed=False)
            out.overdue = found
            return out
        doc = document(event)
        key = item_key(event)
        eid = doc["m"]["id"]
        known_key = store.get("e:" + eid)
        loaded: dict[str, dict[str, Any]] = {}
        rules_change = False
        removed: dict[str, dict[str, Any]] = {}
        if known_key is not None:
            rec = store.get("k:" + known_key)
            old = next(d for d in rec["docs"] if d["m"]["id"] == eid)
            if old["m"]["canon"] <= doc["m"]["canon"]:
                return Outcome(duplicate=True)  # the same event again (or the losing twin)
            # two payloads share an id: the smaller canonical form wins, whatever the order
            rec["docs"] = [d for d in rec["docs"] if d["m"]["id"] != eid]
            loaded[known_key] = rec
            removed[known_key] = old
            rules_change = True
        store.set("e:" + eid, key)
        rec = loaded.get(key) or store.get("k:" + key)
        new_key = rec is None
        if rec is None:
            rec = {"docs": [], "shown": {}}
            store.set(f"ki:{cnt['keys']}", key)
            cnt["keys"] += 1
        rec["docs"].append(doc)
        loaded[key] = rec
        rules_change |= self._index(idx, doc)
        for lost in removed.values():  # a losing twin's referral never was: its deadline goes with it
            if lost["m"]["t"] == "ReferralSubmitted" and lost["m"]["rid"] != doc["m"]["rid"]:
                refs.pop(lost["m"]["rid"], None)
        tracked = track(refs, event, self.policy.deadlines, replaces=bool(removed))
        fu = idx.setdefault("fu", followups.new_state())
        fu_changed, follow = followups.track(fu, case_id, event)
        active = followups.activity(fu, event)
        keys = self._all_keys(store, cnt) if rules_change else [key]
        if removed:  # what the losing twin gave the rules (a consent, a referral's parties) goes with it
            self._reindex(idx, [d for k in keys for d in (loaded.get(k) or store.get("k:" + k) or {"docs": []})["docs"]])
        step = _Pass(self, store, case_id, idx, cnt, now_ms, rules_changed=rules_change, removed=removed)
        out = step.run(keys, loaded, (eid, doc["m"]["ms"]), idx_changed=rules_change or tracked.changed or fu_changed or active is not None,
                       cnt_changed=new_key)
        out.late, out.retract, out.follow_up, out.activity = tracked.late, tracked.retract, follow, active
        return out

    # --- internals ------------------------------------------------------------------------
    def _index(self, idx: dict[str, Any], doc: dict[str, Any]) -> bool:
        """Record what the rules need from `doc`; True when who-sees-what may change."""
        m = doc["m"]
        terms = m.get("terms")
        structs = idx["structs"]
        new = concerned_by(m["src"], m["named"], terms[0] if terms else None, self.kinds) - set(structs)
        structs.extend(sorted(new))
        changed = bool(new)
        if m["named"] and m["rid"]:  # a referral's recipient, a redirection's target: parties (rule 2)
            parties = idx["parties"].setdefault(m["rid"], [])
            for slug in ([m["src"]] if m["t"] == "ReferralSubmitted" else []) + m["named"]:
                if slug not in parties:
                    parties.append(slug)
                    changed = True
        if terms:
            idx["consents"].append(terms)
            changed = True
        return changed

    def _reindex(self, idx: dict[str, Any], docs: list[dict[str, Any]]) -> None:
        """The rules' part of the index again from every document of the case (a twin replaced
        one). The structures concerned only grow: one that no longer sees anything is still
        evaluated, so that what it was shown is withdrawn."""
        fresh = {**_new_index(), "structs": []}
        for d in sorted(docs, key=_order):
            self._index(fresh, d)
        idx["parties"], idx["consents"] = fresh["parties"], fresh["consents"]
        idx["structs"].extend(s for s in fresh["structs"] if s not in idx["structs"])

    def _all_keys(self, store: CaseStore, cnt: dict[str, Any]) -> list[str]:
        return [store.get(f"ki:{i}") for i in range(cnt["keys"])]


class _Pass:
    """One step's evaluation of some items of a case for every structure concerned: the item
    records that change, then a notification and an audit record per change of visibility."""

    def __init__(self, case_file: IncrementalCaseFile, store: CaseStore, case_id: str, idx: dict[str, Any],
                 cnt: dict[str, Any], now_ms: int, *, rules_changed: bool, removed: dict[str, dict[str, Any]] | None = None) -> None:
        #: per item, a document a twin replaced: what a withdrawal of an emptied item is audited on
        self.removed = removed or {}
        self.store, self.case_id, self.idx, self.cnt, self.now_ms = store, case_id, idx, cnt, now_ms
        self.announce, self.kinds = case_file.announce, case_file.kinds
        self.self_granted: frozenset[str] | None = None
        self.rules = _Rules(idx, case_file.viewers, case_file.policy, now_ms, rules_changed, case_file.fingerprint)
        self.structs = sorted(idx["structs"])
        self.counters: dict[str, list[int]] = cnt["s"]
        self.out = Outcome()
        # (structure, item, notice type, the doc whose basis is audited, every doc's basis for the structure)
        self.changes: list[tuple[str, str, str, dict[str, Any], list[tuple[dict[str, Any], Basis]]]] = []

    def run(self, keys: Iterable[str], loaded: dict[str, dict[str, Any]], cause: tuple[str, int], *,
            idx_changed: bool, cnt_changed: bool) -> Outcome:
        for key in keys:
            rec = loaded.get(key) or self.store.get("k:" + key)
            if rec is not None and (self._item(key, rec) or key in loaded):
                self.store.set("k:" + key, rec)
        if self.announce:
            self._announce(cause)
        if self.out.items or cnt_changed:
            self.store.set("cnt", self.cnt)
        if self._schedule() or idx_changed or self.rules.refreshed:
            self.store.set("idx", self.idx)
        return self.out

    def _item(self, key: str, rec: dict[str, Any]) -> bool:
        """Evaluate one item for every structure; True when what a structure was shown changed."""
        docs, shown, rules = rec["docs"], rec["shown"], self.rules
        rendered: dict[tuple[str, ...], tuple[bytes, str]] = {}  # one record per distinct visible set
        changed = False
        for slug in self.structs:
            if len(docs) == 1:  # the usual item: one event
                b = rules.basis(docs[0]["m"], slug)
                decided, visible = [(docs[0], b)], [docs[0]] if b.shown else []
            else:
                decided = [(d, rules.basis(d["m"], slug)) for d in docs]
                visible = sorted((d for d, b in decided if b.shown), key=_order)
            before = shown.get(slug)
            if visible:
                ids = tuple([d["m"]["id"] for d in visible])
                made = rendered.get(ids)
                if made is None:
                    made = rendered[ids] = self._record(key, visible)
                value, digest = made
                if before is not None and before[0] == digest:
                    continue
                shown[slug] = [digest, len(visible)]
                self.out.items.append(ItemRecord(slug, self.case_id, key, value))
                delta = len(visible) - (before[1] if before else 0)
                if before is None:
                    self.changes.append((slug, key, "item_visible", visible[0], decided))
            elif before is None:
                continue
            else:
                del shown[slug]
                self.out.items.append(ItemRecord(slug, self.case_id, key, None))
                delta = -before[1]
                gone = min(docs, key=_order) if docs else self.removed[key]
                self.changes.append((slug, key, "redaction", gone, decided or [(gone, rules.basis(gone["m"], slug))]))
            self.counters.setdefault(slug, [0, 0])[0] += delta
            changed = True
        return changed

    def _record(self, key: str, visible: list[dict[str, Any]]) -> tuple[bytes, str]:
        value = dumps({"item": key, "n": len(visible), "first": list(_order(visible[0])),
                       "last": list(_order(visible[-1])), "entry": _entry(visible[-1], self.now_ms)})
        return value, hashlib.blake2b(value, digest_size=10).hexdigest()

    def _announce(self, cause: tuple[str, int]) -> None:
        """A notification (ids only) and an audit record (the legal basis) per change of visibility."""
        case_id = self.case_id
        at = iso(from_ms(cause[1])) if self.changes else None
        for slug, key, kind, doc, decided in self.changes:
            b = next(b for d, b in decided if d is doc)
            c = self.counters[slug]
            c[1] += 1
            self.out.notices.append(Notice(slug, case_id, {
                "notification_id": f"{case_id}:{key}:{kind}:{c[1]}", "type": kind, "case_id": case_id,
                "item": key, "view_version": c[0]}))
            m = doc["m"]
            change = "disclosed" if kind == "item_visible" else "withdrawn"
            self.out.audits.append(AuditRecord(case_id, {
                "audit_id": f"{case_id}:{key}:{slug}:{change}:{c[1]}", "change": change, "structure": slug,
                "case_id": case_id, "item": key, "item_type": m["t"], "category": m["cat"], "author": m["src"],
                "basis": b.reason, "ref": b.ref, "cause": cause[0], "at": at,
                # a permit its recorder granted itself (written or digital, with its proof): flagged for the person
                **({"self_granted": True} if b.reason == "consent" and b.ref in self._self_granted() else {})}))

    def _self_granted(self) -> frozenset[str]:
        """The case's consents whose recorder is their grantee (by slug or by kind)."""
        if self.self_granted is None:
            terms = [_terms(c) for c in self.idx["consents"]]
            self.self_granted = frozenset(t.consent_id for t in terms
                                          if t.decision == "permit" and t.grantee in (t.source, self.kinds.get(t.source)))
        return self.self_granted

    def _schedule(self) -> bool:
        """The case's next consent expiry (the end of the rules' interval) or referral deadline; True
        when it moved (the index holds it, and the clock is told)."""
        due, deadline = self.rules.until, next_due(self.idx["refs"])
        if deadline is not None and (due is None or deadline < due):
            due = deadline
        if due == self.idx["next"]:
            return False
        self.idx["next"] = due
        self.out.schedule = (self.case_id, due)
        return True
