"""Browse snapshots without restoring them: list a directory, find paths, compare two trees.

Every listing read goes through ``walk.read_listing`` (``tree.decode_listing``):
an entry a hostile writer forged is reported with its path and left out, never followed,
exactly as a restore treats it (README, "How it keeps data safe"). A lookup descends one
listing per path component, so ``ls /a/b`` reads three trees, not the whole snapshot; a
``diff`` skips every directory whose subtree id is the same in both snapshots (content
addressing: same id, same tree), so comparing two nightly snapshots reads only what changed.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..repository.repo import Repository
from .tree import Node, shown
from .walk import Refuse, read_listing, walk_tree

ROOT_MODE = 0o755  # the snapshot root has no node of its own; shown as a plain directory


def root_node(tree_id: bytes) -> Node:
    """A node standing for the snapshot's root directory (no tree describes it)."""
    return {"name": "/", "type": "dir", "mode": ROOT_MODE, "uid": 0, "gid": 0, "mtime_ns": 0,
            "subtree": tree_id}  # fmt: skip


def normalized(path: str) -> str:
    """``path`` as an absolute snapshot path (``/``-rooted, no ``.``/``..``/double slashes):
    ``..`` cannot climb above the root, as in the snapshot itself."""
    joined = posixpath.normpath("/" + path.strip())
    return "/" + joined.lstrip("/")


def lookup(repo: Repository, tree_id: bytes, path: str, on_refused: Refuse) -> Node | None:
    """The node at ``path`` of the tree ``tree_id`` (the root node for ``/``), or None when
    no valid entry is there."""
    node = root_node(tree_id)
    where = ""
    for part in normalized(path).strip("/").split("/"):
        if not part:
            continue
        if node["type"] != "dir":
            return None
        found = None
        for child_path, child in read_listing(repo, node["subtree"], where, on_refused):
            if child["name"] == part:
                found = child
                where = child_path
        if found is None:
            return None
        node = found
    return node


def children(
    repo: Repository, node: Node, path: str, on_refused: Refuse
) -> Iterator[tuple[str, Node]]:
    """The entries of the directory ``node`` at ``path``, by name."""
    prefix = "" if normalized(path) == "/" else normalized(path)
    yield from read_listing(repo, node["subtree"], prefix, on_refused)


def list_path(
    repo: Repository, tree_id: bytes, path: str, *, recursive: bool, on_refused: Refuse
) -> list[tuple[str, Node]]:
    """What ``ls`` shows: a directory's entries (all below it when ``recursive``), or the
    file or symlink at ``path`` itself. ``UsageError`` when nothing is there."""
    path = normalized(path)
    node = lookup(repo, tree_id, path, on_refused)
    if node is None:
        raise UsageError(f"path {shown(path)} is not in the snapshot")
    if node["type"] != "dir":
        return [(path, node)]
    prefix = "" if path == "/" else path
    if recursive:
        return list(walk_tree(repo, node["subtree"], prefix, on_refused))
    return list(children(repo, node, path, on_refused))


def matches(pattern: str, path: str) -> bool:
    """A glob against the whole path when it holds a ``/`` (``/srv/*/logo.png``), else
    against the last component (``*.png``), as ``find -name`` does."""
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, normalized(pattern))
    return fnmatch.fnmatchcase(posixpath.basename(path), pattern)


def find(
    repo: Repository, tree_id: bytes, pattern: str, on_refused: Refuse
) -> Iterator[tuple[str, Node]]:
    for path, node in walk_tree(repo, tree_id, on_refused=on_refused):
        if matches(pattern, path):
            yield path, node


@dataclass
class Change:
    """One path that differs between two snapshots: added, removed or changed (``what``:
    content, type, or metadata — mode, owner, mtime, symlink target)."""

    path: str
    change: str  # added, removed, changed
    type: str
    what: str = ""
    size_a: int | None = None
    size_b: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "change": self.change,
            "type": self.type,
            "what": self.what,
            "size_a": self.size_a,
            "size_b": self.size_b,
        }


def _size(node: Node) -> int | None:
    return int(node["size"]) if node["type"] == "file" else None


def _difference(a: Node, b: Node) -> str:
    """Why two nodes at one path differ ('' when they do not)."""
    if a["type"] != b["type"]:
        return "type"
    if a["type"] == "file" and (a["content"] != b["content"] or a["size"] != b["size"]):
        return "content"
    if a["type"] == "symlink" and a["target"] != b["target"]:
        return "target"
    if any(a[k] != b[k] for k in ("mode", "uid", "gid")):
        return "metadata"
    if a["type"] != "dir" and a["mtime_ns"] != b["mtime_ns"]:
        return "metadata"  # a directory's mtime changes with any entry: listed as those
    return ""


def diff(repo: Repository, tree_a: bytes, tree_b: bytes, on_refused: Refuse) -> list[Change]:
    """What changed from the tree ``tree_a`` to ``tree_b``, by path, parents first. A
    directory added or removed is listed with everything below it."""
    changes: list[Change] = []
    stack: list[tuple[str, bytes, bytes]] = [("", tree_a, tree_b)]
    while stack:
        prefix, a_id, b_id = stack.pop()
        if a_id == b_id:
            continue
        a = dict(read_listing(repo, a_id, prefix, on_refused))
        b = dict(read_listing(repo, b_id, prefix, on_refused))
        nested: list[tuple[str, bytes, bytes]] = []
        for path in sorted(a.keys() | b.keys()):
            old, new = a.get(path), b.get(path)
            if new is None:
                assert old is not None
                changes += _whole(repo, path, old, "removed", on_refused)
            elif old is None:
                changes += _whole(repo, path, new, "added", on_refused)
            else:
                what = _difference(old, new)
                if what:
                    changes.append(
                        Change(path, "changed", new["type"], what, _size(old), _size(new))
                    )
                if what != "type" and new["type"] == "dir":
                    nested.append((path, old["subtree"], new["subtree"]))
                elif what == "type":
                    if old["type"] == "dir":
                        changes += _whole(repo, path, old, "removed", on_refused)[1:]
                    if new["type"] == "dir":
                        changes += _whole(repo, path, new, "added", on_refused)[1:]
        stack.extend(reversed(nested))
    return sorted(changes, key=lambda c: c.path)


def _whole(repo: Repository, path: str, node: Node, change: str, refuse: Refuse) -> list[Change]:
    """``node`` and, for a directory, everything below it, as added or removed."""
    sizes = (None, _size(node)) if change == "added" else (_size(node), None)
    out = [Change(path, change, node["type"], "", *sizes)]
    if node["type"] == "dir":
        for below, child in walk_tree(repo, node["subtree"], path, refuse):
            sizes = (None, _size(child)) if change == "added" else (_size(child), None)
            out.append(Change(below, change, child["type"], "", *sizes))
    return out
