"""Verify a restored tree against its snapshot: every entry there, nothing extra, each
file's bytes equal to what the backup read.

A restored file is chunked again with the repository's chunker and its chunk ids
computed with the MAC key: the ids must equal the node's ``content`` (else the restore
wrote something else than the blobs) and their ``content_digest`` must equal the node's
``digest``, recorded when the backup read the file (else the tree itself disagrees with
what was read: a damaged or tampered snapshot). Metadata compared: type, mode, mtime,
symlink target, size; owners too when running as root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import crypto
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from .chunker import Chunker
from .tree import DIGEST_DIFFERS, Node, content_digest
from .walk import walk_tree


@dataclass
class Difference:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class FilesVerification:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def verify_tree(
    repo: Repository,
    snapshot: Snapshot,
    root: Path,
    *,
    skip: Callable[[str], bool] = lambda path: False,
) -> FilesVerification:
    """Compare ``root`` (where the snapshot was restored) with the snapshot's tree."""
    result = FilesVerification()
    writer_key = repo.key_of_snapshot(snapshot.id)  # its generation's (writerchain.py)
    chunker = Chunker(writer_key.chunker_seed)
    mac = writer_key.mac_key
    as_root = os.geteuid() == 0
    expected: set[str] = set()

    def refused(path: str, reason: str) -> None:
        if not skip(path):
            result.differences.append(Difference(path, f"not restorable: {reason}"))

    for path, node in walk_tree(repo, snapshot.tree, on_refused=refused):
        if skip(path):
            continue
        expected.add(path)
        result.entries += 1
        problem = _check_entry(root / path.lstrip("/"), node, chunker, mac, as_root)
        if problem:
            result.differences.append(Difference(path, problem))
        elif node["type"] == "file":
            result.files += 1
            result.bytes += int(node.get("size", 0))
    for extra in _extra_entries(root, expected, skip):
        result.differences.append(Difference(extra, "present after restore, not in the snapshot"))
    return result


def _check_entry(
    target: Path, node: Node, chunker: Chunker, mac: bytes, as_root: bool
) -> str | None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return "missing after restore"
    kind = node["type"]
    want = {"dir": stat.S_ISDIR, "file": stat.S_ISREG, "symlink": stat.S_ISLNK}[kind]
    if not want(st.st_mode):
        return f"is not a {kind} after restore"
    if kind == "symlink":
        got = os.readlink(target)
        return None if got == node["target"] else f"links to {got!r}, not {node['target']!r}"
    if stat.S_IMODE(st.st_mode) != node["mode"]:
        return f"mode {stat.S_IMODE(st.st_mode):o}, snapshot says {node['mode']:o}"
    if as_root and (st.st_uid, st.st_gid) != (node["uid"], node["gid"]):
        return f"owner {st.st_uid}:{st.st_gid}, snapshot says {node['uid']}:{node['gid']}"
    if kind == "dir":
        return None
    if st.st_mtime_ns != node["mtime_ns"]:
        return f"mtime {st.st_mtime_ns}, snapshot says {node['mtime_ns']}"
    if st.st_size != node["size"]:
        return f"{st.st_size} bytes, snapshot says {node['size']}"
    return _check_content(target, node, chunker, mac)


def _check_content(target: Path, node: Node, chunker: Chunker, mac: bytes) -> str | None:
    with open(target, "rb", buffering=0) as handle:
        ids = [crypto.blob_id(mac, chunk) for chunk in chunker.chunks(handle)]
    if ids != node["content"]:
        return "content differs from the snapshot's blobs (the restore wrote other bytes)"
    digest = node.get("digest")
    if digest is not None and content_digest(ids) != digest:
        return DIGEST_DIFFERS
    return None


def _extra_entries(root: Path, expected: set[str], skip: Callable[[str], bool]) -> list[str]:
    extra = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = "/" + str((Path(dirpath) / name).relative_to(root))
            if path not in expected and not skip(path):
                extra.append(path)
    return sorted(extra)
