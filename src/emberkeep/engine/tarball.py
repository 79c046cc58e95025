"""Any snapshot as a POSIX (pax) tar stream: names, modes, owners, times, symlinks and
hardlinks as stored, file content streamed blob by blob (memory stays flat)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from typing import BinaryIO

from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from .fetch import read_in_order
from .restore import walk_tree
from .tree import Node

_TYPES = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}


class _BlobReader:
    """``read(n)`` over a file's blobs, for ``tarfile.addfile``."""

    def __init__(self, repo: Repository, ids: list[bytes]) -> None:
        self.blobs = read_in_order(repo, ids)
        self.buf = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        want = n if n >= 0 else 1 << 62
        while want > 0:
            if not self.buf:
                blob = next(self.blobs, None)
                if blob is None:
                    break
                self.buf = memoryview(blob)
            part = self.buf[:want]
            parts.append(bytes(part))
            self.buf = self.buf[len(part) :]
            want -= len(part)
        return b"".join(parts)


def write_tar(
    repo: Repository,
    snapshot: Snapshot,
    out: BinaryIO,
    *,
    on_file: Callable[[str, int], None] = lambda path, size: None,
) -> tuple[int, int]:
    """Stream the snapshot's tree into ``out``; returns (entries, content bytes)."""
    repo.require_identity("export")
    entries = size = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, node in walk_tree(repo, snapshot.tree):
            info = _info(path, node)
            if info.type == tarfile.REGTYPE:
                tar.addfile(info, _BlobReader(repo, node["content"]))  # type: ignore[arg-type]
                size += info.size
                on_file(path, info.size)
            else:
                tar.addfile(info)
            entries += 1
    return entries, size


def _info(path: str, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = _TYPES[node["type"]]
    info.mode = int(node.get("mode", 0o644))
    info.uid, info.gid = int(node.get("uid", 0)), int(node.get("gid", 0))
    info.mtime = int(node.get("mtime_ns", 0)) / 1e9
    if node["type"] == "symlink":
        info.linkname = node["target"]
    elif node.get("hardlink"):
        info.type = tarfile.LNKTYPE
        info.linkname = str(node["hardlink"]).lstrip("/")
    elif node["type"] == "file":
        info.size = int(node["size"])
    return info
