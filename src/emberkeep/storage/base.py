"""The one small interface every backend implements."""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import IntegrityError, NotFound, StorageError

Payload = bytes | bytearray | memoryview | list[bytes | bytearray]
"""An object's bytes, whole or as a list of parts written one after another."""


@dataclass(frozen=True)
class ObjectInfo:
    name: str  # full object name, e.g. "data/9f…"
    size: int


class Storage(Protocol):
    label: str  # how messages name this target

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        """Store an object crash-safely. Create-only unless ``overwrite``: raises AlreadyExists."""

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read an object or a byte range of it. Raises NotFound."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (a folder such as "data/")."""

    def stat(self, name: str) -> ObjectInfo | None:
        """Size of an object, or None when it does not exist."""

    def delete(self, name: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def free_bytes(self) -> int | None:
        """Free space where known."""

    def incomplete(self) -> builtins.list[str]:
        """Names of writes that never finished (a crash mid-upload); ``delete`` removes them."""

    # Optional methods, called through the functions of the same name below (backends
    # without them need nothing done):
    #   prepare_read(names, on_progress) -> None     thaw archived objects before reading
    #   locked_until(name) -> datetime | None        Object Lock retention in force
    # ``delete`` (and an overwriting ``put``) of an object under retention raises ObjectLocked.


class ObjectLocked(StorageError):
    """The server refused to delete or replace an object under retention (S3 Object Lock).

    Not a failure of the run: the object stays until ``until`` (None when the server did not
    say, e.g. a legal hold), and a later attempt after that date succeeds.
    """

    def __init__(self, message: str, *, name: str, until: datetime | None) -> None:
        super().__init__(message)
        self.name = name
        self.until = until


ProgressFn = Callable[[Any], None]
"""Receives progress reports of a long wait (for s3: ``s3.ThawProgress``; ``str()`` reads well)."""


def prepare_read(
    storage: Storage, names: Iterable[str], on_progress: ProgressFn | None = None
) -> None:
    """Make ``names`` readable before reading them; at once for most backends.

    An optional backend method: on s3 targets with archived objects (Glacier Flexible
    Retrieval, Deep Archive) it asks the server to thaw them all and waits once for the lot,
    reporting through ``on_progress``. Other backends have no such method: nothing to do.
    """
    method = getattr(storage, "prepare_read", None)
    if method is not None:
        method(names, on_progress)


def get_at_most(storage: Storage, name: str, limit: int) -> bytes:
    """The whole of the small object ``name``: the storage side can make any object any
    size, so one the target lists as larger than ``limit`` is refused by name
    (``IntegrityError``) before it is read. (Its size is asked first: a ranged read is
    only for objects that never change, which backends may cache, ``local.py``.)"""
    info = storage.stat(name)
    if info is None:
        raise NotFound(f"target {storage.label}: object {name} is missing")
    data = b"" if info.size > limit else storage.get(name)
    if info.size > limit or len(data) > limit:
        size = max(info.size, len(data))
        raise IntegrityError(
            f"{storage.label}/{name}",
            f"larger than the {limit} bytes it may hold ({size}: damaged or forged); not read",
        )
    return data


def locked_until(storage: Storage, name: str) -> datetime | None:
    """Until when the server refuses to delete ``name`` (Object Lock), or None if it does not.

    An optional backend method (s3 only); ``datetime.max`` stands for a legal hold, which has
    no date.
    """
    method = getattr(storage, "locked_until", None)
    return None if method is None else method(name)


def holds_written(
    name: str, parts: Sequence[memoryview], stored_size: int | None, read: Callable[[], bytes]
) -> bool:
    """Whether the object stored as ``name`` is the one being written (the bytes ``parts``).

    For a backend that retried a create-only write (the connection dropped) and found the name
    taken: the first attempt may have been stored with only its reply lost, and the write then
    succeeded. ``stored_size`` is the stored object's size (None: missing), ``read`` reads it.
    It is the same object when the sizes match and either ``name`` ends in the SHA-256 of
    ``parts`` (packs, index, snapshots: whoever stored that name stored these bytes; a copy
    damaged on the server is for ``check`` to find), or, for other names (config, keys,
    leases), the stored bytes are ``parts``. A different object leaves the name taken.
    """
    if stored_size != sum(len(part) for part in parts):
        return False
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    if name.rsplit("/", 1)[-1] == digest.hexdigest():
        return True
    return read() == b"".join(parts)


def until_text(until: datetime | None) -> str:
    """``until 2026-03-02T02:00:00Z`` for an ObjectLocked's date, in messages."""
    if until is None:
        return "until a date the server did not give"
    if until.year == datetime.max.year:
        return "by a legal hold (no end date)"
    return f"until {until.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
