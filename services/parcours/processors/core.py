"""The processor's step, independent of any transport: one input record and its case's store give
the records to write. The Quix Streams pipeline and `views rebuild` both call it, so live views and
rebuilt views come from the same code.

Nothing reaches the store unless the whole step succeeded: writes are buffered (`StagedStore`) and
applied once every output is known to fit its topic. A record that cannot be processed becomes a
dead letter with its reason, never an exception that would stall the partition.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from parcours.casefile import followups
from parcours.casefile.incremental import IncrementalCaseFile, dumps, loads
from parcours.casefile.policy import Policy, from_ms
from parcours.casefile.records import Notice, Outcome
from parcours.casefile.view import iso
from parcours.contract.codec import Codec
from parcours.contract.errors import DecodeError
from parcours.contract.models import AdmissionDecided, Event, RuptureReported
from parcours.processors.deadletter import dead_letter_headers
from parcours.processors.errors import OutputTooLarge
from parcours.topology.catalogue import Catalogue
from parcours.topology.registry import KindPolicy

log = logging.getLogger("parcours.processor")

Headers = list[tuple[str, bytes]]


class BytesState(Protocol):
    """The part of a key-value state the processor uses (Quix Streams' State has it)."""

    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None: ...

    def set_bytes(self, key: str, value: bytes) -> None: ...


class StagedStore:
    """A case store over a `BytesState` whose writes stay staged until `commit`."""

    __slots__ = ("_limit", "_staged", "_state")

    def __init__(self, state: BytesState, limit: int) -> None:
        self._state, self._limit = state, limit
        self._staged: dict[str, bytes] = {}

    def get(self, key: str) -> Any:
        raw = self._staged.get(key)
        if raw is None:
            raw = self._state.get_bytes(key)
        return None if raw is None else loads(raw)

    def set(self, key: str, value: Any) -> None:
        raw = dumps(value)
        if len(raw) > self._limit:
            raise OutputTooLarge(f"state value {key.split(':', 1)[0]} of {len(raw)} bytes exceeds {self._limit}")
        self._staged[key] = raw

    def commit(self) -> int:
        """Apply the staged writes; how many keys were written."""
        n = len(self._staged)
        for key, raw in self._staged.items():
            self._state.set_bytes(key, raw)
        self._staged.clear()
        return n


class MemoryState:
    """A `BytesState` in a dict (views rebuild, tests)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get_bytes(self, key: str, default: bytes | None = None) -> bytes | None:
        return self.data.get(key, default)

    def set_bytes(self, key: str, value: bytes) -> None:
        self.data[key] = value


class Out(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


@dataclass
class Step:
    """What one input record produced, and what the metrics need to know about it."""

    outputs: list[Out] = field(default_factory=list)
    event: Event | None = None  # None for a clock tick or a dead letter
    duplicate: bool = False
    dead_letter: str | None = None  # the reason
    outcome: Outcome | None = None
    state_writes: int = 0  # keys written to the case's store (each one a changelog record)


def observatory_mark(territory: str, at: datetime, kind: str, rupture_id: str, **extra: Any) -> tuple[bytes, bytes]:
    """A rupture mark (no person data), keyed `<territory>/<ISO week>/<type>/<rupture_id>`: one
    record per rupture, so writing it again (a replay) counts it once."""
    year, week, _ = at.isocalendar()
    w = f"{year}-W{week:02d}"
    value = {"territory": territory, "week": w, "type": kind, "rupture_id": rupture_id, **extra}
    return f"{territory}/{w}/{kind}/{rupture_id}".encode(), json.dumps(value).encode()


def rupture_mark(e: RuptureReported) -> tuple[bytes, bytes]:
    return observatory_mark(e.territory, e.occurred_at, e.type, e.rupture_id)


def refusal_mark(territory: str, e: AdmissionDecided) -> tuple[bytes, bytes]:
    """An automatic `refused_admission_without_alternative` mark: a CRT refused a referral and
    proposed no other structure. Keyed by the decision: a replay counts it once."""
    return observatory_mark(territory, e.occurred_at, "refused_admission_without_alternative", f"admission:{e.event_id}",
                            automatic=True)


def deadline_mark(territory: str, at_ms: int, kind: str, referral_id: str, **extra: Any) -> tuple[bytes, bytes]:
    """An automatic mark about a referral's deadline."""
    return observatory_mark(territory, from_ms(at_ms), kind, f"deadline:{referral_id}", automatic=True, **extra)


class RecordProcessor:
    """Records of the canonical topics and clock ticks in; views, inbox, marks, schedule out."""

    def __init__(self, catalogue: Catalogue, policy: KindPolicy, *, views_only: bool = False) -> None:
        #: True (`views rebuild`): the view item records only, from the same step; no notification,
        #: audit record, mark, follow-up entry or schedule is built
        self.views_only = views_only
        self.policy = policy
        self.codec = Codec()
        self.ticks = catalogue.topic("clock-ticks").name
        self.learn(catalogue)
        self.observatory = catalogue.topic("observatory").name
        self.followups = catalogue.topic("followups").name
        self.activity = catalogue.topic("person-activity").name
        self.audit = catalogue.topic("audit").name
        self.deadletter = catalogue.topic("deadletter").name
        self.schedule = catalogue.topic("clock-schedule").name
        self.state_limit = catalogue.topic("case-state").max_value_bytes

    def learn(self, catalogue: Catalogue) -> None:
        """The structures of the catalogue's registry, those that left included (their views stay
        as the events make them): each attribute replaced whole, so a record being processed on
        another thread sees the old registry or the new one, never a mix within one attribute."""
        registry = catalogue.registry
        kinds = {slug: registry.kind_of(slug) for slug in registry.known()}
        self.territory = {slug: registry.get(slug).territory for slug in kinds}
        self.views = {slug: catalogue.per_structure("views", slug).name for slug in kinds}
        self.inboxes = {slug: catalogue.per_structure("inbox", slug).name for slug in kinds}
        self.limits = {t.name: t.max_value_bytes for t in catalogue.topics.values()}
        self.case_file = IncrementalCaseFile(kinds, Policy(self.policy.hidden, self.policy.deadlines), announce=not self.views_only)

    def input_topics(self, catalogue: Catalogue) -> list[str]:
        return [t.name for t in catalogue.canonical()] + [self.ticks]

    def process(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                headers: Headers | None, state: Callable[[], BytesState], now: datetime | None = None) -> Step:
        """One record. `state()` gives the store of the record's key (its case)."""
        now = now or datetime.now(UTC)
        where = (topic, partition, offset)
        if key is None:
            return self._dead(where, key, value, headers, "key_missing", "a record without a key (the case id)")
        if topic == self.ticks:
            due = _due(value)
            step = Step()
            tick_now = max(now, due) if due else now  # never evaluate a tick before its own due time
            return self._apply(step, where, key, value, headers, state, key.decode(), None, tick_now)
        try:
            event = self.codec.decode(value, headers, topic=topic, partition=partition, offset=offset)
        except DecodeError as exc:
            return self._dead(where, key, value, headers, "undecodable", str(exc))
        if key != event.key.encode():
            return self._dead(where, key, value, headers, "key_mismatch", f"record key differs from the event's key {event.key!r}")
        step = Step(event=event)
        if isinstance(event, RuptureReported) and event.case_id is None:
            # the observatory's mark is keyed by the rupture: writing it again is harmless
            if not self.views_only:
                step.outputs.append(Out(self.observatory, *rupture_mark(event)))
            return step
        step = self._apply(step, where, key, value, headers, state, event.key, event, now)
        if step.duplicate or step.dead_letter or self.views_only:
            return step
        if isinstance(event, RuptureReported):
            step.outputs.append(Out(self.observatory, *rupture_mark(event)))
        elif isinstance(event, AdmissionDecided) and event.decision == "refused" and event.alternative is None:
            step.outputs.append(Out(self.observatory, *refusal_mark(self._territory(event.source), event)))
        return step

    def _apply(self, step: Step, where: tuple[str, int, int], key: bytes, value: bytes | None, headers: Headers | None,
               state: Callable[[], BytesState], case_id: str, event: Event | None, now: datetime) -> Step:
        store = StagedStore(state(), self.state_limit)
        try:
            outcome = self.case_file.apply(store, case_id, event, now)
            outs = self._outputs(outcome, case_id)
        except OutputTooLarge as exc:
            return self._dead(where, key, value, headers, "output_too_large", str(exc))
        except Exception as exc:  # a bug must cost one record, never the partition
            log.exception("processing failed", extra={"topic": where[0], "partition": where[1], "offset": where[2]})
            return self._dead(where, key, value, headers, "processing_failed", f"{type(exc).__name__}: {exc}")
        step.state_writes = store.commit()
        step.outputs.extend(outs)
        step.duplicate, step.outcome = outcome.duplicate, outcome
        return step

    def _outputs(self, outcome: Outcome, case_id: str) -> list[Out]:
        ckey = case_id.encode()
        views, inboxes, audit = self.views, self.inboxes, self.audit
        outs = [Out(views[r.structure], f"{case_id}/{r.item}".encode(), r.value) for r in outcome.items]
        if self.views_only:
            return self._within_limits(outs)
        outs += [Out(inboxes[n.structure], ckey, n.encode()) for n in outcome.notices]
        outs += [Out(audit, ckey, a.encode()) for a in outcome.audits]
        if outcome.overdue or outcome.retract is not None or outcome.late is not None:
            outs += self._deadline_outputs(outcome, case_id)
        if outcome.follow_up is not None:
            outs += [Out(self.followups, key, value) for key, value in followups.entries(outcome.follow_up)]
        if outcome.activity is not None:
            keys, last = outcome.activity
            outs += [Out(self.activity, f"{k}/{case_id}".encode(), str(last).encode()) for k in keys]
        if outcome.schedule is not None:
            case_id, due = outcome.schedule
            outs.append(Out(self.schedule, case_id.encode(), None if due is None else str(due).encode()))
        return self._within_limits(outs)

    def _within_limits(self, outs: list[Out]) -> list[Out]:
        limits = self.limits
        for o in outs:
            if o.value is not None and len(o.value) + len(o.key or b"") > limits[o.topic]:
                size = len(o.value) + len(o.key or b"")
                raise OutputTooLarge(f"a record of {size} bytes for {o.topic} exceeds its limit {limits[o.topic]}")
        return outs

    def _deadline_outputs(self, outcome: Outcome, case_id: str) -> list[Out]:
        """An overdue referral: an automatic `unanswered_referral` mark (keyed by the referral: once,
        whatever replays) and a reminder in its sender's inbox; a late answer: its mark and delay;
        an answer in time processed after the tick (a processor behind): the mark withdrawn."""
        outs = []
        for o in outcome.overdue:
            outs.append(Out(self.observatory, *deadline_mark(self._territory(o.recipient), o.due_ms, "unanswered_referral",
                                                             o.referral_id)))
            inbox = self.inboxes.get(o.sender)
            if inbox is not None:  # a sender since removed from the registry has no inbox left
                note = Notice(o.sender, case_id, {
                    "notification_id": f"{case_id}:referral:{o.referral_id}:overdue", "type": "referral_overdue",
                    "case_id": case_id, "item": f"referral:{o.referral_id}", "due": iso(from_ms(o.due_ms))})
                outs.append(Out(inbox, case_id.encode(), note.encode()))
        if outcome.retract is not None:
            r = outcome.retract
            key, _ = deadline_mark(self._territory(r.recipient), r.due_ms, "unanswered_referral", r.referral_id)
            outs.append(Out(self.observatory, key, None))
        if outcome.late is not None:
            late = outcome.late
            outs.append(Out(self.observatory, *deadline_mark(self._territory(late.recipient), late.answered_ms,
                                                             "late_referral_answer", late.referral_id,
                                                             delay_s=late.delay_ms // 1000)))
        return outs

    def _territory(self, slug: str) -> str:
        return self.territory.get(slug, "unknown")

    def _dead(self, where: tuple[str, int, int], key: bytes | None, value: bytes | None, headers: Headers | None,
              reason: str, detail: str) -> Step:
        topic, partition, offset = where
        h = dead_letter_headers(list(headers or []), reason=reason, detail=detail, service="processor",
                                topic=topic, partition=partition, offset=offset)
        return Step(outputs=[Out(self.deadletter, key, value, h)], dead_letter=reason)


def _due(value: bytes | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value or b"") / 1000, UTC)
    except ValueError:
        return None

