"""``emberkeep import``'s reading of a stock mongodump, without a server: an archive whose
namespaces interleave (as ``mongodump --archive`` writes them, four at a time), gzipped or
not, and a dump folder, become the tree of a mongodb snapshot; damage is named. (A stock
dump of a real server imported, restored and compared with the stock mongorestore:
test_mongo_fidelity.)"""

from __future__ import annotations

import gzip
import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pytest
from conftest import Site

from emberkeep.engine.events import Enter, Leave, Stream
from emberkeep.sources.mongodb.archive import ArchiveCollection, write_archive
from emberkeep.sources.mongodb.catalog import CollectionInfo
from emberkeep.sources.mongodb.record import RECORD, DumpRecord, split_documents
from emberkeep.sources.mongodb.stockdump import DumpError, ImportedDump, opened_dump

TERM = b"\xff\xff\xff\xff"


def _docs(n: int, tag: str) -> list[bytes]:
    return [bson.encode({"_id": i, "tag": tag, "pad": "x" * (i % 50)}) for i in range(n)]


def _metadata(name: str) -> str:
    return CollectionInfo("shop", name, "collection", indexes=[]).metadata_json().decode()


def _batches(docs: list[bytes]) -> Callable[[], list[bytes]]:
    return lambda: [b"".join(docs)]


def _archive(collections: dict[str, list[bytes]]) -> bytes:
    out = io.BytesIO()
    write_archive(
        out,
        [
            ArchiveCollection("shop", name, _metadata(name), _batches(docs))
            for name, docs in collections.items()
        ],
        server_version="7.0.0",
        segment_bytes=2000,  # many segments, to interleave
    )
    return out.getvalue()


def _interleaved(data: bytes) -> bytes:
    """The same archive with the namespaces' segments interleaved, as mongodump writes with
    several collections at once: every namespace's blocks keep their order, EOFs last."""
    pos = 4 + struct.unpack_from("<i", data, 4)[0]  # magic, header
    while data[pos : pos + 4] != TERM:
        pos += struct.unpack_from("<i", data, pos)[0]
    prelude, pos = data[: pos + 4], pos + 4
    blocks: dict[str, list[bytes]] = {}
    while pos < len(data):
        start = pos
        head = bson.decode(data[pos : pos + struct.unpack_from("<i", data, pos)[0]])
        pos += struct.unpack_from("<i", data, pos)[0]
        while data[pos : pos + 4] != TERM:
            pos += struct.unpack_from("<i", data, pos)[0]
        pos += 4
        blocks.setdefault(head["collection"], []).append(data[start:pos])
    body, queues = [], [list(b) for b in blocks.values()]
    while any(queues):
        for queue in queues:
            if len(queue) > 1 or (queue and all(len(q) <= 1 for q in queues)):
                body.append(queue.pop(0))
    return prelude + b"".join(body)


def _tree(dump: ImportedDump) -> dict[str, bytes]:
    """The snapshot tree the dump's events describe: path -> content."""
    files: dict[str, bytes] = {}
    where: list[str] = []
    for event in dump.events():
        if isinstance(event, Enter):
            where.append(event.node["name"])
        elif isinstance(event, Leave):
            where.pop()
        elif isinstance(event, Stream):
            with event.open() as handle:
                chunks, buf = [], bytearray(1 << 16)
                while n := handle.readinto(memoryview(buf)):
                    chunks.append(bytes(buf[:n]))
            files["/".join([*where, event.node["name"]])] = b"".join(chunks)
    return files


COLLECTIONS = {"orders": _docs(300, "o"), "carts": _docs(200, "c"), "empty": []}


@pytest.mark.parametrize("packing", ["plain", "gzip"])
def test_an_interleaved_archive_becomes_one_file_per_collection(
    tmp_path: Path, packing: str
) -> None:
    data = _interleaved(_archive(COLLECTIONS))
    assert data != _archive(COLLECTIONS)  # the body really is in another order
    path = tmp_path / "dump.archive"
    path.write_bytes(gzip.compress(data) if packing == "gzip" else data)
    spool = tmp_path / "state" / "import"
    with opened_dump(path, spool) as contents:
        assert len(list(spool.iterdir())) == 1  # the spool, while it is needed
        tree = _tree(ImportedDump(contents))
    assert not list(spool.iterdir())  # and gone after
    for name, docs in COLLECTIONS.items():
        assert split_documents(tree[f"shop/{name}.bson"])[0] == docs, name
        assert tree[f"shop/{name}.metadata.json"].decode() == _metadata(name)
    record = DumpRecord.from_bytes(tree[RECORD])
    assert {c.name: c.count for c in record.collections} == {
        "carts": 200,
        "empty": 0,
        "orders": 300,
    }
    assert record.point_in_time is False and "without --oplog" in str(
        record.not_point_in_time_because
    )
    assert record.imported_from == {"path": str(path), "format": "mongodump-archive"}


def test_a_dump_folder_is_read_in_place_gzipped_or_not(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "orders.bson").write_bytes(b"".join(COLLECTIONS["orders"]))
    (root / "shop" / "orders.metadata.json").write_text(_metadata("orders"))
    (root / "shop" / "carts.bson.gz").write_bytes(gzip.compress(b"".join(COLLECTIONS["carts"])))
    (root / "shop" / "carts.metadata.json.gz").write_bytes(
        gzip.compress(_metadata("carts").encode())
    )
    (root / "prelude.json").write_text('{"ServerVersion":"7.0.2","ToolVersion":"100.12.0"}')
    for given in (root, root / "shop"):  # the dump, or one database's folder of it
        with opened_dump(given, tmp_path / "spool") as contents:
            assert contents.server_version == "7.0.2"
            tree = _tree(ImportedDump(contents))
        assert sorted(tree) == [
            RECORD, "shop/carts.bson", "shop/carts.metadata.json", "shop/orders.bson",
            "shop/orders.metadata.json",
        ]  # fmt: skip
        assert split_documents(tree["shop/carts.bson"])[0] == COLLECTIONS["carts"]


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda data: data[:-30], "truncated"),
        (lambda data: data[:200] + bytes([data[200] ^ 0xFF]) + data[201:], "corrupt archive"),
        (lambda data: b"not an archive at all", "magic number"),
    ],
)
def test_a_damaged_archive_is_named_and_nothing_is_left(
    tmp_path: Path, damage: Any, said: str
) -> None:
    path = tmp_path / "dump.archive"
    path.write_bytes(damage(_archive(COLLECTIONS)))
    with pytest.raises(DumpError, match=said) as raised, opened_dump(path, tmp_path / "spool"):
        pass
    assert str(path) in str(raised.value)
    assert not list((tmp_path / "spool").iterdir())


def test_import_through_the_cli_names_a_bad_dump_and_a_bad_source(
    site: Site, tmp_path: Path
) -> None:
    """One CLI run per refusal: a usage error (exit 2) and a damaged dump (exit 1), each a
    line naming the thing, no traceback; nothing is committed."""
    site.write_config([tmp_path])  # a files source only
    site.run("init")
    no_mongo = site.run("import", tmp_path / "x.archive", ok=False)
    assert no_mongo.returncode == 2 and "mongodb sources: none" in no_mongo.stderr
    site.write_config(
        [tmp_path],
        extra_sources='[[sources]]\nname = "db"\ntype = "mongodb"\nuri = "mongodb://127.0.0.1:1"\n',
    )
    bad = tmp_path / "shop.archive"
    bad.write_bytes(b"\x1f\x8b" + b"not gzip at all")
    proc = site.run("import", bad, ok=False)
    assert proc.returncode == 1 and str(bad) in proc.stderr, proc.stderr
    assert site.snapshots() == []
