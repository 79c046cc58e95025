"""JSON files of the state dir, read as hints: a damaged one is set aside, never a crash.

The state dir holds what a host remembers between runs (``scheduler.json``, the
``verified-*.json`` logs of ``check``, ``leases-seen.json``, ``snapshots-seen.json``,
``siteconfig-stored.json``, ``recover.json``, ``recover-seen.json``). Like everything read
from disk it may be damaged, half-written by another version, or edited (README, "How it
keeps data safe"): valid JSON of the wrong shape is as damaged as garbage. Each reader
gives ``load`` a decoder that checks every type it relies on (a ``msgspec`` type, or a
parser that raises); whatever fails is reported naming the file, moved aside to
``<name>.damaged`` (the evidence kept, the next write starting afresh) and read as empty.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from .errors import EmberkeepError

T = TypeVar("T")
DAMAGED = ".damaged"

# What a decoder of a damaged file raises: wrong JSON, a wrong type where a value is used,
# a missing key, JSON nested deeper than the parser recurses
SHAPE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    RecursionError,
    msgspec.MsgspecError,
    EmberkeepError,
)


def typed(kind: type[T] | object) -> Callable[[bytes], T]:
    """A decoder checking the whole file against a ``msgspec`` type."""

    def decode(data: bytes) -> T:
        return msgspec.json.decode(data, type=kind)

    return decode


def load(
    path: Path,
    decode: Callable[[bytes], T],
    empty: Callable[[], T],
    warn: Callable[[str], None],
    *,
    what: str,
    then: str,
    move_aside: bool = True,
) -> T:
    """The decoded file; ``empty()`` when it is missing, unreadable or damaged.

    ``what`` names the content ("a scheduler state"), ``then`` what happens without it
    ("started afresh: ..."). ``move_aside`` False: a reader that must write nothing (a
    dry run, a look before the one that rebuilds) only reports it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return empty()
    except OSError as exc:
        warn(f"{path}: cannot be read ({exc.strerror or exc}); {then}")
        return empty()
    try:
        return decode(data)
    except SHAPE_ERRORS as exc:
        why = str(exc)[:200] or type(exc).__name__
        if move_aside:
            aside = set_aside(path)
            where = f"moved aside to {aside.name}" if aside else "it could not be moved aside"
        else:
            where = "left as it is"
        warn(f"{path} is damaged: not {what} ({why}); {where}, {then}")
        return empty()


def set_aside(path: Path) -> Path | None:
    """Rename a damaged file to ``<name>.damaged`` (replacing an older one); its new path."""
    aside = path.with_name(path.name + DAMAGED)
    with contextlib.suppress(OSError):
        os.replace(path, aside)
        return aside
    return None
