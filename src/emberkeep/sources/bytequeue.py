"""A bounded queue of byte batches between a producer thread and the engine's reader.

The producer ``put``s batches and ends with ``close(error)``; the consumer reads through
``readinto`` as from a file. At most ``budget`` bytes wait in the queue (one batch more
than that never waits), so a producer faster than the engine blocks instead of filling
memory. ``cancel()`` wakes a blocked producer, whose ``put`` then raises ``Cancelled``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Cancelled(Exception):
    """The consumer gave up; the producer should stop."""


class ByteQueue:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: deque[bytes] = deque()
        self._queued = 0
        self._closed = False
        self._cancelled = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._current = memoryview(b"")

    # -- producer ------------------------------------------------------------------

    def put(self, batch: bytes) -> None:
        with self._cond:
            while self._queued >= self.budget and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise Cancelled
            self._items.append(batch)
            self._queued += len(batch)
            self._cond.notify_all()

    def close(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify_all()

    # -- consumer ------------------------------------------------------------------

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def readinto(self, buf: Any) -> int:
        """Fill ``buf`` from the queued batches; 0 at the end; raises the producer's error."""
        view = memoryview(buf).cast("B")
        filled = 0
        while filled < len(view):
            if not self._current:
                batch = self._next()
                if batch is None:
                    break
                self._current = memoryview(batch)
            n = min(len(view) - filled, len(self._current))
            view[filled : filled + n] = self._current[:n]
            self._current = self._current[n:]
            filled += n
        return filled

    def _next(self) -> bytes | None:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._items:
                batch = self._items.popleft()
                self._queued -= len(batch)
                self._cond.notify_all()
                return batch
            if self._error is not None:
                raise self._error
            return None
