"""The processor's step, independent of any transport: a stored case plus an event (or a clock
tick) gives the new stored case and the records to write. The faust agent and `views rebuild`
both call it, so live views and rebuilt views come from the same code.

Idempotence: a duplicate event leaves the stored case unchanged and produces no notification;
views are written keyed by `<structure>/<case_id>` on a compacted topic, so rewriting is harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from parcours.casefile.policy import Policy, Viewer, concerned, next_change
from parcours.casefile.state import CaseState, fold
from parcours.casefile.view import Prepared, View, change, project
from parcours.contract.models import Event, build_event


@dataclass
class StoredCase:
    """What the processor keeps per case: the state and, per structure, what it was last shown
    (`{"items": [...], "digest": ...}`), so that only real changes are written and notified."""

    state: CaseState
    shown: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: event id -> its serialised form, carried from version to version (events never change)
    fragments: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> bytes:
        parts = []
        for eid, e in sorted(self.state.events.items()):
            frag = self.fragments.get(eid)
            if frag is None:
                # the type beside the data: some events have a field named `type` of their own
                frag = self.fragments[eid] = json.dumps(
                    {"event_type": e.event_type, "data": e.model_dump(mode="json")}, separators=(",", ":"))
            parts.append(frag)
        head = json.dumps({"case_id": self.state.case_id, "shown": self.shown}, separators=(",", ":"))
        return (head[:-1] + ',"events":[' + ",".join(parts) + "]}").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> StoredCase:
        data = json.loads(raw)
        events = {}
        for item in data["events"]:
            e = build_event(item["event_type"], item["data"])
            events[str(e.event_id)] = e
        return cls(CaseState(data["case_id"], events), data["shown"])


@dataclass(frozen=True)
class ViewRecord:
    key: str  # <structure>/<case_id>
    value: bytes | None  # None: tombstone


@dataclass(frozen=True)
class Notification:
    structure: str
    case_id: str
    body: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class StepResult:
    stored: StoredCase
    views: list[ViewRecord]
    notifications: list[Notification]
    duplicate: bool = False


def view_key(structure: str, case_id: str) -> str:
    return f"{structure}/{case_id}"


def encode_view(view: View) -> bytes:
    return json.dumps(view, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


class CaseProcessor:
    def __init__(self, kinds: Mapping[str, str], policy: Policy) -> None:
        self.kinds = dict(kinds)  # slug -> kind, from the registry
        self.policy = policy

    def step(self, stored: StoredCase | None, event: Event | None, now: datetime, case_id: str | None = None) -> StepResult:
        """Apply `event` (None: a clock tick re-evaluating expiries) and compute what to write."""
        return self.step_many(stored, [event], now, case_id or (event.case_id if event else None))

    def step_many(self, stored: StoredCase | None, events: list[Event | None], now: datetime, case_id: str | None) -> StepResult:
        """Apply a batch of one case's events (None entries: clock ticks), render once."""
        if stored is None:
            stored = StoredCase(CaseState(case_id or ""))
        new_state = stored.state
        for event in events:
            if event is not None:
                new_state = fold(new_state, event)
        if new_state is stored.state and None not in events:
            # Only events already applied. After a crash the table may hold events whose view
            # writes never left: rewrite the current views (idempotent), notify nothing.
            views, _, _ = self.render(new_state, {}, now)
            return StepResult(stored, views, [], duplicate=True)
        views, notes, shown = self.render(new_state, stored.shown, now)
        return StepResult(StoredCase(new_state, shown, stored.fragments), views, notes)

    def render(
        self, state: CaseState, previously: Mapping[str, dict[str, Any]], now: datetime
    ) -> tuple[list[ViewRecord], list[Notification], dict[str, dict[str, Any]]]:
        views: list[ViewRecord] = []
        notes: list[Notification] = []
        shown: dict[str, dict[str, Any]] = {}
        prepared = Prepared.of(state)
        for slug in sorted(concerned(state, self.kinds) | set(previously)):
            if slug not in self.kinds:
                continue
            view = project(state, Viewer(slug, self.kinds[slug]), self.policy, now, prepared)
            before = previously.get(slug, {})
            diff = change(slug, set(before.get("items", [])), view)
            encoded = encode_view(view) if view is not None else None
            digest = hashlib.blake2b(encoded, digest_size=12).hexdigest() if encoded else None
            if view is not None:
                shown[slug] = {"items": list(view["items"]), "digest": digest}
            if digest == before.get("digest"):
                continue  # nothing changed for this structure (covers "still nothing visible")
            views.append(ViewRecord(view_key(slug, state.case_id), encoded))
            version = view["version"] if view else 0
            for item in diff.appeared:
                notes.append(_note(slug, state.case_id, version, "item_visible", item))
            for item in diff.vanished:
                notes.append(_note(slug, state.case_id, version, "redaction", item))
        return views, notes, shown

    def next_change(self, stored: StoredCase, now: datetime) -> datetime | None:
        return next_change(stored.state, now)


def _note(slug: str, case_id: str, version: int, kind: str, item: str) -> Notification:
    """Ids only: a redaction notice never carries content, and neither does a visibility notice."""
    return Notification(
        slug,
        case_id,
        {
            "notification_id": f"{case_id}:{item}:{kind}:{version}",
            "type": kind,
            "case_id": case_id,
            "item": item,
            "view_version": version,
        },
    )
