"""The events a source yields, in depth-first order, for the engine to store."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from .chunker import Readable


@dataclass
class Enter:
    """A directory begins; its children follow, then ``Leave``."""

    node: dict[str, Any]


@dataclass
class Leave:
    pass


@dataclass
class Leaf:
    """An entry with no content to read (symlink, empty dir handled by Enter/Leave)."""

    node: dict[str, Any]


@dataclass
class LocalFile:
    """A regular file on this host, read by the engine with change detection."""

    node: dict[str, Any]
    stat: os.stat_result
    path: str  # where it lies on this host and in the snapshot


@dataclass
class Stream:
    """A file whose content a producer streams (a command's output, say), not on disk.

    ``open()`` gives a context manager yielding a binary stream with ``readinto``; the
    context manager raises an ``EmberkeepError`` on exit when the producer failed, so
    the engine commits no snapshot holding a torn stream.

    ``concurrent``: the engine may chunk this stream while it takes the source's next
    events (other concurrent streams among them). It finishes every concurrent stream
    before it handles any other event, so a source may rely on them being stored once
    it yields, say, the ``Leave`` of their directory.
    """

    node: dict[str, Any]
    open: Callable[[], AbstractContextManager[Readable]]
    concurrent: bool = False


@dataclass
class Warning_:
    """Something skipped or doubtful; reported with the result, never silent.

    ``unreadable``: content the source was asked for could not be read and is not in the
    snapshot (a permission, an I/O error), which makes the backup incomplete (exit 3); not
    a file that vanished or a special file skipped by design."""

    path: str
    message: str
    unreadable: bool = False


def made_node(name: str, kind: str = "file") -> dict[str, Any]:
    """Metadata for an entry a source makes up (a dump's file): this user's, made now."""
    return {
        "name": name,
        "type": kind,
        "mode": 0o700 if kind == "dir" else 0o600,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "mtime_ns": time.time_ns(),
    }


class BytesStream:
    """A tiny in-memory stream with ``readinto``, copying no more than asked for."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def readinto(self, buf: memoryview, /) -> int:
        n = min(len(buf), len(self._view) - self._pos)
        buf[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n


def bytes_stream(node: dict[str, Any], data: bytes, *, concurrent: bool = False) -> Stream:
    """A ``Stream`` of bytes already in memory (a small record file)."""
    return Stream(
        node,
        lambda: contextlib.nullcontext(BytesStream(data)),
        concurrent,
    )


Event = Enter | Leave | Leaf | LocalFile | Stream | Warning_
