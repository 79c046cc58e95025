"""The shop database through every round trip, on FerretDB 1.24 and on DocumentDB.

The generated shop (``emberkeep.demo.shopdb``, a few MB plus one document of nearly 16 MiB)
uses what each server takes: on DocumentDB Decimal128 prices, every BSON type, ``$`` and ``.``
in field names, TTL/partial/text/2dsphere/hashed/wildcard indexes, a validator and a view;
what a server cannot hold is recorded by the generator and asserted here. Each server gets
one backup of it, then: restore, drill and recover each give it back byte for byte per
``_id`` with every index and option; the stock ``mongorestore`` restores both export formats
(on FerretDB 1.24 with ``--noIndexRestore``: it refuses the legacy ``ns`` index option
mongorestore sends); emberkeep's dump and the stock ``mongodump`` of the same database hold
the same files, documents and metadata. Restoring through FerretDB v2, which answers ``ok``
to a view and makes a plain collection of it, fails naming the view.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from conftest import Site
from mongo_helpers import (
    SERVERS,
    Server,
    catalog,
    dump_files,
    mongo_site,
    raw_by_id,
    server_of,
    without_indexes,
)
from servers_mongo import run_stock

from emberkeep.demo import shopdb
from emberkeep.sources.mongodb.record import split_documents

DB = "shop"
SHOP_MB = 2
# What each server refuses or drops (the generator records it; nothing is skipped silently)
GAPS = {
    "ferretdb-1.24": {
        "bson:decimal128", "bson:minkey_maxkey", "bson:code", "bson:dbref",
        "bson:nested_array", "field:dollar_dot", "collection:validator", "view", "index:ttl",
        "index:partial", "index:sparse", "index:text", "index:hashed", "index:2dsphere",
        "index:wildcard", "index:collation", "users",
    },
    "documentdb": {"collection:capped", "index:collation", "users"},
}  # fmt: skip


# The nearly-16-MiB document, where data fidelity is tested: on FerretDB 1.24 (the server of
# the oplog tests, about 3 MB/s) it would cost the suite a minute for no new path
LARGEST_ON = {"documentdb"}


@dataclass
class Shop:
    server: Server
    summary: dict[str, Any]
    documents: dict[str, dict[str, bytes]]
    shape: dict[str, Any]
    site: Site


@pytest.fixture(scope="module", params=SERVERS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    yield from server_of(request, tmp_path_factory)


@pytest.fixture(scope="module")
def shop(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The shop on ``server``, and one backup of it in a site of its own."""
    largest = server.name in LARGEST_ON
    summary = shopdb.generate(
        server.client, DB, size_mb=SHOP_MB, drop=True, largest_document=largest
    )
    site = Site(tmp_path_factory.mktemp(f"site-{server.name}"))
    mongo_site(site, server.uri, [DB])
    site.run("backup")
    yield Shop(server, summary, raw_by_id(server.client, DB), catalog(server.client, DB), site)
    server.client.drop_database(DB)


def test_the_generator_records_what_the_server_cannot_hold(shop: Shop) -> None:
    summary, name = shop.summary, shop.server.name
    assert set(summary["unsupported"]) == GAPS[name], summary["unsupported"]
    if name == "documentdb":
        assert summary["money"] == "decimal128" and "view" in summary["created"]
        reason = summary["unsupported"]["users"]
        assert "Invalid value specified for role: 'readWrite'" in reason  # cluster roles only
    if name in LARGEST_ON:
        assert "document:16mib" in summary["created"]
        [big] = shop.documents[shopdb.LARGEST].values()
        assert len(big) == shopdb.LARGEST_BYTES
    else:
        assert shopdb.LARGEST not in shop.documents


def test_a_backup_says_the_users_were_not_dumped_where_the_server_hides_them(shop: Shop) -> None:
    """Neither server keeps users in admin.system.users, where a dump reads them: the
    backup warns that they were not dumped (and why), never "dumped" with 0 users."""
    [entry] = shop.site.json("backup")
    [said] = [w["message"] for w in entry["warnings"] if w["path"] == "users and roles"]
    assert said.startswith("not dumped: the server "), said
    if shop.server.name == "documentdb":  # users live in PostgreSQL; usersInfo lists them
        assert "documentdb_bg_worker_role" in said and "none in admin.system.users" in said
    else:  # FerretDB 1.24 has no usersInfo
        assert "does not list its users (usersInfo: CommandNotFound)" in said, said
    assert "create" in said and "again after a restore" in said


def test_the_dump_holds_what_the_stock_mongodump_holds(shop: Shop, tmp_path: Path) -> None:
    """Same files (layout), same documents per file, same metadata byte for byte, as the
    stock ``mongodump --out`` of the whole server, taken before any test restores (a
    restore gives collections new uuids). Only ``oplog.bson`` is ours alone where the server
    has an oplog: mongodump writes it with ``--oplog``, which scans FerretDB's whole oplog
    three times (emberkeep's window: once)."""
    site, uri = shop.site, shop.server.uri
    ours, stock = tmp_path / "ours", tmp_path / "stock"
    run_stock("mongodump", f"--uri={uri}", f"--out={stock}")
    site.run("export", "latest", "--format", "mongodump-dir", "--to", ours)
    a = dump_files(ours)
    b = {n: d for n, d in dump_files(stock).items() if "/" not in n or n.startswith(f"{DB}/")}
    if shop.summary["oplog"]:
        assert a.pop("oplog.bson") is not None
    assert sorted(a) == sorted(b)  # the layout: every file under the same name
    for name in a:
        if name.endswith(".metadata.json"):
            assert _metadata(a[name]) == _metadata(b[name]), name
            assert a[name] == b[name], name  # byte for byte, as mongodump writes it
        elif name.endswith(".bson"):
            assert sorted(split_documents(a[name])[0]) == sorted(split_documents(b[name])[0])
        else:
            assert name == "prelude.json"
            assert json.loads(a[name])["ServerVersion"] == json.loads(b[name])["ServerVersion"]


def test_a_stock_dump_imported_restores_as_the_stock_mongorestore_restores_it(
    shop: Shop, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The user's own dumps become snapshots of the source, dated when they were made
    (``--time``, else the dump's own), and restore like the stock mongorestore restores
    them: an archive, the same gzipped, a dump folder; a drill passes on one."""
    client, site, uri = shop.server.client, shop.site, shop.server.uri
    archive, folder = tmp_path / "shop.archive", tmp_path / "dump"
    run_stock("mongodump", f"--uri={uri}", f"--db={DB}", f"--archive={archive}")
    run_stock("mongodump", f"--uri={uri}", f"--db={DB}", "--gzip", f"--out={folder}")
    gzipped = tmp_path / "shop.archive.gz"
    gzipped.write_bytes(gzip.compress(archive.read_bytes()))
    os.utime(gzipped, (1767225600, 1767225600))  # as if made 2026-01-01T00:00:00Z

    first = site.json("import", archive, "--time", "2025-12-24T02:00:00Z", "--tag", "old")
    second = site.json("import", gzipped)
    third = site.json("import", folder)
    snaps = [out["snapshot"] for out in (first, second, third)]
    assert [s["time"] for s in snaps[:2]] == ["2025-12-24T02:00:00Z", "2026-01-01T00:00:00Z"]
    assert snaps[2]["time"] == max(_mtime(p) for p in folder.rglob("*.bson.gz"))
    assert snaps[0]["tags"] == ["imported", "old"] and snaps[1]["tags"] == ["imported"]
    assert all(s["source"] == "db" for s in snaps)
    counts = {name: len(docs) for name, docs in shop.documents.items()}
    for snap in snaps:
        mongodb = snap["extra"]["mongodb"]
        assert mongodb["documents"] == sum(counts.values()) and mongodb["databases"] == [DB]
        assert mongodb["point_in_time"] is False  # no --oplog

    mine, stock = f"{DB}_imported", f"{DB}_stockimp"
    site.run("restore", snaps[1]["id"], "--to-uri", uri, "--ns-from", DB, "--ns-to", mine)
    routes: list[tuple[str, list[str]]] = [(uri, [])]
    if shop.server.name == "documentdb":  # the 16 MiB document: see the export test
        largest = f"{DB}.{shopdb.LARGEST}"
        other = request.getfixturevalue("documentdb_ferretdb").uri
        routes = [(uri, [f"--nsExclude={largest}"]), (other, [f"--nsInclude={largest}"])]
    try:
        for route, only in routes:
            run_stock(
                "mongorestore", f"--uri={route}", *shop.server.stock_restore_flags, *only,
                f"--nsFrom={DB}.*", f"--nsTo={stock}.*", f"--archive={archive}",
            )  # fmt: skip
        assert raw_by_id(client, mine) == raw_by_id(client, stock) == shop.documents
        ours = _renamed(catalog(client, mine), DB, mine)
        theirs = _renamed(catalog(client, stock), DB, stock)
        if shop.server.keeps_indexes_through_stock_restore:
            assert ours == theirs == shop.shape
        else:
            assert without_indexes(ours) == without_indexes(theirs)
            assert ours == shop.shape  # emberkeep's restore keeps the indexes there too
    finally:
        client.drop_database(mine)
        client.drop_database(stock)

    [drill] = json.loads(site.run("drill", "db", "--snapshot", snaps[2]["id"], "--json").stdout)
    assert drill["outcome"] == "passed", drill


def _mtime(path: Path) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_restore_drill_and_recover_give_the_shop_back_byte_for_byte(shop: Shop) -> None:
    client, site = shop.server.client, shop.site
    copy = f"{DB}_copy"
    site.run("restore", "latest", "--to-uri", shop.server.uri, "--ns-from", DB, "--ns-to", copy)
    assert raw_by_id(client, copy) == shop.documents
    assert _renamed(catalog(client, copy), DB, copy) == shop.shape
    client.drop_database(copy)

    [drill] = json.loads(site.run("drill", "--json").stdout)
    assert drill["outcome"] == "passed", drill
    collections = {c["collection"] for c in drill["checked"] if "collection" in c}
    assert collections == {f"{DB}.{name}" for name in shop.shape}

    client.drop_database(DB)  # the database is lost: recover brings it back
    recovered = site.run(
        "recover", "--from", f"file://{site.repo}", "--identity", site.identities[0],
        "--only", "db",
    )  # fmt: skip
    assert "db (mongodb)" in recovered.stdout + recovered.stderr
    assert raw_by_id(client, DB) == shop.documents
    assert catalog(client, DB) == shop.shape


def _renamed(shape: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A copy's catalog with its database name put back wherever it shows (an index's
    legacy ``ns``), in the same Python types as ``catalog`` gives."""
    text = json_util.dumps(shape, json_options=CANONICAL_JSON_OPTIONS)
    back = json_util.loads(
        text.replace(f'"{new}.', f'"{old}.'), json_options=CANONICAL_JSON_OPTIONS
    )
    return {name: tuple(entry) for name, entry in back.items()}


@pytest.mark.parametrize("fmt", ["mongodump-archive", "mongodump-dir"])
def test_the_stock_mongorestore_restores_both_export_formats(
    shop: Shop, fmt: str, request: pytest.FixtureRequest
) -> None:
    """On DocumentDB the nearly-16-MiB document goes through FerretDB v2 on the same
    PostgreSQL: the stock mongorestore needs about five minutes to insert it through the
    gateway (v0.106, a debug build; pymongo: a second), the rest goes through the gateway."""
    client, site = shop.server.client, shop.site
    out = site.root / f"export-{fmt}"
    site.run("export", "latest", "--format", fmt, "--to", out)
    copy = f"{DB}_stock"
    where = [f"--archive={out}"] if fmt == "mongodump-archive" else [str(out)]
    rename = [f"--nsFrom={DB}.*", f"--nsTo={copy}.*"]
    routes: list[tuple[str, list[str]]] = [(shop.server.uri, [])]
    if shop.server.name == "documentdb":
        other = request.getfixturevalue("documentdb_ferretdb").uri
        largest = f"{DB}.{shopdb.LARGEST}"
        routes = [
            (shop.server.uri, [f"--nsExclude={largest}"]),
            (other, [f"--nsInclude={largest}"]),
        ]
    try:
        for uri, only in routes:
            run_stock(
                "mongorestore", f"--uri={uri}", *shop.server.stock_restore_flags, *only,
                *rename, *where,
            )  # fmt: skip
        assert raw_by_id(client, copy) == shop.documents
        shape = _renamed(catalog(client, copy), DB, copy)
        if shop.server.keeps_indexes_through_stock_restore:
            assert shape == shop.shape  # indexes, options, the view and the validator
        else:
            assert without_indexes(shape) == without_indexes(shop.shape)
    finally:
        client.drop_database(copy)


def _metadata(data: bytes) -> Any:
    return json_util.loads(data.decode(), json_options=CANONICAL_JSON_OPTIONS)


def test_a_restore_through_ferretdb_v2_fails_naming_the_view_it_lost(
    shop: Shop, request: pytest.FixtureRequest
) -> None:
    """FerretDB v2 answers ok to `create` with viewOn (or a validator) and makes a plain
    collection: the restore reads the options back, names what was lost, exits 1."""
    if shop.server.name != "documentdb":  # FerretDB 1.24 holds no view to lose
        assert "view" in shop.summary["unsupported"]
        return
    ferretdb_v2 = request.getfixturevalue("documentdb_ferretdb")
    copy = f"{DB}_v2"
    proc = shop.site.run(
        "restore", "latest", "--to-uri", ferretdb_v2.uri, "--ns-from", DB, "--ns-to", copy,
        ok=False,
    )  # fmt: skip
    try:
        assert proc.returncode == 1, proc.stderr
        view, _source = shopdb.VIEW
        assert f"{copy}.{view}: view not kept" in proc.stderr, proc.stderr
        assert f"{copy}.{shopdb.VALIDATED}: collection options validator" in proc.stderr
        names = set(shop.server.client[copy].list_collection_names())
        assert view not in names  # the plain collection it made instead is not left behind
        assert raw_by_id(shop.server.client, copy) == shop.documents  # the data is all there
    finally:
        shop.server.client.drop_database(copy)
