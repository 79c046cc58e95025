"""Several producer streams chunked at once, every chunk handed to the one writer.

Why: a source whose streams are each slow to produce (a MongoDB server serving one
cursor per collection) would otherwise be read one stream at a time, because the engine
stores files in tree order and a producer ahead of its turn must stop once its bounded
queue is full. Here each stream gets its own chunking thread; the chunks meet in one
small queue that the caller's thread empties into ``BlobWriter.submit`` (which is not
thread-safe and need not become so). Each stream's ids land in its own list in its own
order, so the interleaving across streams does not matter.

Memory: ``width`` chunker buffers plus at most ``2 * width`` chunks in the queue.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .chunker import Chunker
from .events import Stream
from .writer import BlobWriter

POLL_S = 0.2  # how often a blocked chunking thread looks for a cancel
CANCEL_WAIT_S = 10.0  # a thread stuck on its producer is left behind after this (daemon)


class _Cancelled(Exception):
    """The backup stopped; a chunking thread leaves its stream (which cancels the producer)."""


@dataclass
class _Flow:
    """One stream being chunked: its node, its ids in order, its size so far."""

    item: Stream
    ids: list[bytes] = field(default_factory=list)
    size: int = 0


class StreamFanIn:
    """Chunks up to ``width`` streams at once; the caller pumps their chunks to the writer.

    ``start`` returns at once unless ``width`` streams are busy (then it pumps until one
    ends); ``drain`` pumps until every started stream has ended. ``on_done(item, size,
    ids)`` is called on the caller's thread, in the order streams end. A stream's error
    is raised from ``start``/``drain``; ``cancel`` stops every thread.
    """

    def __init__(
        self,
        writer: BlobWriter,
        seed: int,
        width: int,
        on_done: Callable[[Stream, int, list[bytes]], None],
    ) -> None:
        self.writer = writer
        self.width = width
        self.on_done = on_done
        self._seed = seed
        self._spare: list[Chunker] = []
        self._queue: queue.Queue[tuple[_Flow, bytes | object | BaseException]] = queue.Queue(
            maxsize=2 * width
        )
        self._active = 0
        self._cancelled = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, item: Stream) -> None:
        while self._active >= self.width:
            self._pump()
        flow = _Flow(item)
        chunker = self._spare.pop() if self._spare else Chunker(self._seed)
        thread = threading.Thread(
            target=self._chunk, args=(flow, chunker), name="stream-chunk", daemon=True
        )
        self._active += 1
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def drain(self) -> None:
        while self._active:
            self._pump()

    def cancel(self) -> None:
        """Stop every chunking thread and wait for them (each closes its producer)."""
        self._cancelled.set()
        deadline = time.monotonic() + CANCEL_WAIT_S
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))

    # -- the caller's thread ----------------------------------------------------------

    def _pump(self) -> None:
        flow, what = self._queue.get()
        if isinstance(what, bytes):
            flow.size += len(what)
            self.writer.submit(what, flow.ids)
            return
        self._active -= 1
        if isinstance(what, BaseException):
            raise what
        chunker = what
        assert isinstance(chunker, Chunker)
        self._spare.append(chunker)
        self.on_done(flow.item, flow.size, flow.ids)

    # -- a chunking thread ------------------------------------------------------------

    def _chunk(self, flow: _Flow, chunker: Chunker) -> None:
        try:
            with flow.item.open() as handle:
                for chunk in chunker.chunks(handle):
                    self._put(flow, chunk)
        except _Cancelled:
            return
        except BaseException as exc:  # raised on the caller's thread
            self._put_final(flow, exc)
            return
        self._put_final(flow, chunker)

    def _put(self, flow: _Flow, what: bytes | object | BaseException) -> None:
        while True:
            if self._cancelled.is_set():
                raise _Cancelled
            try:
                self._queue.put((flow, what), timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _put_final(self, flow: _Flow, what: object) -> None:
        with contextlib.suppress(_Cancelled):
            self._put(flow, what)
