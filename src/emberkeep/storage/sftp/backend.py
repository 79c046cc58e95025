"""The sftp:// backend: the storage interface as operations on one SFTP session each.

Writes go to a temp name, fsynced and renamed (``__init__`` says how each step maps to SFTP);
``pool.SessionPool`` runs every operation, with its retries.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import posixpath
import secrets
import stat as stat_mode
from collections.abc import Iterator

from paramiko.sftp import (
    CMD_EXTENDED,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_WRITE,
)

from ...errors import AlreadyExists, EmberkeepError, NotFound, StorageError, StorageFull
from ..base import ObjectInfo, Payload, holds_written
from . import failures
from .location import SftpLocation
from .openssh_client import OpensshConnector
from .paramiko_client import ParamikoConnector
from .pool import DROPS, Connector, SessionPool
from .protocol import (
    IN_FLIGHT,
    close_after,
    close_file,
    open_file,
    read_range,
    statvfs,
    write_all,
)
from .protocol import (
    size as file_size,
)
from .session import FSYNC, POSIX_RENAME, Session


def _temp_path(path: str) -> str:
    """A hidden sibling name for writing ``path``, short when its name is long (like local)."""
    folder, name = posixpath.split(path)
    tag = secrets.token_hex(6)
    temp = f".{name}.tmp-{tag}"
    if len(temp.encode()) > 255:
        temp = f".emberkeep.tmp-{tag}"
    return posixpath.join(folder, temp)


def _wanted(filename: str, temps: bool) -> bool:
    """Objects are the files not hidden; temp files are the hidden ones named like ours."""
    if temps:
        return filename.startswith(".") and ".tmp-" in filename
    return not filename.startswith(".")


class SftpStorage:
    """A target on an SSH server. Thread-safe: callers share one connection's sessions."""

    def __init__(self, url: str, *, label: str = "") -> None:
        self.label = label or "sftp target"
        self.loc = SftpLocation.parse(url, self.label)
        connector: Connector = (
            OpensshConnector(self.label, self.loc)
            if self.loc.client == "openssh"
            else ParamikoConnector(self.label, self.loc)
        )
        self._pool = SessionPool(self.label, self.loc, connector)

    # -- the interface -------------------------------------------------------------------

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        path = self._path(name)
        parts = [memoryview(p).cast("B") for p in (data if isinstance(data, list) else [data])]
        tries = 0

        def op(sftp: Session) -> None:
            nonlocal tries
            tries += 1
            try:
                self._put(sftp, name, path, parts, overwrite)
            except AlreadyExists:
                # Tried again after a dropped connection: the first try may have renamed.
                if tries == 1 or not self._holds(sftp, name, path, parts):
                    raise

        self._pool.run(f"writing {name}", op)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        return self._pool.run(
            f"reading {name}", lambda sftp: self._get(sftp, name, path, offset, length)
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        found = self._pool.run(
            f"listing {prefix or 'the target'}",
            lambda sftp: [
                ObjectInfo(rel, size)
                for rel, size in self._walk(sftp, folder, temps=False)
                if rel.startswith(prefix)
            ],
        )
        return iter(found)

    def stat(self, name: str) -> ObjectInfo | None:
        path = self._path(name)

        def op(sftp: Session) -> ObjectInfo | None:
            try:
                return ObjectInfo(name, sftp.stat(path).st_size or 0)
            except FileNotFoundError:
                return None

        return self._pool.run(f"looking up {name}", op)

    def delete(self, name: str) -> None:
        path = self._path(name)

        def op(sftp: Session) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self._pool.run(f"deleting {name}", op)

    def free_bytes(self) -> int | None:
        return self._pool.run("asking for free space", lambda sftp: statvfs(sftp, self.loc.root))

    def incomplete(self) -> builtins.list[str]:
        found = self._pool.run(
            "looking for unfinished writes",
            lambda sftp: [rel for rel, _size in self._walk(sftp, "", temps=True)],
        )
        return sorted(found)

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        self._pool.close()

    # -- operations, each run on one SFTP session ------------------------------------------

    def _put(
        self,
        sftp: Session,
        name: str,
        path: str,
        parts: builtins.list[memoryview],
        overwrite: bool,
    ) -> None:
        temp = _temp_path(path)
        try:
            self._write_temp(sftp, temp, parts)
            if overwrite:
                self._replace(sftp, temp, path)
            else:
                self._create(sftp, name, temp, path)
        except BaseException as exc:
            if isinstance(exc, (TimeoutError, *DROPS)) or not sftp.usable():
                raise  # the temp file stays behind; incomplete() lists it
            with contextlib.suppress(Exception):
                sftp.remove(temp)
            if isinstance(exc, OSError):
                raise self._write_error(sftp, name, exc, sum(map(len, parts))) from exc
            raise

    def _write_temp(self, sftp: Session, temp: str, parts: builtins.list[memoryview]) -> None:
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
        try:
            handle = open_file(sftp, temp, flags, 0o600)
        except FileNotFoundError:
            self._makedirs(sftp, posixpath.dirname(temp))
            handle = open_file(sftp, temp, flags, 0o600)
        try:
            write_all(sftp, handle, parts)
            if FSYNC in sftp.extensions:
                sftp._request(CMD_EXTENDED, FSYNC, handle)
        except BaseException as exc:
            close_after(sftp, handle, exc)
            raise
        close_file(sftp, handle)

    def _create(self, sftp: Session, name: str, temp: str, path: str) -> None:
        try:
            sftp.rename(temp, path)
        except OSError as exc:
            if self._exists(sftp, path):
                raise AlreadyExists(f"target {self.label}: object {name} already exists") from exc
            raise

    def _holds(self, sftp: Session, name: str, path: str, parts: builtins.list[memoryview]) -> bool:
        """Whether the file at ``path`` is the object being written (``base.holds_written``)."""
        try:
            size = sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return False
        return holds_written(name, parts, size, lambda: self._get(sftp, name, path, 0, None))

    def _replace(self, sftp: Session, temp: str, path: str) -> None:
        if POSIX_RENAME in sftp.extensions:
            sftp.posix_rename(temp, path)
            return
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(path)
        sftp.rename(temp, path)

    def _get(self, sftp: Session, name: str, path: str, offset: int, length: int | None) -> bytes:
        try:
            handle = open_file(sftp, path, SFTP_FLAG_READ)
        except FileNotFoundError as exc:
            raise NotFound(f"target {self.label}: object {name} is missing") from exc
        try:
            if length is None:
                length = max(0, file_size(sftp, handle) - offset)
            data = read_range(sftp, handle, offset, length)
        except BaseException as exc:
            close_after(sftp, handle, exc)
            raise
        close_file(sftp, handle)
        return data

    def _walk(self, sftp: Session, folder: str, *, temps: bool) -> Iterator[tuple[str, int]]:
        """(name, size) of every object under ``folder``, or of every temp file with ``temps``."""
        todo = [folder]
        while todo:
            current = todo.pop()
            where = posixpath.join(self.loc.root, current) if current else self.loc.root
            try:
                entries = sftp.listdir_attr(where)
            except FileNotFoundError:
                continue  # not made yet, or removed while walking
            for entry in entries:
                rel = posixpath.join(current, entry.filename) if current else entry.filename
                mode = entry.st_mode or 0
                if stat_mode.S_ISDIR(mode):
                    todo.append(rel)
                elif stat_mode.S_ISREG(mode) and _wanted(entry.filename, temps):
                    yield rel, entry.st_size or 0

    def _makedirs(self, sftp: Session, folder: str) -> None:
        missing = []
        while folder not in ("", ".", "/") and not self._is_dir(sftp, folder):
            missing.append(folder)
            folder = posixpath.dirname(folder)
        for path in reversed(missing):
            try:
                sftp.mkdir(path, 0o700)
            except OSError:
                if not self._is_dir(sftp, path):  # else another writer made it meanwhile
                    raise

    @staticmethod
    def _is_dir(sftp: Session, path: str) -> bool:
        try:
            return stat_mode.S_ISDIR(sftp.stat(path).st_mode or 0)
        except FileNotFoundError:
            return False

    @staticmethod
    def _exists(sftp: Session, path: str) -> bool:
        try:
            sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def _path(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise StorageError(f"target {self.label}: refusing object name {name!r}")
        return posixpath.join(self.loc.root, name)

    def _write_error(self, sftp: Session, name: str, exc: OSError, size: int) -> EmberkeepError:
        """A write failure; SFTP reports a full disk as a bare failure, so look at free space."""
        if isinstance(exc, EmberkeepError):
            return exc
        free = None
        with contextlib.suppress(Exception):
            free = statvfs(sftp, self.loc.root)
        if exc.errno == errno.ENOSPC or (free is not None and free < size + IN_FLIGHT):
            return StorageFull(
                f"target {self.label}: no space left in {self.loc.root} on {self.loc.host}: free "
                "space there or point the target elsewhere; earlier backups are intact"
            )
        return failures.failed(self.label, self.loc, f"writing {name}", exc)
