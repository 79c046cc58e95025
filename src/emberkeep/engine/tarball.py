"""Any snapshot as a POSIX (pax) tar stream: names, modes, owners, times, symlinks and
hardlinks as stored, file content streamed blob by blob (memory stays flat).

A tar is extracted by other tools, which trust its member names: so only entries a
restore would accept go in (``walk.walk_tree``: one path component per name, each once
per directory, so no member lies below a symlink member); a hardlink member names only a
file written earlier in the same tar (else the file's own content is written); and a
file's content is checked against its node before its header is written
(``walk.file_problem``). A refused entry is left out and returned by path and reason.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from typing import BinaryIO

from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from .fetch import read_in_order
from .tree import Node, shown
from .walk import file_problem, walk_tree

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
) -> tuple[int, int, list[dict[str, str]]]:
    """Stream the snapshot's tree into ``out``; returns (entries, content bytes, refused)."""
    repo.require_identity("export")
    entries = size = 0
    refused: list[dict[str, str]] = []
    written: set[str] = set()  # regular files in the tar so far, for hardlinks

    def refuse(path: str, reason: str) -> None:
        refused.append({"path": shown(path), "reason": reason})

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, node in walk_tree(repo, snapshot.tree, on_refused=refuse):
            linked = node.get("hardlink") in written
            if node["type"] == "file" and not linked:
                problem = file_problem(repo, node)
                if problem:
                    refuse(path, f"{problem}; left out")
                    continue
            info = _info(path, node, linked)
            if info.type == tarfile.REGTYPE:
                tar.addfile(info, _BlobReader(repo, node["content"]))
                written.add(path)
                size += info.size
                on_file(path, info.size)
            else:
                tar.addfile(info)
            entries += 1
    return entries, size, refused


def _info(path: str, node: Node, linked: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = _TYPES[node["type"]]
    info.mode = node["mode"]
    info.uid, info.gid = node["uid"], node["gid"]
    info.mtime = node["mtime_ns"] / 1e9
    if node["type"] == "symlink":
        info.linkname = node["target"]
    elif linked:
        info.type = tarfile.LNKTYPE
        info.linkname = node["hardlink"].lstrip("/")
    elif node["type"] == "file":
        info.size = node["size"]
    return info
