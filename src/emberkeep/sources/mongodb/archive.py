"""The ``mongodump --archive`` format, and a streaming writer of it.

The reader, which checks everything: archive_read.py; the CRC: crc64.py.

The writer produces what mongo-tools' ``mongodump --archive`` produces, so the stock
``mongorestore --archive=FILE`` restores it. The stock tools cannot be run here, so the format
is taken from their source (github.com/mongodb/mongo-tools), which is what is cited below:

- ``common/archive/spec.md``: the grammar of the format.
- ``common/archive/archive.go``: ``MagicNumber = 0x8199e26d``, the terminator ``0xffffffff``,
  and the three BSON structs ``Header``, ``CollectionMetadata`` and ``NamespaceHeader``.
- ``common/archive/prelude.go``: ``NewPrelude`` and ``Prelude.Write``: magic, header, one
  metadata document per intent (the oplog included), terminator.
- ``common/archive/multiplexer.go``: ``formatBody`` / ``formatEOF`` / ``MuxIn``: a namespace
  header opens a segment, documents follow, a terminator closes it; at the end an EOF header
  carrying ``int64(crc64.ECMA of every document byte of the namespace)`` and a terminator.
  ``MuxIn`` buffers up to ``db.MaxBSONSize`` (16 MiB) before handing documents over, and
  ``MuxIn.Close`` always hands over its buffer, even empty: so an empty collection (or a view)
  is one segment holding no document, then its EOF.
- ``common/archive/parser.go``: the reader takes one document at a time, each 5 bytes to
  ``db.MaxBSONSize`` long and ending in a NUL; block sizes do not matter to it.
- ``common/archive/demultiplexer.go``: ``HeaderBSON`` (a namespace may have many segments; no
  document may follow an EOF header; the CRC is compared as ``int64``), ``End`` (every
  namespace of the prelude must have had its EOF), ``Prioritizer.Get`` (once the oplog's
  namespace shows up the collection restores stop: the oplog must come last).
- ``mongodump/prepare.go``: ``CreateOplogIntents``: the oplog is the intent ``{DB: "", C:
  "oplog"}``, with no metadata; ``NewIntentFromOptions``: ``Type`` is listCollections' type.
- ``mongodump/mongodump.go``: the prelude is written after the oplog intent is created (so it
  lists the oplog), the oplog is dumped after every collection; views are opened and closed
  without data ("restore of views from archives require an empty collection as the trigger").
- ``common/intents/intent.go`` ``DataCollection`` and ``prelude.go`` ``ReadDir``: a
  timeseries collection's data goes under ``system.buckets.<name>`` below server 8.3.0.
- ``common/db/version.go`` ``StrToVersion``: mongorestore refuses an archive whose
  ``server_version`` is not ``X.Y.Z`` (a ``-...`` or ``+...`` suffix is dropped).
- mongo-go-driver ``bson`` ``intEncodeValue``: a Go ``int`` (``size``) is written as int32
  when it fits, an ``int64`` (``CRC``) always as int64, an ``int32`` as int32.

The archive, field by field (every integer little-endian)::

    magic        6d e2 99 81                          uint32 0x8199e26d
    header       {concurrent_collections: int32 1,    one at a time is how this writer writes
                  version: "0.1", server_version: string, tool_version: string}
    metadata     {db: string, collection: string,     one per namespace, in the order written;
                  metadata: string, size: int32 0,    metadata is the metadata.json text;
                  type: string}                       size 0 as mongodump writes it
    ...          (the oplog's: db "", collection "oplog", metadata "", size 0, type "")
    terminator   ff ff ff ff
    then each namespace in turn, the oplog last:
    segment      {db, collection, EOF: false, CRC: int64 0}  document*  ff ff ff ff
    ...          (segments of at most ``segment_bytes`` of documents; always one at least)
    eof          {db, collection, EOF: true, CRC: int64 crc}  ff ff ff ff
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

import bson
from bson.int64 import Int64

from ...errors import EmberkeepError
from .crc64 import crc64_update, signed64

MAGIC = 0x8199E26D
MAGIC_BYTES = struct.pack("<I", MAGIC)  # 6d e2 99 81
TERMINATOR = b"\xff\xff\xff\xff"
FORMAT_VERSION = "0.1"
MAX_BSON_SIZE = 16 * 1024 * 1024  # mongo-tools common/db MaxBSONSize: the reader's limit
MIN_BSON_SIZE = 5
SEGMENT_BYTES = MAX_BSON_SIZE  # what a MuxIn buffers before handing documents to the mux
CONCURRENT_COLLECTIONS = 1  # namespaces are written one after the other, never interleaved
KINDS = frozenset({"collection", "view", "timeseries"})
OPLOG_DB, OPLOG_COLLECTION = "", "oplog"
TIMESERIES_BUCKETS = "system.buckets."
VIEWLESS_TIMESERIES = (8, 3, 0)  # from this server version on, no system.buckets namespace

_LEN = struct.Struct("<i")


class ArchiveError(EmberkeepError):
    """An archive (or the documents given for one) is malformed or damaged."""


# --- versions ---------------------------------------------------------------------------------

_VERSION_PART = re.compile(r"[+-]?[0-9]+")


def parse_server_version(text: str) -> tuple[int, int, int]:
    """As mongo-tools' ``db.StrToVersion``, which mongorestore applies to ``server_version``."""
    core = text.split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".", 2)
    if len(parts) != 3 or not all(_VERSION_PART.fullmatch(p) for p in parts):
        raise ValueError(
            f"server version {text!r} is not of the form X.Y.Z; mongorestore would refuse "
            "an archive carrying it"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def data_collection(collection: str, kind: str, server_version: tuple[int, int, int]) -> str:
    """The namespace a collection's documents go under (``intents.Intent.DataCollection``)."""
    if kind == "timeseries" and server_version < VIEWLESS_TIMESERIES:
        return TIMESERIES_BUCKETS + collection
    return collection


# --- writer -------------------------------------------------------------------------------------


@dataclass
class ArchiveCollection:
    """One namespace of an archive.

    ``documents()`` yields byte strings of one or more whole, concatenated BSON documents
    (``find_raw_batches`` batches do); it is called once, when the namespace's turn comes.
    A view has no documents; a timeseries collection's are its buckets.
    """

    db: str
    collection: str
    metadata_json: str
    documents: Callable[[], Iterable[bytes]]
    kind: str = "collection"


@dataclass
class _Namespace:
    db: str
    collection: str  # as listed in the prelude
    data: str  # as named in the namespace headers
    kind: str  # the prelude's type ("" for the oplog)
    metadata_json: str
    documents: Callable[[], Iterable[bytes]]


def write_archive(
    out: BinaryIO,
    collections: list[ArchiveCollection],
    *,
    server_version: str,
    tool_version: str = "emberkeep",
    oplog: Callable[[], Iterable[bytes]] | None = None,
    segment_bytes: int = SEGMENT_BYTES,
) -> None:
    """Write a whole archive to ``out``: the prelude, then each namespace in turn, the oplog
    last. Documents stream through one ``documents()`` item at a time; nothing else is held.
    """
    version = parse_server_version(server_version)
    if segment_bytes < 1:
        raise ValueError("segment_bytes must be positive")
    namespaces = [_namespace(c, version) for c in collections]
    if oplog is not None:
        namespaces.append(_Namespace(OPLOG_DB, OPLOG_COLLECTION, OPLOG_COLLECTION, "", "", oplog))
    _check_unique(namespaces)

    out.write(MAGIC_BYTES)
    out.write(
        bson.encode(
            {
                "concurrent_collections": CONCURRENT_COLLECTIONS,
                "version": FORMAT_VERSION,
                "server_version": server_version,
                "tool_version": tool_version,
            }
        )
    )
    for ns in namespaces:
        out.write(
            bson.encode(
                {
                    "db": ns.db,
                    "collection": ns.collection,
                    "metadata": ns.metadata_json,
                    "size": 0,
                    "type": ns.kind,
                }
            )
        )
    out.write(TERMINATOR)
    for ns in namespaces:
        _write_namespace(out, ns, segment_bytes)


def _namespace(c: ArchiveCollection, version: tuple[int, int, int]) -> _Namespace:
    if c.kind not in KINDS:
        raise ValueError(f"{c.db}.{c.collection}: kind {c.kind!r} is not one of {sorted(KINDS)}")
    if not c.db:
        raise ValueError(f"collection {c.collection!r} has no database (the oplog is oplog=)")
    if not c.collection:
        raise ValueError(f"a collection of database {c.db!r} has no name")
    if not isinstance(c.metadata_json, str):
        raise ValueError(f"{c.db}.{c.collection}: metadata_json must be text")
    data = data_collection(c.collection, c.kind, version)
    return _Namespace(c.db, c.collection, data, c.kind, c.metadata_json, c.documents)


def _check_unique(namespaces: list[_Namespace]) -> None:
    seen: set[tuple[str, str]] = set()
    for ns in namespaces:
        for key in {(ns.db, ns.collection), (ns.db, ns.data)}:
            if key in seen:
                raise ValueError(f"namespace {key[0]}.{key[1]} is given twice")
            seen.add(key)


def _namespace_header(db: str, collection: str, *, eof: bool, crc: int) -> bytes:
    return bson.encode({"db": db, "collection": collection, "EOF": eof, "CRC": Int64(crc)})


def _write_namespace(out: BinaryIO, ns: _Namespace, segment_bytes: int) -> None:
    header = _namespace_header(ns.db, ns.data, eof=False, crc=0)
    name = f"{ns.db}.{ns.data}"
    crc = 0
    filled = 0  # document bytes in the open segment
    out.write(header)
    for item in ns.documents():
        chunk = item if type(item) is bytes else bytes(item)
        if not chunk:
            continue
        if ns.kind == "view":
            raise ValueError(f"{name} is a view: it has no documents")
        view = memoryview(chunk)
        end = len(chunk)
        pos = start = 0
        while pos < end:
            size = _document_size(chunk, pos, end, name)
            if filled and filled + size > segment_bytes:
                out.write(view[start:pos])
                out.write(TERMINATOR)
                out.write(header)
                start, filled = pos, 0
            filled += size
            pos += size
        out.write(view[start:])
        crc = crc64_update(crc, chunk)
    out.write(TERMINATOR)
    out.write(_namespace_header(ns.db, ns.data, eof=True, crc=signed64(crc)))
    out.write(TERMINATOR)


def _document_size(chunk: bytes, pos: int, end: int, name: str) -> int:
    if end - pos < 4:
        raise ArchiveError(f"{name}: {end - pos} stray bytes after the last whole document")
    (size,) = _LEN.unpack_from(chunk, pos)
    if size < MIN_BSON_SIZE or size > MAX_BSON_SIZE:
        raise ArchiveError(
            f"{name}: a document claims {size} bytes (mongorestore takes 5 to 16 MiB)"
        )
    if pos + size > end:
        raise ArchiveError(f"{name}: a document of {size} bytes is cut off after {end - pos}")
    if chunk[pos + size - 1] != 0:
        raise ArchiveError(f"{name}: a document of {size} bytes does not end in a NUL byte")
    return size
