"""file:// targets: one file per object, written temp -> fsync -> rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import NotFound, StorageError
from ..fsutil import fsync_dir, storage_error, write_atomic
from .base import ObjectInfo, Payload


class LocalStorage:
    def __init__(self, root: str | Path, *, label: str = "") -> None:
        self.root = Path(root)
        self.label = label or str(root)

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
            with open(path, "rb") as handle:
                if offset:
                    handle.seek(offset)
                return handle.read() if length is None else handle.read(length)
        except FileNotFoundError as exc:
            raise NotFound(f"target {self.label}: object {name} is missing") from exc
        except OSError as exc:
            raise StorageError(f"target {self.label}: {storage_error(path, exc)}") from exc

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

    def incomplete(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.root)) for p in self.root.rglob(".*.tmp-*") if p.is_file()
        )
