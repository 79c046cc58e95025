"""The ``mongodump --archive`` format: a streaming writer, and a reader that checks everything.

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
- golang/go ``src/hash/crc64/crc64.go``: ``update`` inverts, runs the reflected table, inverts
  again; ``New`` starts from 0. That is CRC-64/XZ: poly 0x42F0E1EBA9EA3693 reflected
  (0xC96C5795D7870F42), init and xorout all ones; check value 0x995DC9BBDF1939FA.

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

The CRC uses liblzma's ``lzma_crc64`` (the same CRC, in C: xz uses CRC-64/XZ) through ctypes
when the library the ``lzma`` module links is found and passes the check value; otherwise a
table-driven (slicing-by-8) Python loop of about 9 to 12 MB/s (64 MiB: about 7 s, against
13 ms through liblzma), so an archive of gigabytes would then spend minutes on its checksums.
"""

from __future__ import annotations

import functools
import re
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import bson
from bson.errors import BSONError
from bson.int64 import Int64

from ...errors import EmberkeepError

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
_U64 = (1 << 64) - 1


class ArchiveError(EmberkeepError):
    """An archive (or the documents given for one) is malformed or damaged."""


# --- CRC-64/XZ, as Go's hash/crc64 with crc64.MakeTable(crc64.ECMA) -------------------------

CRC64_ECMA_REFLECTED = 0xC96C5795D7870F42
CRC64_CHECK = 0x995DC9BBDF1939FA  # of b"123456789"


def _make_tables() -> list[list[int]]:
    """Go's ``makeTable`` then ``makeSlicingBy8Table``: eight 256-entry tables."""
    first = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ CRC64_ECMA_REFLECTED if crc & 1 else crc >> 1
        first.append(crc)
    tables = [first]
    for _ in range(7):
        prev = tables[-1]
        tables.append([first[v & 0xFF] ^ (v >> 8) for v in prev])
    return tables


_TABLES = _make_tables()


def crc64_update_python(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Go's ``crc64.Update(crc, crc64.MakeTable(crc64.ECMA), data)`` in pure Python."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _TABLES
    crc ^= _U64
    view = memoryview(data).cast("B")
    whole = len(view) & ~7 if sys.byteorder == "little" else 0
    for word in view[:whole].cast("Q"):
        x = crc ^ word
        crc = (
            t7[x & 0xFF]
            ^ t6[(x >> 8) & 0xFF]
            ^ t5[(x >> 16) & 0xFF]
            ^ t4[(x >> 24) & 0xFF]
            ^ t3[(x >> 32) & 0xFF]
            ^ t2[(x >> 40) & 0xFF]
            ^ t1[(x >> 48) & 0xFF]
            ^ t0[x >> 56]
        )
    for byte in view[whole:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U64


@functools.cache
def _native_crc64() -> Callable[[bytes, int, int], int] | None:
    """liblzma's ``lzma_crc64(buf, size, crc)``: the same CRC and the same chaining as Go's."""
    try:
        import _lzma
        import ctypes
    except ImportError:  # pragma: no cover - CPython without ctypes or lzma
        return None
    for name in ("liblzma.so.5", _lzma.__file__, "liblzma.5.dylib", "liblzma.dylib"):
        try:
            fn = ctypes.CDLL(name).lzma_crc64
        except (OSError, AttributeError):
            continue
        fn.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64)
        fn.restype = ctypes.c_uint64
        if fn(b"123456789", 9, 0) == CRC64_CHECK and fn(b"", 0, 0) == 0:
            return fn
    return None


def crc64_update(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Go's ``crc64.Update`` with the ECMA table: ``crc64_update(0, data)`` is ``Checksum``."""
    native = _native_crc64()
    if native is None:
        return crc64_update_python(crc, data)
    if type(data) is not bytes:
        data = bytes(data)
    return native(data, len(data), crc)


def crc64_backend() -> str:
    return "liblzma" if _native_crc64() is not None else "python"


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


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
    out.write(_namespace_header(ns.db, ns.data, eof=True, crc=_signed64(crc)))
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


# --- reader -------------------------------------------------------------------------------------


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
                        f"give {_signed64(crcs[key])}, its EOF header says {_signed64(want)}"
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
