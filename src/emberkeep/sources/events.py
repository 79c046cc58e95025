"""The events a source yields, in depth-first order, for the engine to store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


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
class Warning_:
    """Something skipped or doubtful; reported with the result, never silent."""

    path: str
    message: str


Event = Enter | Leave | Leaf | LocalFile | Warning_
