"""Content-defined chunking of files, with one reusable read buffer.

pyfastcdc's own stream chunker allocates a fresh buffer of twice the maximum chunk size
for every file, which dominates the cost of backing up many mid-sized files. This one
keeps a single buffer per backup and cuts it with ``cut_buf``. A cut is taken only when
at least ``max_size`` bytes lie ahead of the chunk's start (or the file has ended), which
is exactly when a streaming cut would be taken, so the boundaries are the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pyfastcdc

from ..repository import layout


class Readable(Protocol):
    """What chunking reads from: raw files (``buffering=0``) and producers' pipes."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Chunker:
    def __init__(self, seed: int) -> None:
        self._cdc = pyfastcdc.FastCDC(
            layout.CHUNK_AVG_PARAM,
            min_size=layout.CHUNK_MIN,
            max_size=layout.CHUNK_MAX,
            seed=seed,
        )
        self._max = layout.CHUNK_MAX
        self._buf = bytearray(2 * layout.CHUNK_MAX)

    def chunks(self, stream: Readable) -> Iterator[bytes]:
        """Yield the chunks of ``stream`` as new bytes objects, in order."""
        buf, view = self._buf, memoryview(self._buf)
        filled, eof = 0, False
        try:
            while True:
                while not eof and filled < len(buf):
                    n = stream.readinto(view[filled:])
                    eof = not n
                    filled += n or 0
                if filled == 0:
                    return
                consumed = 0
                for chunk in self._cdc.cut_buf(view[:filled]):
                    if not eof and filled - chunk.offset < self._max:
                        break  # not enough lookahead: cut it after the next read
                    yield bytes(chunk.data)
                    consumed = chunk.offset + chunk.length
                if eof and consumed == filled:
                    return
                remaining = filled - consumed
                buf[:remaining] = view[consumed:filled].tobytes()
                filled = remaining
        finally:
            view.release()
