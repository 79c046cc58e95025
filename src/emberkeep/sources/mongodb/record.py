"""``emberkeep-mongodb.json``: what a dump saw, stored at the root of its snapshot.

Per collection: document count, bytes, and a content digest. The digest is the sum,
modulo 2**128, of each raw BSON document's unkeyed BLAKE3 hash (16 bytes): it does
not depend on the order the server returned the documents in, so the dump reads in
natural order (no sort on the server) and a drill can read a restored collection back
in any order and compare. Two collections have the same digest only if they hold the
same multiset of byte-identical documents.

Plus the oplog window (start, end, entries), whether the snapshot is point-in-time
(and why not), the server's version and the collections dropped while they were read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import blake3
import msgspec

RECORD = "emberkeep-mongodb.json"
OPLOG = "oplog.bson"
FORMAT = 1
_MOD = 1 << 128
_LEN = struct.Struct("<i")


class DocDigest:
    """Counts, sizes and digests raw BSON documents fed in batches (whole documents)."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self._sum = 0

    def add(self, batch: bytes) -> None:
        view = memoryview(batch)
        pos, end, total = 0, len(batch), self._sum
        unpack, hasher = _LEN.unpack_from, blake3.blake3
        while pos < end:
            (size,) = unpack(view, pos)
            total += int.from_bytes(hasher(view[pos : pos + size]).digest(16), "little")
            pos += size
            self.count += 1
        self._sum = total % _MOD
        self.bytes += end

    @property
    def hexdigest(self) -> str:
        return self._sum.to_bytes(16, "little").hex()


def _document_ends(view: memoryview) -> Iterator[int]:
    """Where each whole BSON document at the start of ``view`` ends."""
    pos, end = 0, len(view)
    while end - pos >= 4:
        (size,) = _LEN.unpack_from(view, pos)
        if size < 5:
            raise ValueError(f"a BSON document of length {size} at byte {pos}")
        if end - pos < size:
            return
        pos += size
        yield pos


def whole_documents_length(data: bytes | memoryview) -> int:
    """How many bytes at the start of ``data`` are whole BSON documents (none copied)."""
    pos = 0
    for pos in _document_ends(memoryview(data)):  # noqa: B007 - the last one is the answer
        pass
    return pos


def split_documents(data: bytes | memoryview) -> tuple[list[bytes], int]:
    """Whole BSON documents at the start of ``data``, and where the incomplete rest begins."""
    view = memoryview(data)
    docs, start = [], 0
    for end in _document_ends(view):
        docs.append(bytes(view[start:end]))
        start = end
    return docs, start


class CollectionRecord(msgspec.Struct, kw_only=True):
    db: str
    name: str
    type: str
    count: int = 0
    bytes: int = 0
    digest: str = ""
    dropped_during_dump: bool = False


class OplogWindow(msgspec.Struct, kw_only=True):
    start: dict[str, int] | None = None
    end: dict[str, int] | None = None
    entries: int = 0


class DumpRecord(msgspec.Struct, kw_only=True):
    format: int = FORMAT
    server_version: str = ""
    databases: list[str] = []
    collections: list[CollectionRecord] = []
    point_in_time: bool = False
    not_point_in_time_because: str | None = None
    oplog: OplogWindow = msgspec.field(default_factory=OplogWindow)
    consistent_at: str | None = None  # ISO 8601 of the window's end
    users_and_roles: str = "not dumped"  # "dumped", or why not (see ``users``)
    users: int = 0
    roles: int = 0
    imported_from: dict[str, str] | None = None  # {path, format} of an `emberkeep import`

    def to_bytes(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=1) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> DumpRecord:
        return msgspec.json.decode(data, type=cls)

    def header_extra(self) -> dict[str, Any]:
        """What the snapshot header shows of the dump (``extra.mongodb``)."""
        return {
            "point_in_time": self.point_in_time,
            "consistent_at": self.consistent_at,
            "oplog_end": self.oplog.end,
            "databases": self.databases,
            "collections": sum(1 for c in self.collections if c.type != "view"),
            "documents": sum(c.count for c in self.collections),
            "bytes": sum(c.bytes for c in self.collections),  # the documents' BSON, no oplog
            **({"imported_from": self.imported_from} if self.imported_from else {}),
        }

    def collection(self, db: str, name: str) -> CollectionRecord | None:
        return next((c for c in self.collections if (c.db, c.name) == (db, name)), None)
