"""The processor's guard on its checkpoint commits: a commit that blocks for ever ends the process,
which its supervisor starts again.

A checkpoint commits the processor's Kafka transaction; Quix Streams calls librdkafka's
`send_offsets_to_transaction` and `commit_transaction` without a timeout outside a rebalance, and
librdkafka can then block for ever: when the broker coordinating the group is lost, it may keep
that broker, gone from the metadata, as the coordinator and never ask for the new one
(librdkafka #5511), and the call's timeout is not checked anyway (#5456). Seen on the three-node
cluster: the processor stopped in `send_offsets_to_transaction` for minutes after a broker was
SIGKILLed, its consumer lag growing, with nothing in its log. Nothing inside the process can
interrupt that native call; a restart can: the same instance's transactional id fences the stuck
producer, the broker aborts its open transaction, and the new process resumes from the last
committed checkpoint (exactly once: the aborted outputs are never read).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import TracebackType

log = logging.getLogger("parcours.processor")

#: a commit takes well under a second; one still blocked after this long is stuck, or the broker is
#: about to abort its transaction (processors.app.TRANSACTION_TIMEOUT_MS, 30 s): either way only a
#: restart goes on. Half the transaction's life: readers held back by it wait no longer than that.
COMMIT_STALL_S = 15.0
#: the exit status of a processor ended by the guard (EX_TEMPFAIL: start it again)
STALLED_EXIT = 75


class StallGuard:
    """`with guard:` around a call; the process exits when one call lasts over `seconds`. One
    watcher thread for every call (commits come up to 40 times a second)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds, self.what = seconds, what
        self._since: float | None = None
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="stall-guard", daemon=True)
            self._watcher.start()
        self._since = time.monotonic()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._since = None

    def _watch(self) -> None:
        while True:
            since = self._since
            if since is not None and time.monotonic() - since > self.seconds:
                log.error(f"{self.what} blocked for over {self.seconds:.0f} s: exiting, to be started again",
                          extra={"error": "stalled"})
                logging.shutdown()
                os._exit(STALLED_EXIT)
            time.sleep(0.5)


COMMIT_GUARD = StallGuard(COMMIT_STALL_S, "a checkpoint's commit (Kafka transaction)")
