"""The processor's commit guard: a call blocked past its limit ends the process (to be started again)."""

from __future__ import annotations

import subprocess
import sys
import time

from parcours.processors.watchdog import STALLED_EXIT

GUARDED = """
import time
from parcours.processors.watchdog import StallGuard
guard = StallGuard({limit}, "a test call")
for _ in range(3):
    with guard:
        time.sleep({quick})
with guard:
    time.sleep({blocked})
print("returned")
"""


def test_a_call_blocked_past_the_limit_ends_the_process() -> None:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", GUARDED.format(limit=0.5, quick=0.1, blocked=30)], capture_output=True, text=True,
                         timeout=20, check=False)
    assert out.returncode == STALLED_EXIT, out.stdout + out.stderr
    assert "returned" not in out.stdout
    assert "blocked for over" in out.stderr
    assert time.monotonic() - t0 < 10


def test_calls_within_the_limit_go_on() -> None:
    out = subprocess.run([sys.executable, "-c", GUARDED.format(limit=2, quick=0.2, blocked=0.2)], capture_output=True, text=True,
                         timeout=20, check=False)
    assert out.returncode == 0, out.stderr
    assert "returned" in out.stdout
