"""Trees: one blob per directory, listing its entries by name.

A node is a dict: ``name``, ``type`` (dir, file, symlink), ``mode``, ``uid``, ``gid``,
``mtime_ns``; files add ``size``, ``content`` (blob ids in order: keyed hashes of the
bytes read at backup), ``digest`` (``content_digest`` of those ids, recorded when the
tree is stored; a drill re-chunks a restored file and compares both) and, for the second
and later names of a hardlinked file, ``hardlink`` (the first name's path); directories
add ``subtree``; symlinks add ``target``. Names that are not UTF-8 round-trip through
surrogate escapes.

A listing read back is checked here and nowhere else (``decode_listing``): whoever holds
a writer key can store any listing, so every entry must match the schema below, and its
name must be one path component a directory can hold (not empty, not ``.`` or ``..``, no
``/``, no NUL, at most 255 bytes) and appear once in its directory. An entry that does
not is a ``BadEntry`` (its name as shown, and why), never a node: the callers report it
by path and go on with the rest (README, "How it keeps data safe").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import blake3
import msgspec

from ..errors import EmberkeepError
from ..repository import layout
from .writer import BlobWriter

Node = dict[str, Any]

NAME_MAX = 255  # bytes in one path component (Linux, and every file system we restore to)
LINK_MAX = 4095  # bytes in a symlink's target (PATH_MAX less its NUL)

_BlobId = Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{64}\Z")]
_Digest = Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{32}\Z")]
_Mode = Annotated[int, msgspec.Meta(ge=0, le=0o7777)]
_Owner = Annotated[int, msgspec.Meta(ge=0, lt=1 << 32)]
_Nanoseconds = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
_Size = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]


class _Entry(msgspec.Struct):
    name: str  # checked by _name_problem, for a message that says what is wrong with it
    mode: _Mode
    uid: _Owner
    gid: _Owner
    mtime_ns: _Nanoseconds


class _Dir(_Entry):
    subtree: _BlobId


class _File(_Entry):
    size: _Size
    content: list[_BlobId]
    digest: _Digest | None = None
    hardlink: str | None = None
    changed_while_read: bool = False


class _Symlink(_Entry):
    target: str


# by ``type``: dispatching here is ten times faster than a tagged union of the three
_SCHEMA: dict[str, type[_Entry]] = {"dir": _Dir, "file": _File, "symlink": _Symlink}


@dataclass(frozen=True)
class BadEntry:
    """An entry of a listing that is not restored: its name as shown, and why."""

    name: str
    reason: str


@dataclass
class Listing:
    nodes: list[Node]
    bad: list[BadEntry]


class BadTree(ValueError):
    """A tree blob that is not a directory listing at all."""


def shown(text: str) -> str:
    """``text`` as it may be printed: escaped when it holds control characters or bytes that
    are not UTF-8 (a hostile name must not reach the terminal raw)."""
    return text if text.isprintable() else repr(text)[1:-1]


def content_digest(ids: list[bytes]) -> str:
    """A file's digest as stored in its node: BLAKE3 of its (keyed) chunk ids, in order."""
    return blake3.blake3(b"".join(ids)).hexdigest(16)


DIGEST_DIFFERS = (
    "content digest differs from the one recorded at backup time: the snapshot's tree does "
    "not describe what was read (damaged, or written by a faulty or hostile writer)"
)


def content_problem(node: Node, blob_sizes: Iterable[int] | None = None) -> str | None:
    """Why a file node's content cannot be the file it describes, or None: its ids must
    give the digest recorded at backup and its blobs (``blob_sizes``, as the index lists
    them, when given) must add up to its size. Each blob is re-hashed when it is read, so a
    file whose blobs pass this and their own checks is exactly what the backup read."""
    digest = node.get("digest")
    if digest is not None and content_digest(node["content"]) != digest:
        return DIGEST_DIFFERS
    if blob_sizes is not None:
        total = sum(blob_sizes)
        if total != node["size"]:
            return content_size_differs(total, node)
    return None


def content_size_differs(total: int, node: Node) -> str:
    return f"its content holds {total} bytes, the snapshot says {node['size']}"


def encode_tree(nodes: list[Node]) -> bytes:
    out = []
    for node in sorted(nodes, key=lambda n: n["name"]):
        node = dict(node)
        if "content" in node:
            node["content"] = [blob_id.hex() for blob_id in node["content"]]
        if "subtree" in node:
            node["subtree"] = node["subtree"].hex()
        out.append(node)
    return json.dumps({"nodes": out}, separators=(",", ":")).encode()


def decode_listing(data: bytes) -> Listing:
    """A tree blob's entries, each checked (module docstring); ``BadTree`` when it is not a
    listing at all."""
    try:
        entries = json.loads(data)["nodes"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BadTree(f"not a directory listing ({type(exc).__name__})") from exc
    if not isinstance(entries, list):
        raise BadTree("not a directory listing (its nodes are not a list)")
    listing = Listing([], [])
    for number, entry in enumerate(entries):
        problem = _problem(entry)
        if problem is None:
            listing.nodes.append(entry)
        else:
            listing.bad.append(BadEntry(_shown_name(entry, number), problem))
    counts: dict[str, int] = {}
    for node in listing.nodes:
        counts[node["name"]] = counts.get(node["name"], 0) + 1
    if any(n > 1 for n in counts.values()):
        for node in listing.nodes:
            if counts[node["name"]] > 1:
                reason = f"the name appears {counts[node['name']]} times in its directory"
                listing.bad.append(BadEntry(shown(node["name"]), reason))
        listing.nodes = [n for n in listing.nodes if counts[n["name"]] == 1]
    for node in listing.nodes:
        if "content" in node:
            node["content"] = [bytes.fromhex(h) for h in node["content"]]
        if "subtree" in node:
            node["subtree"] = bytes.fromhex(node["subtree"])
    return listing


def decode_tree(data: bytes) -> list[Node]:
    """A listing that must be whole: ``BadTree`` naming the first bad entry, if any."""
    listing = decode_listing(data)
    if listing.bad:
        raise BadTree(f"entry {listing.bad[0].name}: {listing.bad[0].reason}")
    return listing.nodes


def _problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"malformed tree entry: not an object but {type(entry).__name__}"
    kind = entry.get("type")
    schema = _SCHEMA.get(kind) if isinstance(kind, str) else None
    if schema is None:
        return f"malformed tree entry: unknown type {kind!r} (not dir, file or symlink)"
    try:
        msgspec.convert(entry, schema)
    except msgspec.ValidationError as exc:
        return f"malformed tree entry: {exc}"
    problem = _name_problem(entry["name"])
    if problem:
        return problem
    link = entry.get("hardlink")
    if link is not None and (
        not link.startswith("/") or any(map(_name_problem, link[1:].split("/")))
    ):
        return f"its hardlink {link!r} is not a path within the snapshot"
    target = entry.get("target")
    if target is not None:
        if not target or "\x00" in target:
            return "its symlink target is empty or holds a NUL byte"
        try:
            if len(os.fsencode(target)) > LINK_MAX:
                return "its symlink target is longer than a symlink holds"
        except UnicodeError:
            return "its symlink target holds characters no file system can store"
    return None


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not one path component a directory can hold, or None."""
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r} would leave its directory"
    if "/" in name:
        return "a name holding '/' (more than one path component)"
    if "\x00" in name:
        return "a name holding a NUL byte"
    try:
        size = len(os.fsencode(name))
    except UnicodeError:
        return "a name holding characters no file system can store"
    if size > NAME_MAX:
        return f"a name of {size} bytes, more than a directory entry holds ({NAME_MAX})"
    return None


def _shown_name(entry: Any, number: int) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name:
        return shown(name) if "/" not in name and name not in (".", "..") else repr(name)
    return f"<entry {number}: {'no name' if name is None else repr(name)}>"


class TreeBuilder:
    """Builds trees bottom-up from a depth-first walk: enter, add*, leave."""

    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer
        self.referenced: set[bytes] = set()
        self._stack: list[tuple[Node | None, list[Node]]] = [(None, [])]

    def enter(self, node: Node) -> None:
        self._stack.append((node, []))

    def add(self, node: Node) -> None:
        self._stack[-1][1].append(node)

    def leave(self) -> None:
        where = self._path()
        node, children = self._stack.pop()
        assert node is not None, "leave() without enter()"
        node["subtree"] = self._store(children, where)
        self._stack[-1][1].append(node)

    def finish(self) -> bytes:
        """Store the root tree; returns its id."""
        assert len(self._stack) == 1, "walk ended inside a directory"
        return self._store(self._stack.pop()[1], "/")

    def _path(self) -> str:
        return "/" + "/".join(str(node["name"]) for node, _ in self._stack if node is not None)

    def _store(self, children: list[Node], where: str) -> bytes:
        self.writer.drain()  # every child's content ids are in place
        for child in children:
            if "content" in child:
                child.setdefault("digest", content_digest(child["content"]))
                self.referenced.update(child["content"])
        data = encode_tree(children)
        if len(data) > layout.TREE_MAX:
            raise EmberkeepError(
                f"directory {shown(where)}: its listing of {len(children)} entries takes "
                f"{len(data)} bytes, more than a tree may hold ({layout.TREE_MAX}, what a "
                "restore accepts); split it into subdirectories or exclude part of it"
            )
        tree_id = self.writer.store_tree(data)
        self.referenced.add(tree_id)
        return tree_id
