"""The errors a user can meet, each with the exit status the CLI gives it.

Every message names the thing that is wrong and what to do about it; the CLI prints
the message alone (no traceback) for any ``EmberkeepError``.
"""

from __future__ import annotations

import os


class EmberkeepError(Exception):
    """A failure the user can act on. ``exit_code``: 1 failure, 2 usage (docs/design.md)."""

    exit_code = 1


class UsageError(EmberkeepError):
    """Bad arguments or a bad config file."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file is missing, unparsable or invalid."""


class IdentityRequired(EmberkeepError):
    """An operation needs to decrypt data but this host holds only the writer key."""


class WrongIdentity(EmberkeepError):
    """The identity given is not one of the repository's recipients."""


class IntegrityError(EmberkeepError):
    """An object in the repository is damaged: its hash or authentication tag is wrong."""

    def __init__(self, obj: str, detail: str) -> None:
        super().__init__(f"{obj}: {detail}")
        self.obj = obj
        self.detail = detail


class RepositoryError(EmberkeepError):
    """The repository is missing, of another site, or in an unexpected state."""


class RetiredWriterKey(RepositoryError):
    """This host's writer key was replaced by ``keys rotate --writer``: the repository no
    longer takes what it seals (docs/design.md, "Writer key rotation")."""


class LockedError(EmberkeepError):
    """Another process holds the exclusive lease."""


class StorageError(EmberkeepError):
    """A backend could not read or write an object."""


class StorageFull(StorageError):
    """The target has no space left."""


class NotFound(StorageError):
    """An object that should exist does not."""


class AlreadyExists(StorageError):
    """A create-only write found the name taken."""


NEARLY_FULL = 64 * 1024  # bytes free below which a failed write is put down to a full disk


def is_disk_full(exc: BaseException | None, where: str | os.PathLike[str] | None = None) -> bool:
    """Whether a failed write ran out of space: ENOSPC, EDQUOT or SQLite's SQLITE_FULL here or
    in an error it was raised from, or (SQLite reports a full disk under its shared memory
    file as a bare I/O error) the file system holding ``where`` has no space left."""
    import errno
    import sqlite3

    seen, cause = 0, exc
    while cause is not None and seen < 10:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    if where is None:
        return False
    try:
        vfs = os.statvfs(where)
    except OSError:
        return False
    return vfs.f_bavail * vfs.f_frsize < NEARLY_FULL


def state_dir_full(state_dir: object) -> str:
    """The words for a full state dir, the same wherever it is met."""
    return f"the state dir {state_dir} is full (no space left on its device): free space there"


def error_text(exc: BaseException, target: str | None = None) -> str:
    """A failure as the journal, ``status``, replicate and the dashboard say it: the message
    of an error the user can act on (``EmberkeepError``, ``OSError``), else the exception
    marked unexpected; naming ``target`` when given (a storage error already names it)."""
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    elif isinstance(exc, EmberkeepError | OSError):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc} (unexpected; please report it)"
    if target is None or f"target {target}" in text:
        return text
    return f"target {target}: {text}"
