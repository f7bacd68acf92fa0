"""The processor's local state belongs to one cluster and one incarnation of its topics.

The RocksDB state in the state folder is a cache of the changelog (`case-state`), itself derived
from the canonical topics, and it decides what the processor writes next to the views, inboxes and
schedule. Built from another cluster, or from topics deleted and created again since, it is wrong
whatever its positions say: Quix keeps it silently when the new changelog is empty, and refuses to
start when it is shorter (`InvalidStoreChangelogOffset`). So the folder records the `Lineage` it was
built from (`lineage.json`: cluster id, the id of every topic the processor reads or writes):
- before the engine starts, a state that does not match is discarded (a log line and
  `parcours_cache_discarded_total{cache="state"}`) and Quix restores it from the changelog;
- while the engine runs, `LineageWatch` compares it with the cluster every few seconds; on a
  change it stops the engine, and `run_engine` discards the state and starts a new engine in the
  same process.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import KafkaAccess
from parcours.bus.lineage import WATCH_INTERVAL_S, Lineage, adopt, change, describe
from parcours.bus.reachability import until_reachable
from parcours.topology.catalogue import Catalogue

log = logging.getLogger("parcours.processor")

LINEAGE_FILE = "lineage.json"
#: entries of the state folder that are not state: the lineage itself, the instance's lock
_NOT_STATE = frozenset({LINEAGE_FILE, ".instance.lock"})


def processor_topics(catalogue: Catalogue) -> list[str]:
    """Every topic the processor reads or writes (its inputs, the changelog, its outputs)."""
    return sorted(t.name for t in catalogue.topics.values() if "processor" in t.producers | t.consumers)


def _has_state(state_dir: Path) -> bool:
    return state_dir.exists() and any(p.name not in _NOT_STATE for p in state_dir.iterdir())


def discard_state(state_dir: Path) -> None:
    """Remove the local state (not the lock a running instance holds): Quix restores from the changelog."""
    for p in state_dir.iterdir() if state_dir.exists() else []:
        if p.name in _NOT_STATE:
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def prepare_state(state_dir: Path, kafka: KafkaAccess, topics: list[str], on_discard: Callable[[str], None]) -> Lineage:
    """Check the state folder against the cluster: discard a state built from elsewhere, record the
    lineage it is built from now on, and return it."""
    live = _all_present(kafka, topics)
    path = state_dir / LINEAGE_FILE
    recorded = Lineage.loads(path.read_text()) if path.exists() else None
    foreign, keep = adopt(recorded, live, has_data=_has_state(state_dir))
    if foreign is not None:
        log.warning("processor state discarded: restored from the changelog", extra={"reason": foreign.detail})
        on_discard(foreign.reason)
        discard_state(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(keep.dumps())
    tmp.replace(path)
    return keep


def _all_present(kafka: KafkaAccess, topics: list[str], every_s: float = 1.0) -> Lineage:
    """The live lineage once every topic exists (topics being created again, or not applied yet)."""
    waiting = False
    while True:
        live = describe(kafka, topics)
        missing = sorted(set(topics) - set(live.topics))
        if not missing:
            return live
        if not waiting:
            log.warning("processor waiting for its topics (parcours topics apply)", extra={"missing": len(missing), "first": missing[0]})
            waiting = True
        time.sleep(every_s)


class LineageWatch:
    """A thread comparing the recorded lineage with the cluster's every `interval` s; on a change
    (a topic deleted or created again, another cluster, a topic the processor uses appeared) it
    calls `stop` once and keeps the reason in `changed`."""

    def __init__(self, kafka: KafkaAccess, topics: list[str], recorded: Lineage, stop: Callable[[], None],
                 interval: float = WATCH_INTERVAL_S) -> None:
        self.kafka, self.topics, self.recorded, self.stop, self.interval = kafka, topics, recorded, stop, interval
        self.changed: str | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lineage-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        self._halt.set()
        self._thread.join(timeout=30)

    def check(self) -> str | None:
        """Why the topics differ from the recorded lineage now (None: they do not, or cannot be read)."""
        try:
            live = describe(self.kafka, self.topics)
        except ClusterError:
            return None  # a broker away: the engine says so itself; the lineage is checked again later
        return change(self.recorded, live)

    def _run(self) -> None:
        while not self._halt.wait(self.interval):
            why = self.check()
            if why is not None:
                self.changed = why
                log.warning("the processor's topics changed under it: starting again on a new state", extra={"reason": why})
                self.stop()
                return


def run_engine(build: Callable[[], Any], state_dir: Path, kafka: KafkaAccess, topics: list[str],
               on_discard: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> None:
    """Run the engine `build()` makes (a Quix `Application`) on a state that matches the cluster,
    until it stops; when its topics changed under it, discard the state and run a new one."""
    while True:
        # the engine asks the cluster about its topics as it is made: a broker away or overloaded
        # at that moment is waited for, not a reason to stop the processor
        lineage, app = until_reachable(lambda: (prepare_state(state_dir, kafka, topics, on_discard), build()),
                                       "starting the engine", sleep=sleep)
        watch = LineageWatch(kafka, topics, lineage, app.stop)
        watch.start()
        try:
            app.run()  # until SIGTERM or SIGINT, or the watch's stop
        except Exception:
            # the engine may fail on topics deleted under it before the watch sees it
            watch.changed = watch.changed or watch.check()
            if watch.changed is None:
                raise
        finally:
            watch.halt()
        if watch.changed is None:
            return
