"""The ``mongodump --archive`` writer, checked against the format itself.

Archives are taken apart here by a parser written from mongo-tools' ``common/archive/spec.md``
and ``multiplexer.go`` (not by ``read_archive``), with a bit-by-bit CRC-64/XZ of its own: the
headers are compared byte for byte with hand-encoded BSON, so every field name, type and
order is pinned. ``read_archive`` is then tested on its own: round trip and damage.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import random
import re
import struct
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

from emberkeep.sources.mongodb import archive as A
from emberkeep.sources.mongodb import crc64
from emberkeep.sources.mongodb.archive import ArchiveCollection, ArchiveError, write_archive
from emberkeep.sources.mongodb.archive_read import read_archive

TERM = b"\xff\xff\xff\xff"
MAX_BSON = 16 * 1024 * 1024

# --- an independent CRC-64/XZ (= Go's crc64.Update with the ECMA table) ----------------------

POLY_REFLECTED = 0xC96C5795D7870F42  # ECMA-182 0x42F0E1EBA9EA3693, bit-reversed
ONES = (1 << 64) - 1


def crc64_bitwise(data: bytes, crc: int = 0) -> int:
    crc ^= ONES
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLY_REFLECTED if crc & 1 else crc >> 1
    return crc ^ ONES


# "123456789": the CRC-64/XZ check value of the CRC catalogue; the others: golang/go
# src/hash/crc64/crc64_test.go, the ECMA column of its golden table (crc64.New(ECMA) + Write).
VECTORS = [
    (b"123456789", 0x995DC9BBDF1939FA),
    (b"", 0x0),
    (b"a", 0x330284772E652B05),
    (b"ab", 0xBC6573200E84B046),
    (b"abc", 0x2CD8094A1A277627),
    (b"abcdefghij", 0x32093A2ECD5773F4),
    (b"Discard medicine more than two years old.", 0x8A0825223EA6D221),
    (b"This is a test of the emergency broadcast system.", 0x27DB187FC15BBC72),
]


def test_independent_crc_matches_known_vectors():
    for data, want in VECTORS:
        assert crc64_bitwise(data) == want, data


def test_module_crc_matches_vectors_and_chains_like_go_update():
    for data, want in VECTORS:
        assert crc64.crc64_update(0, data) == want
        assert crc64.crc64_update_python(0, data) == want
        # Update(Update(0, a), b) == Checksum(a + b), whatever the split
        for cut in range(len(data) + 1):
            assert crc64.crc64_update(crc64.crc64_update(0, data[:cut]), data[cut:]) == want
            assert (
                crc64.crc64_update_python(crc64.crc64_update_python(0, data[:cut]), data[cut:])
                == want
            )


def test_python_crc_equals_bitwise_and_native_on_random_data():
    rng = random.Random(7)
    small = rng.randbytes(3001)  # odd length: the 8-byte loop and the tail both run
    assert crc64.crc64_update_python(0, small) == crc64_bitwise(small)
    big = rng.randbytes(1 << 20)
    want = crc64.crc64_update_python(0, big)
    crc, pos = 0, 0
    while pos < len(big):
        step = rng.randrange(1, 70000)
        crc = crc64.crc64_update(crc, memoryview(big)[pos : pos + step])
        pos += step
    assert crc == want
    assert crc64.crc64_backend() in ("liblzma", "python")


# --- an independent parser, from the spec ----------------------------------------------------


def read_doc(data: bytes, pos: int) -> tuple[bytes, int]:
    assert pos + 4 <= len(data), "truncated"
    (size,) = struct.unpack_from("<i", data, pos)
    assert 5 <= size <= MAX_BSON, f"bad document length {size} at {pos}"
    doc = data[pos : pos + size]
    assert len(doc) == size and doc[-1] == 0
    return doc, pos + size


def elements(doc: bytes) -> list[tuple[str, int, object]]:
    """Top-level (name, BSON type byte, value) of a document of strings, bools and ints."""
    (size,) = struct.unpack_from("<i", doc, 0)
    assert size == len(doc) and doc[-1] == 0
    pos, out = 4, []
    while doc[pos] != 0:
        kind = doc[pos]
        nul = doc.index(b"\x00", pos + 1)
        name = doc[pos + 1 : nul].decode()
        pos = nul + 1
        if kind == 0x02:
            (n,) = struct.unpack_from("<i", doc, pos)
            assert doc[pos + 4 + n - 1] == 0
            value: object = doc[pos + 4 : pos + 4 + n - 1].decode()
            pos += 4 + n
        elif kind == 0x08:
            value = {0: False, 1: True}[doc[pos]]
            pos += 1
        elif kind == 0x10:
            (value,) = struct.unpack_from("<i", doc, pos)
            pos += 4
        elif kind == 0x12:
            (value,) = struct.unpack_from("<q", doc, pos)
            pos += 8
        else:
            raise AssertionError(f"unexpected BSON type {kind:#x} for {name!r}")
        out.append((name, kind, value))
    assert pos == len(doc) - 1
    return out


def parse_spec(data: bytes):
    """magic, header, metadata*, terminator, then blocks of header + documents* + terminator."""
    assert data[:4] == bytes([0x6D, 0xE2, 0x99, 0x81])
    assert struct.unpack_from("<I", data, 0)[0] == 0x8199E26D
    header, pos = read_doc(data, 4)
    metas = []
    while data[pos : pos + 4] != TERM:
        doc, pos = read_doc(data, pos)
        metas.append(doc)
    pos += 4
    prelude_end = pos
    blocks = []
    while pos < len(data):
        head, pos = read_doc(data, pos)
        docs = []
        while data[pos : pos + 4] != TERM:
            doc, pos = read_doc(data, pos)
            docs.append(doc)
        pos += 4
        blocks.append((head, docs))
    assert pos == len(data)
    return header, metas, prelude_end, blocks


# hand-encoded BSON, to compare headers byte for byte
def _cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def e_str(name: str, value: str) -> bytes:
    raw = value.encode()
    return b"\x02" + _cstr(name) + struct.pack("<i", len(raw) + 1) + raw + b"\x00"


def e_bool(name: str, value: bool) -> bytes:
    return b"\x08" + _cstr(name) + (b"\x01" if value else b"\x00")


def e_i32(name: str, value: int) -> bytes:
    return b"\x10" + _cstr(name) + struct.pack("<i", value)


def e_i64(name: str, value: int) -> bytes:
    return b"\x12" + _cstr(name) + struct.pack("<q", value)


def bdoc(*elems: bytes) -> bytes:
    body = b"".join(elems)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def ns_header(db: str, coll: str, eof: bool, crc: int) -> bytes:
    signed = crc - (1 << 64) if crc >= 1 << 63 else crc
    return bdoc(
        e_str("db", db), e_str("collection", coll), e_bool("EOF", eof), e_i64("CRC", signed)
    )


def meta_entry(db: str, coll: str, metadata: str, kind: str) -> bytes:
    return bdoc(
        e_str("db", db),
        e_str("collection", coll),
        e_str("metadata", metadata),
        e_i32("size", 0),
        e_str("type", kind),
    )


# --- the archive under test --------------------------------------------------------------------

SERVER = "7.0.14"
TOOL = "emberkeep-test"
SEGMENT = 4096


def mixed_docs(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        doc = {
            "_id": ObjectId(rng.randbytes(12)),
            "n": i,
            "big": Int64(rng.randrange(-(1 << 63), 1 << 63)),
            "price": rng.random() * 1000,
            "exact": Decimal128(Decimal(rng.randrange(10**6)) / 100),
            "when": dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
            "raw": Binary(rng.randbytes(rng.randrange(0, 64))),
            "uuid": Binary(rng.randbytes(16), 4),
            "name": f"needle-{i:05d}-ünïcødé-" + "x" * rng.randrange(0, 300),
            "ok": bool(i % 2),
            "none": None,
            "re": Regex("^a.*z$", "i"),
            "ts": Timestamp(1_700_000_000 + i, i % 7),
            "code": Code("function(){return 1}"),
            "edge": MinKey() if i % 2 else MaxKey(),
            "tags": [rng.randrange(100) for _ in range(rng.randrange(0, 10))],
            "nested": {"a": {"b": [1, "two", 3.0, {"c": None}]}},
        }
        if i % 97 == 5:  # now and then one bigger than a whole segment
            doc["blob"] = Binary(rng.randbytes(3 * SEGMENT))
        docs.append(bson.encode(doc))
    return docs


def batches(docs: list[bytes], seed: int = 2):
    """Like find_raw_batches: concatenated documents, in batches of varying size."""
    rng = random.Random(seed)
    i = 0
    while i < len(docs):
        k = rng.randrange(1, 40)
        yield b"".join(docs[i : i + k])
        if i == 0:
            yield b""  # an empty batch is allowed and changes nothing
        i += k


ORDERS = mixed_docs(600)
PEOPLE = [bson.encode({"_id": i, "name": f"p{i}"}) for i in range(3)]
OPLOG = [
    bson.encode(
        {
            "ts": Timestamp(1_700_000_100 + i, 1),
            "t": Int64(1),
            "op": "i",
            "ns": "shop.orders",
            "o": {"_id": i},
            "v": 2,
        }
    )
    for i in range(5)
]
ORDERS_META = (
    '{"options":{},"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},'
    '"name":"_id_"}],"uuid":"0123456789abcdef0123456789abcdef","collectionName":"orders",'
    '"type":"collection"}'
)
EMPTY_META = '{"options":{},"indexes":[],"collectionName":"empty","type":"collection"}'
VIEW_META = (
    '{"options":{"viewOn":"orders","pipeline":[{"$match":{"ok":true}}]},"indexes":[],'
    '"collectionName":"paid","type":"view"}'
)
PEOPLE_META = '{"options":{},"indexes":[],"collectionName":"people","type":"collection"}'


def collections() -> list[ArchiveCollection]:
    return [
        ArchiveCollection("shop", "orders", ORDERS_META, lambda: batches(ORDERS)),
        ArchiveCollection("shop", "empty", EMPTY_META, lambda: iter(())),
        ArchiveCollection("shop", "paid", VIEW_META, lambda: [], kind="view"),
        ArchiveCollection("crm", "people", PEOPLE_META, lambda: [b"".join(PEOPLE)]),
    ]


def build(**kw) -> bytes:
    out = io.BytesIO()
    write_archive(
        out,
        collections(),
        server_version=SERVER,
        tool_version=TOOL,
        oplog=lambda: iter(OPLOG),
        segment_bytes=SEGMENT,
        **kw,
    )
    return out.getvalue()


@pytest.fixture(scope="module")
def archive_bytes() -> bytes:
    return build()


EXPECTED_NAMESPACES = [
    ("shop", "orders", ORDERS_META, "collection", ORDERS),
    ("shop", "empty", EMPTY_META, "collection", []),
    ("shop", "paid", VIEW_META, "view", []),
    ("crm", "people", PEOPLE_META, "collection", PEOPLE),
    ("", "oplog", "", "", OPLOG),
]


def test_prelude_byte_for_byte(archive_bytes):
    header, metas, prelude_end, _ = parse_spec(archive_bytes)
    assert elements(header) == [
        ("concurrent_collections", 0x10, 1),
        ("version", 0x02, "0.1"),
        ("server_version", 0x02, SERVER),
        ("tool_version", 0x02, TOOL),
    ]
    assert [elements(m) for m in metas] == [
        [
            ("db", 0x02, db),
            ("collection", 0x02, coll),
            ("metadata", 0x02, meta),
            ("size", 0x10, 0),
            ("type", 0x02, kind),
        ]
        for db, coll, meta, kind, _ in EXPECTED_NAMESPACES
    ]
    expected = (
        b"\x6d\xe2\x99\x81"
        + bdoc(
            e_i32("concurrent_collections", 1),
            e_str("version", "0.1"),
            e_str("server_version", SERVER),
            e_str("tool_version", TOOL),
        )
        + b"".join(meta_entry(db, c, m, k) for db, c, m, k, _ in EXPECTED_NAMESPACES)
        + TERM
    )
    assert archive_bytes[:prelude_end] == expected


def test_body_segments_eofs_and_crcs(archive_bytes):
    _, _, _, blocks = parse_spec(archive_bytes)
    # group the blocks: each namespace's blocks are contiguous, its EOF block last
    seen: list[tuple[str, str]] = []
    per_ns: dict[tuple[str, str], list[tuple[list, list[bytes]]]] = {}
    for head, docs in blocks:
        fields = elements(head)
        assert [(n, t) for n, t, _ in fields] == [
            ("db", 0x02),
            ("collection", 0x02),
            ("EOF", 0x08),
            ("CRC", 0x12),
        ]
        key = (str(fields[0][2]), str(fields[1][2]))
        if not seen or seen[-1] != key:
            assert key not in seen, f"{key} interleaved or reopened"
            seen.append(key)
        per_ns.setdefault(key, []).append((fields, docs))
    assert seen == [(db, c) for db, c, *_ in EXPECTED_NAMESPACES]  # the oplog last

    for db, coll, _, _, want_docs in EXPECTED_NAMESPACES:
        ns_blocks = per_ns[(db, coll)]
        *segments, (eof_fields, eof_docs) = ns_blocks
        assert eof_fields[2][2] is True and eof_docs == []
        assert segments, "at least one segment, as mongodump's MuxIn.Close writes"
        data_docs = []
        for fields, docs in segments:
            assert fields[2][2] is False and fields[3][2] == 0
            data_docs.extend(docs)
        assert data_docs == want_docs  # every document byte for byte, in order
        crc = crc64_bitwise(b"".join(want_docs))
        assert eof_fields[3][2] & ONES == crc
        if not want_docs:  # empty collection / view: one empty segment, then EOF with CRC 0
            assert [docs for _, docs in segments] == [[]] and crc == 0

    # header bytes exactly as mongodump encodes NamespaceHeader
    orders_eof = ns_header("shop", "orders", True, crc64_bitwise(b"".join(ORDERS)))
    assert orders_eof + TERM in archive_bytes
    assert archive_bytes.endswith(
        ns_header("", "oplog", False, 0)
        + b"".join(OPLOG)
        + TERM
        + ns_header("", "oplog", True, crc64_bitwise(b"".join(OPLOG)))
        + TERM
    )
    empty = ns_header("shop", "empty", False, 0) + TERM + ns_header("shop", "empty", True, 0) + TERM
    assert empty in archive_bytes


def test_orders_span_many_segments_split_at_document_boundaries(archive_bytes):
    _, _, _, blocks = parse_spec(archive_bytes)
    segments = [docs for head, docs in blocks if elements(head)[1][2] == "orders"][:-1]
    assert len(segments) > 50
    sizes = [sum(map(len, docs)) for docs in segments]
    for docs, size in zip(segments, sizes, strict=True):
        assert docs, "no empty segment in a collection with documents"
        assert size <= SEGMENT or len(docs) == 1  # a bigger document travels alone
    assert any(size > SEGMENT for size in sizes)
    # filled as mongodump's MuxIn buffer is: a new segment only when the next doc won't fit
    for size, following in zip(sizes, segments[1:], strict=False):
        assert size + len(following[0]) > SEGMENT


def test_oplog_absent_means_no_oplog_entry():
    out = io.BytesIO()
    write_archive(out, collections()[:1], server_version="6.0.3")
    _, metas, _, blocks = parse_spec(out.getvalue())
    assert [elements(m)[:2] for m in metas] == [[("db", 2, "shop"), ("collection", 2, "orders")]]
    assert {elements(h)[1][2] for h, _ in blocks} == {"orders"}
    assert elements(parse_spec(out.getvalue())[0])[3] == ("tool_version", 2, "emberkeep")


def test_documents_stream_through():
    """Each batch is out before the next is asked for; a namespace's documents() is called
    only once the previous namespace is finished."""
    out = io.BytesIO()
    calls = []

    def first():
        for batch in batches(ORDERS):
            yield batch
            if batch:
                assert out.getvalue().endswith(batch[-60:])

    def second():
        calls.append(len(out.getvalue()))
        assert out.getvalue().endswith(TERM + ns_header("s", "b", False, 0))
        yield b"".join(PEOPLE)

    write_archive(
        out,
        [ArchiveCollection("s", "a", "", first), ArchiveCollection("s", "b", "", second)],
        server_version=SERVER,
        segment_bytes=SEGMENT,
    )
    assert len(calls) == 1
    assert ORDERS[0] in out.getvalue()


def test_timeseries_data_namespace_follows_server_version():
    buckets = [bson.encode({"_id": ObjectId(), "control": {"version": 1}})]
    for server, data_name in (("7.0.14", "system.buckets.weather"), ("8.3.0-rc1", "weather")):
        out = io.BytesIO()
        tsc = ArchiveCollection("w", "weather", "{}", lambda: buckets, kind="timeseries")
        write_archive(out, [tsc], server_version=server)
        _, metas, _, blocks = parse_spec(out.getvalue())
        assert elements(metas[0])[1] == ("collection", 2, "weather")
        assert elements(metas[0])[4] == ("type", 2, "timeseries")
        assert {elements(h)[1][2] for h, _ in blocks} == {data_name}
        out.seek(0)
        assert read_archive(out).documents("w", data_name) == buckets


def test_pure_python_crc_writes_the_same_archive(archive_bytes, monkeypatch):
    monkeypatch.setattr(crc64, "_native_crc64", lambda: None)
    assert crc64.crc64_backend() == "python"
    assert build() == archive_bytes


# --- read_archive -------------------------------------------------------------------------------


def test_read_archive_round_trip(archive_bytes):
    parsed = read_archive(io.BytesIO(archive_bytes))
    assert parsed.header == {
        "concurrent_collections": 1,
        "version": "0.1",
        "server_version": SERVER,
        "tool_version": TOOL,
    }
    assert list(parsed.metadata) == [(db, c) for db, c, *_ in EXPECTED_NAMESPACES]
    for db, coll, meta, kind, docs in EXPECTED_NAMESPACES:
        entry = parsed.metadata[(db, coll)]
        assert entry == {"db": db, "collection": coll, "metadata": meta, "size": 0, "type": kind}
        ns = parsed.namespaces[(db, coll)]
        assert ns.documents == docs
        assert ns.crc == crc64_bitwise(b"".join(docs))
    assert parsed.namespaces[("shop", "orders")].segments > 50
    assert parsed.namespaces[("shop", "paid")].segments == 1
    # the documents decode to what was written, types included
    first = bson.decode(parsed.documents("shop", "orders")[0])
    assert type(first["big"]) is Int64 and isinstance(first["exact"], Decimal128)


def test_read_archive_accepts_short_reads(archive_bytes):
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            part = self.data[self.pos : self.pos + min(n, 7)]
            self.pos += len(part)
            return part

    assert read_archive(Trickle(archive_bytes)).documents("", "oplog") == OPLOG


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_a_flipped_document_byte_fails_the_crc(archive_bytes):
    at = archive_bytes.index(b"needle-00321")
    with pytest.raises(ArchiveError, match=r"CRC mismatch for namespace shop\.orders"):
        read_archive(io.BytesIO(_flip(archive_bytes, at + 9)))


def test_every_kind_of_damage_is_named(archive_bytes):
    eof = ns_header("crm", "people", True, crc64_bitwise(b"".join(PEOPLE)))
    eof_at = archive_bytes.index(eof)
    crc_at = eof_at + len(eof) - 1 - 8  # the CRC's int64, just before the closing NUL
    first_doc_at = archive_bytes.index(ORDERS[0])
    cases = {
        "not a mongodump archive": _flip(archive_bytes, 0),
        "CRC mismatch for namespace crm.people": _flip(archive_bytes, crc_at),
        "neither a BSON length nor a terminator": (
            archive_bytes[:first_doc_at] + struct.pack("<i", 3) + archive_bytes[first_doc_at + 4 :]
        ),
        "truncated": archive_bytes[:-3],
        r"ends before the EOF of \.oplog": archive_bytes[
            : archive_bytes.rindex(ns_header("", "oplog", True, 0)[:20])
        ],
        "ends before .*oplog appeared": archive_bytes[
            : archive_bytes.index(ns_header("", "oplog", False, 0))
        ],
        "continues after its EOF": archive_bytes + ns_header("crm", "people", False, 0) + TERM,
        "not in the prelude": archive_bytes + ns_header("crm", "ghost", False, 0) + TERM,
        "consecutive terminators": archive_bytes + TERM,
    }
    for message, damaged in cases.items():
        with pytest.raises(ArchiveError, match=message):
            read_archive(io.BytesIO(damaged))


def test_an_empty_or_foreign_stream_is_refused():
    with pytest.raises(ArchiveError, match="not a mongodump archive"):
        read_archive(io.BytesIO(b""))
    with pytest.raises(ArchiveError, match="not a mongodump archive"):
        read_archive(io.BytesIO(b"".join(PEOPLE)))  # a plain .bson file


# --- what the writer refuses ---------------------------------------------------------------------


def _write(colls, **kw):
    kw.setdefault("server_version", SERVER)
    write_archive(io.BytesIO(), colls, **kw)


def test_writer_refuses_malformed_documents():
    good = PEOPLE[0]
    for chunk, message in (
        (good + good[:10], "cut off"),
        (good + b"\x01\x02", "stray bytes"),
        (good[:-1] + b"\x01", "does not end in a NUL"),
        (struct.pack("<i", MAX_BSON + 1) + b"\x00" * 8, "claims"),
        (struct.pack("<i", 4) + b"\x00" * 8, "claims"),
    ):
        with pytest.raises(ArchiveError, match=message):
            _write([ArchiveCollection("d", "c", "", functools.partial(list, [chunk]))])


def test_writer_refuses_bad_arguments():
    def noop() -> list[bytes]:
        return []

    cases: list[tuple[list[ArchiveCollection], dict[str, Any], str]] = [
        ([ArchiveCollection("d", "c", "", noop)] * 2, {}, "given twice"),
        ([ArchiveCollection("d", "v", "", lambda: [PEOPLE[0]], kind="view")], {}, "is a view"),
        ([ArchiveCollection("d", "c", "", noop, kind="capped")], {}, "kind"),
        ([ArchiveCollection("", "c", "", noop)], {}, "no database"),
        ([ArchiveCollection("d", "", "", noop)], {}, "no name"),
        ([], {"server_version": "unknown"}, re.escape("X.Y.Z")),
        ([], {"server_version": "7.0"}, re.escape("X.Y.Z")),
        ([], {"segment_bytes": 0}, "segment_bytes"),
    ]
    for colls, kw, message in cases:
        with pytest.raises(ValueError, match=message):
            _write(colls, **kw)


def test_server_versions_parse_as_mongorestore_parses_them():
    assert A.parse_server_version("7.0.14") == (7, 0, 14)
    assert A.parse_server_version("8.3.0-rc1") == (8, 3, 0)
    assert A.parse_server_version("4.4.29+ent") == (4, 4, 29)
