"""Crash points: a test seam that SIGKILLs this process at a named moment.

``EMBERKEEP_TEST_KILL_AT`` names the moment, as ``point``, ``point:subject`` or either
with ``#n``: the process kills itself the ``n``-th time (default the first) it reaches
``point`` with a subject that contains ``subject``. Tests set it to crash a run at a chosen
step (a key change between its writes, a backup while its lease or a pack is still a temp
file) without guessing when that step comes by the clock. Never set outside tests.
"""

from __future__ import annotations

import os
import signal
import threading

_lock = threading.Lock()
_reached = 0  # how often the point named in the environment was reached so far


def crash_point(point: str, subject: str = "") -> None:
    spec = os.environ.get("EMBERKEEP_TEST_KILL_AT")
    if not spec:
        return
    wanted, _, count = spec.partition("#")
    name, _, part = wanted.partition(":")
    if name != point or part not in subject:
        return
    global _reached
    with _lock:
        _reached += 1
        if _reached == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
