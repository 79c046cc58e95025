"""file:// targets: one file per object, written temp -> fsync -> rename."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from ..errors import NotFound, StorageError
from ..fsutil import fsync_dir, storage_error, write_atomic
from .base import ObjectInfo, Payload

OPEN_FILES_PER_THREAD = 16


class LocalStorage:
    def __init__(self, root: str | Path, *, label: str = "") -> None:
        self.root = Path(root)
        self.label = label or str(root)
        self._open_files = threading.local()

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise StorageError(f"target {self.label}: refusing object name {name!r}")
        return self.root / name

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        try:
            write_atomic(self._path(name), data, mode=0o600, exclusive=not overwrite)
        except StorageError as exc:
            exc.args = (f"target {self.label}: {exc}",)
            raise

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            if length is not None:
                return self._read_range(path, offset, length)
            with open(path, "rb") as handle:
                if offset:
                    handle.seek(offset)
                return handle.read()
        except FileNotFoundError as exc:
            raise NotFound(f"target {self.label}: object {name} is missing") from exc
        except OSError as exc:
            raise StorageError(f"target {self.label}: {storage_error(path, exc)}") from exc

    def _read_range(self, path: Path, offset: int, length: int) -> bytes:
        """pread through a small per-thread cache of open files.

        Restore and check read many ranges of the same few objects; keeping them open
        saves an open, a seek and a close per range. Only ranged reads use the cache, and
        only immutable objects (named by their content) are read by range, so a cached
        file never shows stale bytes. The files close when evicted, or with their thread.
        """
        cache: OrderedDict[Path, io.FileIO] | None = getattr(self._open_files, "cache", None)
        if cache is None:
            cache = self._open_files.cache = OrderedDict()
        handle = cache.get(path)
        if handle is None:
            handle = cache[path] = io.FileIO(path, "rb")
            if len(cache) > OPEN_FILES_PER_THREAD:
                cache.popitem(last=False)[1].close()
        else:
            cache.move_to_end(path)
        fd = handle.fileno()
        parts = []
        while length > 0:
            block = os.pread(fd, length, offset)
            if not block:
                break
            parts.append(block)
            offset += len(block)
            length -= len(block)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = self._path(prefix.rstrip("/")) if prefix else self.root
        if not folder.is_dir():
            return
        for dirpath, _dirs, files in os.walk(folder):
            for filename in files:
                if filename.startswith("."):
                    continue  # temp files of an interrupted write
                full = Path(dirpath) / filename
                with contextlib.suppress(FileNotFoundError):
                    yield ObjectInfo(str(full.relative_to(self.root)), full.stat().st_size)

    def stat(self, name: str) -> ObjectInfo | None:
        try:
            return ObjectInfo(name, self._path(name).stat().st_size)
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"target {self.label}: {storage_error(path, exc)}") from exc
        fsync_dir(path.parent)

    def free_bytes(self) -> int | None:
        try:
            stats = os.statvfs(self.root)
        except OSError:
            return None
        return stats.f_bavail * stats.f_frsize

    def incomplete(self) -> builtins.list[str]:
        return sorted(
            str(p.relative_to(self.root)) for p in self.root.rglob(".*.tmp-*") if p.is_file()
        )
