"""Trees: one blob per directory, listing its entries by name.

A node is a dict: ``name``, ``type`` (dir, file, symlink), ``mode``, ``uid``, ``gid``,
``mtime_ns``; files add ``size``, ``content`` (blob ids in order: keyed hashes of the
bytes read at backup), ``digest`` (``content_digest`` of those ids, recorded when the
tree is stored; a drill re-chunks a restored file and compares both) and, for the second
and later names of a hardlinked file, ``hardlink`` (the first name's path); directories
add ``subtree``; symlinks add ``target``. Names that are not UTF-8 round-trip through
surrogate escapes.
"""

from __future__ import annotations

import json
from typing import Any

import blake3

from .writer import BlobWriter

Node = dict[str, Any]


def content_digest(ids: list[bytes]) -> str:
    """A file's digest as stored in its node: BLAKE3 of its (keyed) chunk ids, in order."""
    return blake3.blake3(b"".join(ids)).hexdigest(16)


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


def decode_tree(data: bytes) -> list[Node]:
    nodes = json.loads(data)["nodes"]
    for node in nodes:
        if "content" in node:
            node["content"] = [bytes.fromhex(h) for h in node["content"]]
        if "subtree" in node:
            node["subtree"] = bytes.fromhex(node["subtree"])
    return nodes


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
        node, children = self._stack.pop()
        assert node is not None, "leave() without enter()"
        node["subtree"] = self._store(children)
        self._stack[-1][1].append(node)

    def finish(self) -> bytes:
        """Store the root tree; returns its id."""
        assert len(self._stack) == 1, "walk ended inside a directory"
        return self._store(self._stack.pop()[1])

    def _store(self, children: list[Node]) -> bytes:
        self.writer.drain()  # every child's content ids are in place
        for child in children:
            if "content" in child:
                child.setdefault("digest", content_digest(child["content"]))
                self.referenced.update(child["content"])
        tree_id = self.writer.store_tree(encode_tree(children))
        self.referenced.add(tree_id)
        return tree_id
