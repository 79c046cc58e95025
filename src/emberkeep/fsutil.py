"""Crash-safe local writes: temp name, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import AlreadyExists, StorageError, StorageFull


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
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
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = _write_temp(final, data, mode)
        try:
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
        return StorageError(f"{path} is on a read-only file system")
    return StorageError(f"{path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_output(final: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file to stream into that appears at ``final`` only once complete (fsynced, renamed).

    On any error the temp file is removed and ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
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
