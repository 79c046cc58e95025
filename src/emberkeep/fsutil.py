"""Crash-safe local writes: temp name, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .crashpoints import crash_point
from .errors import AlreadyExists, StorageError, StorageFull


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


PRIVATE_DIR = 0o700  # every directory emberkeep makes (README, "How it keeps data safe")


def make_dirs(path: Path, *, mode: int = PRIVATE_DIR, durable: bool = False) -> None:
    """Create the directory ``path`` and its missing parents, each with exactly ``mode``.

    ``mkdir`` takes the umask off its mode (a umask of 000 would give 0777 to all, one of
    0222 a folder its owner cannot write to), so each directory made here is given
    ``mode`` again once made; directories that already exist are left as they are.
    ``durable`` fsyncs the parent of each directory created (or found just created by
    another thread), so a crash cannot lose it and what is written inside. Raises the
    OSError of the directory that could not be created (its ``filename`` names it).
    """
    missing = []
    while not path.is_dir() and path.parent != path:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
            os.chmod(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, "exists and is not a directory", str(directory)
                ) from None
        if durable:
            fsync_dir(directory.parent)


def create_new(path: Path, mode: int = 0o600) -> int:
    """Open a new file for writing with ``mode`` from the start: never an existing file,
    never through a symlink, and never readable by others before its owner allows it."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def _create_parent(final: Path) -> None:
    """``final``'s folder and its missing parents, durably; a clear error when impossible."""
    try:
        make_dirs(final.parent, durable=True)
    except OSError as exc:
        where = exc.filename or final.parent
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            raise storage_error(where, exc) from exc
        raise StorageError(
            f"cannot create the directory {where} ({exc.strerror}): check the path (is its "
            "disk mounted?) or choose another location"
        ) from exc


NAME_MAX = 255


def temp_name(final: Path) -> Path:
    """A hidden sibling name for writing ``final``; short when ``final``'s name is long."""
    tag = secrets.token_hex(6)
    name = f".{final.name}.tmp-{tag}"
    if len(os.fsencode(name)) > NAME_MAX:
        name = f".emberkeep.tmp-{tag}"
    return final.with_name(name)


Buffers = bytes | bytearray | memoryview | list[bytes | bytearray]
_IOV_MAX = 512


def write_all(fd: int, data: Buffers) -> None:
    """Write every byte of ``data`` (one buffer or a list of them, gathered with writev)."""
    parts = [memoryview(p) for p in (data if isinstance(data, list) else [data]) if len(p)]
    first = 0
    while first < len(parts):
        written = os.writev(fd, parts[first : first + _IOV_MAX])
        while written:
            if written >= len(parts[first]):
                written -= len(parts[first])
                first += 1
            else:
                parts[first] = parts[first][written:]
                written = 0


def _write_temp(final: Path, data: Buffers, mode: int) -> Path:
    tmp = temp_name(final)
    fd = create_new(tmp, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    return tmp


def write_atomic(final: Path, data: Buffers, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write ``data`` to ``final`` so that a crash leaves the old file or the new one.

    With ``exclusive`` the write is create-only: it raises ``AlreadyExists`` when
    ``final`` exists (hard link of the temp file, which fails atomically).
    """
    _create_parent(final)
    try:
        tmp = _write_temp(final, data, mode)
        try:
            crash_point("temp-written", str(final))  # tests kill a write here
            if exclusive:
                try:
                    os.link(tmp, final)
                except FileExistsError as exc:
                    raise AlreadyExists(f"{final} already exists") from exc
            else:
                os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(final.parent)
    except OSError as exc:
        raise storage_error(final, exc) from exc


def storage_error(path: Path | str, exc: OSError) -> StorageError:
    """Turn an OSError into a message that names the path and the fix."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(
            f"no space left on the device holding {path}: free space there or point the "
            "target elsewhere; earlier backups are intact"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"permission denied writing {path}: check its owner and mode")
    if exc.errno == errno.EROFS:
        return StorageError(
            f"{path} is on a read-only file system: remount it read-write or point the "
            "target elsewhere"
        )
    return StorageError(f"{path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_output(final: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file to stream into that appears at ``final`` only once complete (fsynced, renamed).

    On any error the temp file is removed and ``final`` is untouched.
    """
    _create_parent(final)
    tmp = temp_name(final)
    try:
        with open(create_new(tmp, mode), "wb") as out:
            try:
                yield out
                out.flush()
                os.fsync(out.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise storage_error(final, exc) from exc


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
