"""The events a source yields, in depth-first order, for the engine to store."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO


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
    """

    node: dict[str, Any]
    open: Callable[[], AbstractContextManager[BinaryIO]]


@dataclass
class Warning_:
    """Something skipped or doubtful; reported with the result, never silent."""

    path: str
    message: str


Event = Enter | Leave | Leaf | LocalFile | Stream | Warning_
