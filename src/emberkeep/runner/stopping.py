"""Stopping a long-running command at a safe point: the first SIGTERM or SIGINT asks it to
stop once the step in hand is done (``stopping`` turns true); a second aborts at once
(KeyboardInterrupt). The scheduler stops between jobs, the oplog archiver between polls, so
neither is cut off inside a write or a server call."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType


class Stopper:
    def __init__(self, after: str) -> None:
        self.after = after  # what is finished first, for the acknowledgement
        self.stopping = False

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            raise KeyboardInterrupt
        self.stopping = True
        name = signal.Signals(signum).name
        os.write(2, f"{name}: stopping after {self.after} (send it again to abort)\n".encode())

    def requested(self) -> bool:
        return self.stopping

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stopper]:
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
