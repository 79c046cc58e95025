"""A ``mongodump --archive`` stream read back, checking everything as it goes: the magic, the
prelude, the framing, every document's size, every namespace's EOF and CRC (the format and
the mongo-tools source it follows: sources/mongodb/archive.py)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import bson
from bson.errors import BSONError
from bson.int64 import Int64

from .archive import (
    FORMAT_VERSION,
    MAGIC_BYTES,
    MAX_BSON_SIZE,
    MIN_BSON_SIZE,
    OPLOG_COLLECTION,
    OPLOG_DB,
    TERMINATOR,
    ArchiveError,
    data_collection,
    parse_server_version,
)
from .crc64 import crc64_update, signed64

_LEN = struct.Struct("<i")
_U64 = (1 << 64) - 1


@dataclass
class ParsedNamespace:
    """One namespace's data as read back: its documents, its EOF header's CRC, its segments."""

    db: str
    collection: str  # the data namespace (system.buckets.<name> for an old timeseries)
    documents: list[bytes] = field(default_factory=list)
    crc: int = 0  # unsigned, as checked against the documents
    segments: int = 0


@dataclass
class ParsedArchive:
    header: dict[str, Any]
    metadata: dict[tuple[str, str], dict[str, Any]]  # (db, collection) -> prelude entry
    namespaces: dict[tuple[str, str], ParsedNamespace]  # (db, data collection), as closed

    def documents(self, db: str, collection: str) -> list[bytes]:
        return self.namespaces[(db, collection)].documents


class Reads(Protocol):
    """What an archive is read from: a file, a gzip stream, a pipe (only ``read`` is used)."""

    def read(self, n: int = -1, /) -> bytes: ...


class _Reader:
    def __init__(self, inp: Reads) -> None:
        self.inp = inp
        self.offset = 0

    def exact(self, n: int, what: str) -> bytes:
        data = self.read_up_to(n)
        if len(data) != n:
            raise ArchiveError(
                f"archive truncated at byte {self.offset}: {what} needs {n} bytes, "
                f"{len(data)} remain"
            )
        return data

    def read_up_to(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            part = self.inp.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        self.offset += got
        return b"".join(parts)

    def document_or_terminator(self, what: str, *, eof_ok: bool = False) -> bytes | None:
        """A whole BSON document, ``None`` at a terminator, ``b""`` at a clean end (if ok)."""
        at = self.offset
        prefix = self.read_up_to(4)
        if not prefix and eof_ok:
            return b""
        if len(prefix) != 4:
            raise ArchiveError(f"archive truncated at byte {at}: expected {what}")
        if prefix == TERMINATOR:
            return None
        (size,) = _LEN.unpack(prefix)
        if size < MIN_BSON_SIZE or size > MAX_BSON_SIZE:
            raise ArchiveError(
                f"corrupt archive at byte {at}: {size} is neither a BSON length nor a terminator"
            )
        data = prefix + self.exact(size - 4, what)
        if data[-1] != 0:
            raise ArchiveError(f"corrupt archive at byte {at}: {what} does not end in a NUL byte")
        return data


def _decode(data: bytes, what: str, at: int) -> dict[str, Any]:
    try:
        return bson.decode(data)
    except (BSONError, ValueError) as exc:
        raise ArchiveError(
            f"corrupt archive at byte {at}: {what} is not valid BSON ({exc})"
        ) from exc


def _fields(doc: dict[str, Any], spec: dict[str, Callable[[Any], bool]], what: str) -> None:
    for key, ok in spec.items():
        if key not in doc or not ok(doc[key]):
            raise ArchiveError(f"corrupt archive: {what} has no proper {key!r} ({doc!r})")


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int32(v: Any) -> bool:
    return type(v) is int and -(1 << 31) <= v < 1 << 31


def _is_int(v: Any) -> bool:
    return type(v) in (int, Int64)


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _is_int64(v: Any) -> bool:
    return type(v) is Int64


@dataclass
class ArchiveItem:
    """One step of an archive's body, as ``ArchiveReader.items`` reads it: a document of a
    namespace (``document``), the start of one of its segments (``segment``), or its EOF
    (``eof``, its CRC checked: ``crc``)."""

    kind: str  # "segment", "document" or "eof"
    db: str
    collection: str  # the data namespace
    document: bytes = b""
    crc: int = 0


class ArchiveReader:
    """A ``mongodump --archive`` stream read once, front to back, checking as it goes.

    The prelude (magic, header, every namespace's metadata) is read when it is made;
    ``items()`` then streams the body. Nothing is held but the current document, so an
    archive of any size (and a gzip stream) can be read. Any problem raises
    ``ArchiveError`` naming it; a CRC is checked when its namespace's EOF comes.
    """

    def __init__(self, inp: Reads) -> None:
        self._r = r = _Reader(inp)
        magic = r.read_up_to(4)
        if magic != MAGIC_BYTES:
            raise ArchiveError("not a mongodump archive: the magic number 0x8199e26d is missing")
        at = r.offset
        raw = r.document_or_terminator("the archive header")
        if not raw:
            raise ArchiveError("corrupt archive: a terminator where the archive header should be")
        self.header = header = _decode(raw, "the archive header", at)
        _fields(
            header,
            {
                "concurrent_collections": _is_int32,
                "version": lambda v: v == FORMAT_VERSION,
                "server_version": _is_str,
                "tool_version": _is_str,
            },
            "the archive header",
        )
        try:
            self.version = parse_server_version(header["server_version"])
        except ValueError as exc:
            raise ArchiveError(f"corrupt archive: {exc}") from exc
        self.metadata: dict[tuple[str, str], dict[str, Any]] = {}  # (db, collection) -> entry
        self.expected: dict[tuple[str, str], tuple[str, str]] = {}  # data ns -> prelude key
        self._read_prelude()

    def _read_prelude(self) -> None:
        r = self._r
        while True:
            at = r.offset
            raw = r.document_or_terminator("collection metadata")
            if raw is None:
                return
            entry = _decode(raw, "collection metadata", at)
            _fields(
                entry,
                {
                    "db": _is_str,
                    "collection": lambda v: isinstance(v, str) and v != "",
                    "metadata": _is_str,
                    "size": _is_int,
                    "type": _is_str,
                },
                "a collection metadata entry",
            )
            key = (entry["db"], entry["collection"])
            if key in self.metadata:
                raise ArchiveError(f"corrupt archive: {key[0]}.{key[1]} is listed twice")
            self.metadata[key] = entry
            self.expected[(key[0], data_collection(key[1], entry["type"], self.version))] = key

    def items(self) -> Iterator[ArchiveItem]:
        """The body in archive order; ends after checking that every namespace had its EOF."""
        r = self._r
        open_: set[tuple[str, str]] = set()
        closed: set[tuple[str, str]] = set()
        crcs: dict[tuple[str, str], int] = {}
        oplog_seen = False
        while True:
            at = r.offset
            raw = r.document_or_terminator("a namespace header", eof_ok=True)
            if raw == b"":
                break
            if raw is None:
                raise ArchiveError(
                    f"corrupt archive at byte {at}: consecutive terminators / a headerless block"
                )
            head = _decode(raw, "a namespace header", at)
            _fields(
                head,
                {
                    "db": _is_str,
                    "collection": lambda v: isinstance(v, str) and v != "",
                    "EOF": _is_bool,
                    "CRC": _is_int64,
                },
                f"the namespace header at byte {at}",
            )
            key = (head["db"], head["collection"])
            name = f"{key[0]}.{key[1]}"
            if key not in self.expected:
                raise ArchiveError(f"corrupt archive: namespace {name} is not in the prelude")
            if key in closed:
                raise ArchiveError(f"corrupt archive at byte {at}: {name} continues after its EOF")
            if oplog_seen and key != (OPLOG_DB, OPLOG_COLLECTION):
                raise ArchiveError(
                    f"corrupt archive at byte {at}: {name} comes after the oplog (mongorestore "
                    "stops restoring collections at the oplog)"
                )
            oplog_seen = key == (OPLOG_DB, OPLOG_COLLECTION)
            if key not in open_:
                open_.add(key)
                crcs[key] = 0
            if head["EOF"]:
                want = head["CRC"] & _U64
                if crcs[key] != want:
                    raise ArchiveError(
                        f"corrupt archive: CRC mismatch for namespace {name}: the documents "
                        f"give {signed64(crcs[key])}, its EOF header says {signed64(want)}"
                    )
                open_.discard(key)
                closed.add(key)
                at = r.offset
                if r.document_or_terminator(f"the terminator after {name}'s EOF") is not None:
                    raise ArchiveError(
                        f"corrupt archive at byte {at}: data after {name}'s EOF header"
                    )
                yield ArchiveItem("eof", key[0], key[1], crc=want)
                continue
            yield ArchiveItem("segment", key[0], key[1])
            while True:
                raw = r.document_or_terminator(f"a document of {name}")
                if raw is None:
                    break
                crcs[key] = crc64_update(crcs[key], raw)
                yield ArchiveItem("document", key[0], key[1], raw)
        if open_:
            names = ", ".join(f"{db}.{c}" for db, c in open_)
            raise ArchiveError(f"corrupt archive: it ends before the EOF of {names}")
        missing = [f"{db}.{c}" for db, c in self.expected if (db, c) not in closed]
        if missing:
            raise ArchiveError(f"corrupt archive: it ends before {', '.join(missing)} appeared")


def read_archive(inp: Reads) -> ParsedArchive:
    """Read and check a whole archive: magic, prelude, framing, every CRC, every EOF.

    Raises ``ArchiveError`` naming the first problem. Documents are kept in memory (for
    tests and verification of small archives); ``ArchiveReader`` streams instead.
    """
    reader = ArchiveReader(inp)
    namespaces: dict[tuple[str, str], ParsedNamespace] = {}
    closed: dict[tuple[str, str], ParsedNamespace] = {}
    for item in reader.items():
        key = (item.db, item.collection)
        ns = namespaces.setdefault(key, ParsedNamespace(item.db, item.collection))
        if item.kind == "segment":
            ns.segments += 1
        elif item.kind == "document":
            ns.documents.append(item.document)
        else:
            ns.crc = item.crc
            closed[key] = ns
    return ParsedArchive(header=reader.header, metadata=reader.metadata, namespaces=closed)
