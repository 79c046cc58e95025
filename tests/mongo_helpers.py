"""What the MongoDB fidelity tests compare: documents byte for byte by ``_id``, and the catalog
(type, options, indexes) of every collection and view; and the two servers they run on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from conftest import Site
from pymongo import MongoClient
from servers_mongo import MongoTestServer

SERVERS = ("ferretdb-1.24", "documentdb")


@dataclass
class Server:
    """A server the round trips run on: FerretDB 1.24 (the oplog) or DocumentDB (the data)."""

    name: str
    uri: str
    client: MongoClient[Any]
    # FerretDB 1.24 refuses the legacy `ns` index option the stock mongorestore sends
    stock_restore_flags: list[str] = field(default_factory=list)

    @property
    def keeps_indexes_through_stock_restore(self) -> bool:
        return "--noIndexRestore" not in self.stock_restore_flags


def server_of(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server of a test module parametrized over ``SERVERS`` (``request.param``)."""
    if request.param == "documentdb":
        documentdb = request.getfixturevalue("documentdb")
        client = documentdb.client()
        try:
            yield Server("documentdb", documentdb.uri, client)
        finally:
            client.close()
        return
    with MongoTestServer(factory.mktemp("ferretdb"), oplog_bytes=64 << 20) as ferretdb:
        client = ferretdb.client()
        try:
            yield Server("ferretdb-1.24", ferretdb.uri, client, ["--noIndexRestore"])
        finally:
            client.close()


def raw_by_id(client: MongoClient[Any], db: str) -> dict[str, dict[str, bytes]]:
    """Every collection's documents as raw BSON keyed by the raw BSON of their ``_id``."""
    out: dict[str, dict[str, bytes]] = {}
    raw = client[db].codec_options.with_options(document_class=RawBSONDocument)
    for spec in client[db].list_collections():
        if spec.get("type") == "view":
            continue
        coll = client[db].get_collection(spec["name"], codec_options=raw)
        out[spec["name"]] = {_id_key(doc): doc.raw for doc in coll.find()}
    return out


def _id_key(doc: RawBSONDocument) -> str:
    import bson

    return bson.encode({"_id": doc["_id"]}).hex()


def catalog(client: MongoClient[Any], db: str) -> dict[str, Any]:
    """Type, options and indexes (by name) of every collection and view."""
    result = {}
    for spec in client[db].list_collections():
        indexes = {}
        if spec.get("type") != "view":
            indexes = {i["name"]: dict(i) for i in client[db][spec["name"]].list_indexes()}
        result[spec["name"]] = (spec.get("type"), spec.get("options"), indexes)
    return result


def without_indexes(shape: dict[str, Any]) -> dict[str, Any]:
    return {name: (kind, options) for name, (kind, options, _ix) in shape.items()}


def mongo_site(site: Site, uri: str, databases: list[str], extra: str = "") -> None:
    source = (
        "[[sources]]\n"
        'name = "db"\n'
        'type = "mongodb"\n'
        f"uri = {json.dumps(uri)}\n"
        f"databases = {json.dumps(databases)}\n"
        f"{extra}\n"
    )
    site.write_config(extra_sources=source)
    site.run("init")


def dump_files(root: Path) -> dict[str, bytes]:
    """A dump folder's files (relative path -> bytes), gzip-decompressed where gzipped."""
    import gzip

    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        name = str(path.relative_to(root))
        if name.endswith(".gz"):
            data, name = gzip.decompress(data), name.removesuffix(".gz")
        out[name] = data
    return out
