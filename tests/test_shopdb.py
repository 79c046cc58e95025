"""The demo shop's MongoDB database, generated on the real test server (FerretDB or mongod)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, WriteError
from servers_mongo import MongoTestServer, ServerStartError

from emberkeep.demo import shopdb

SIZE_MB = 5
SEED = 11
COLLECTIONS = {
    "products", "inventory", "promotions", "customers", "orders",
    "carts", "reviews", "sessions", "events",
}  # fmt: skip
# BSON element types by their type byte (binary also by subtype, see walk_types)
TYPE_NAMES = {
    0x01: "double", 0x02: "string", 0x03: "document", 0x04: "array", 0x05: "binary",
    0x07: "objectid", 0x08: "bool", 0x09: "datetime", 0x0A: "null", 0x0B: "regex",
    0x0D: "code", 0x10: "int32", 0x11: "timestamp", 0x12: "int64", 0x13: "decimal128",
    0x7F: "maxkey", 0xFF: "minkey",
}  # fmt: skip
FIXED_SIZES = {
    0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16,
    0x7F: 0, 0xFF: 0,
}  # fmt: skip
# The element types each extra brings (shopdb.EXTRAS), where the server stores it
EXTRA_TYPES = {
    "bson:code": {"code"}, "bson:minkey_maxkey": {"minkey", "maxkey"},
    "bson:binary_subtypes": {"binary:3", "binary:5", "binary:128"},
}  # fmt: skip
# What FerretDB v1.24.2 (SQLite backend) refuses or silently drops; mongod takes all of it.
FERRETDB_1_24_GAPS = {
    "bson:decimal128", "bson:minkey_maxkey", "bson:code", "bson:dbref", "bson:nested_array",
    "field:dollar_dot", "collection:validator", "view", "index:ttl", "index:partial",
    "index:sparse", "index:text", "index:hashed", "index:2dsphere", "index:wildcard",
    "index:collation", "users",
}  # fmt: skip


def is_ferretdb(summary: dict[str, Any]) -> bool:
    return str(summary["server"]).startswith("FerretDB")


@pytest.fixture(scope="module")
def shop(mongo_client: MongoClient[Any]) -> Iterator[dict[str, Any]]:
    """One generated shop for the read-only tests of this module: its summary."""
    name = "shop_module"
    summary = shopdb.generate(mongo_client, name, size_mb=SIZE_MB, seed=SEED, drop=True)
    yield summary
    mongo_client.drop_database(name)


def raw_docs(client: MongoClient[Any], db: str, collection: str) -> Iterator[bytes]:
    coll = (
        client[db]
        .get_collection(collection)
        .with_options(
            codec_options=client.codec_options.with_options(document_class=RawBSONDocument)
        )
    )
    for doc in coll.find():
        yield doc.raw


def walk_types(raw: bytes, found: set[str], at: int = 4) -> int:
    """Collect the element types of one BSON document (int32 and int64 told apart, which a
    decode to Python would lose); return the offset past it."""
    while raw[at] != 0:
        kind = raw[at]
        at = raw.index(b"\x00", at + 1) + 1  # past the element name
        name = TYPE_NAMES.get(kind, f"unknown:{kind:#x}")
        if kind in (0x03, 0x04):
            found.add(name)
            at = walk_types(raw, found, at + 4) if raw[at + 4] else at + 5
            continue
        if kind in (0x02, 0x0D):
            at += 4 + int.from_bytes(raw[at : at + 4], "little")
        elif kind == 0x05:
            name = f"binary:{raw[at + 4]}"
            at += 5 + int.from_bytes(raw[at : at + 4], "little")
        elif kind == 0x0B:
            at = raw.index(b"\x00", raw.index(b"\x00", at) + 1) + 1
        elif kind in FIXED_SIZES:
            at += FIXED_SIZES[kind]
        else:
            raise AssertionError(f"unexpected BSON type {kind:#x}")
        found.add(name)
    return at + 1


def by_id(client: MongoClient[Any], db: str, collection: str) -> dict[bytes, bytes]:
    """Raw BSON of every document of a collection, keyed by its raw _id."""
    out = {}
    for raw in raw_docs(client, db, collection):
        out[bytes(RawBSONDocument(raw)["_id"].binary)] = raw
    return out


# -- the server --------------------------------------------------------------------------


def test_oplog_records_inserts_updates_deletes(
    mongo_client: MongoClient[Any], mongo_db_name: str
) -> None:
    coll = mongo_client[mongo_db_name]["probe"]
    coll.insert_many([{"_id": 1, "scent": "pine"}, {"_id": 2, "scent": "rose"}])
    coll.update_one({"_id": 1}, {"$set": {"scent": "cedar"}})
    coll.delete_one({"_id": 2})
    entries = list(
        mongo_client.local["oplog.rs"].find({"ns": f"{mongo_db_name}.probe"}).sort("ts", 1)
    )
    assert [e["op"] for e in entries] == ["i", "i", "u", "d"], entries
    assert entries[0]["o"] == {"_id": 1, "scent": "pine"}
    assert entries[2]["o2"] == {"_id": 1}
    assert entries[3]["o"] == {"_id": 2}
    stamps = [e["ts"] for e in entries]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_server_that_cannot_start_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import servers_mongo

    monkeypatch.setattr(servers_mongo, "FERRETDB_BIN", tmp_path / "no-such-ferretdb")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerStartError, match="scripts/setup --test"):
        MongoTestServer(tmp_path, kind="ferretdb").start()


# -- the generated shop ------------------------------------------------------------------


def test_collections_and_counts(mongo_client: MongoClient[Any], shop: dict[str, Any]) -> None:
    db = mongo_client[shop["database"]]
    names = set(db.list_collection_names())
    assert names - {"paid_orders"} == COLLECTIONS
    assert set(shop["counts"]) == COLLECTIONS
    for name in COLLECTIONS:
        assert db[name].count_documents({}) == shop["counts"][name] > 0, name
    assert all(shop["counts"][name] >= shopdb.MIN_DOCS for name in shopdb.SHARES)
    assert shop["counts"]["promotions"] == shopdb.PROMOTIONS
    inventory_rows = sum(len(p["variants"]) for p in db.products.find({}, {"variants.sku": 1}))
    assert shop["counts"]["inventory"] == inventory_rows
    assert SIZE_MB * 2**20 <= shop["total_bytes"] < SIZE_MB * 2**20 * 1.05
    assert shop["oplog"] is True


def test_every_bson_type_occurs(mongo_client: MongoClient[Any], shop: dict[str, Any]) -> None:
    found: set[str] = set()
    for name in COLLECTIONS:
        for raw in raw_docs(mongo_client, shop["database"], name):
            walk_types(raw, found)
    expected = {
        "objectid", "datetime", "double", "int32", "int64", "string", "document", "array",
        "binary:0", "binary:4", "bool", "null", "regex", "timestamp",
    }  # fmt: skip
    assert expected <= found, expected - found
    if shop["money"] == "decimal128":
        assert "decimal128" in found
    else:  # the server refused Decimal128: prices are doubles
        assert "decimal128" not in found and "bson:decimal128" in shop["unsupported"]
    for feature, types in EXTRA_TYPES.items():
        if feature in shop["created"]:
            assert types <= found, (feature, types - found)
        else:
            assert not types & found, feature
    assert not {t for t in found if t.startswith("unknown")}


def test_each_extra_is_in_the_documents_exactly_where_the_server_stores_it(
    mongo_client: MongoClient[Any], shop: dict[str, Any]
) -> None:
    """An extra the server took appears in the documents; one it refused appears nowhere,
    and the summary holds the server's own words for the refusal."""
    db = mongo_client[shop["database"]]
    where: dict[str, tuple[str, dict[str, Any]]] = {
        "bson:date_before_1970": ("customers", {"birth_date": {"$lt": datetime(1970, 1, 1)}}),
        "bson:binary_subtypes": ("customers", {"legacy_id": {"$exists": True}}),
        "bson:regex_flags": ("promotions", {"applies_to_name": {"$exists": True}}),
        "bson:minkey_maxkey": ("promotions", {"tiers": {"$exists": True}}),
        "bson:code": ("promotions", {"eligible": {"$exists": True}}),
        "bson:dbref": ("reviews", {"product_ref": {"$exists": True}}),
        "bson:nested_array": ("products", {"box_cm": {"$exists": True}}),
        "field:dollar_dot": ("products", {"labels": {"$exists": True}}),
    }
    assert set(where) == set(shopdb.EXTRAS)
    for feature, (collection, query) in where.items():
        if feature in shop["created"]:
            assert db[collection].count_documents(query) > 0, feature
        else:
            assert db[collection].count_documents(query) == 0, feature
            assert shop["unsupported"][feature], feature
    if "bson:regex_flags" in shop["created"]:
        promotion = db.promotions.find_one({"applies_to_name": {"$exists": True}}) or {}
        assert promotion["applies_to_name"].flags == re.I | re.M | re.S | re.X


def test_features_created_or_refused_by_the_server(shop: dict[str, Any]) -> None:
    features = {f for f, _c, _i in shopdb.INDEXES} | set(shopdb.EXTRAS) | {
        "bson:decimal128", "collection:capped", "collection:validator", "view", "users",
    }  # fmt: skip
    assert set(shop["created"]) | set(shop["unsupported"]) == features
    assert not set(shop["created"]) & set(shop["unsupported"])
    if is_ferretdb(shop):
        assert set(shop["unsupported"]) == FERRETDB_1_24_GAPS, shop["unsupported"]
    else:
        assert shop["unsupported"] == {}


def test_indexes_present(mongo_client: MongoClient[Any], shop: dict[str, Any]) -> None:
    db = mongo_client[shop["database"]]
    for feature, collection, model in shopdb.INDEXES:
        names = {ix["name"] for ix in db[collection].list_indexes()}
        if feature in shop["created"]:
            assert model.document["name"] in names, (feature, collection, names)
    for collection in COLLECTIONS:
        assert "_id_" in {ix["name"] for ix in db[collection].list_indexes()}
    email = db.customers.find_one()["email"]  # type: ignore[index]
    with pytest.raises(DuplicateKeyError):
        db.customers.insert_one({"email": email})


def test_capped_collection_is_capped(mongo_client: MongoClient[Any], shop: dict[str, Any]) -> None:
    db = mongo_client[shop["database"]]
    options = db[shopdb.CAPPED].options()
    assert options["capped"] is True and options["size"] > 0 and options["max"] > 0
    assert db.command("collStats", shopdb.CAPPED)["capped"] is True
    # nothing was rolled off: the generator sizes the cap at twice what it inserts
    assert db[shopdb.CAPPED].count_documents({}) == shop["counts"][shopdb.CAPPED] < options["max"]


def created(shop: dict[str, Any], feature: str, refusal: str) -> bool:
    """Whether the server made ``feature``; when it did not, assert that it was the
    server's known refusal (FerretDB's gap), not the generator failing, so a test of the
    feature still checks something on every server instead of skipping."""
    if feature in shop["created"]:
        return True
    reason = shop["unsupported"][feature]
    assert is_ferretdb(shop) and refusal in reason, reason
    return False


def test_view_answers_find(mongo_client: MongoClient[Any], shop: dict[str, Any]) -> None:
    if not created(shop, "view", "not implemented"):
        return
    db = mongo_client[shop["database"]]
    rows = list(db[shopdb.VIEW[0]].find())
    paid = db.orders.count_documents({"status": {"$in": ["paid", "shipped", "delivered"]}})
    assert len(rows) == paid > 0
    assert set(rows[0]) == {"_id", "order_number", "customer_id", "total", "created_at"}


def test_validator_rejects_bad_document(
    mongo_client: MongoClient[Any], shop: dict[str, Any]
) -> None:
    if not created(shop, "collection:validator", "not implemented"):
        return
    reviews = mongo_client[shop["database"]][shopdb.VALIDATED]
    good = reviews.find_one({}, {"_id": 0})
    assert good is not None
    with pytest.raises(WriteError) as err:
        reviews.insert_one({**good, "rating": 9})
    assert err.value.code == 121  # DocumentValidationFailure
    with pytest.raises(WriteError):
        reviews.insert_one({"title": "no rating"})
    added = reviews.insert_one({**good, "rating": 4}).inserted_id
    reviews.delete_one({"_id": added})


def test_oplog_has_the_generated_writes(
    mongo_client: MongoClient[Any], shop: dict[str, Any]
) -> None:
    names = ("orders", "customers", shopdb.CAPPED)
    wanted = {"ns": {"$in": [f"{shop['database']}.{n}" for n in names]}, "op": "i"}
    inserts = Counter(e["ns"] for e in mongo_client.local["oplog.rs"].find(wanted, {"ns": 1}))
    for name in names:
        entries = inserts[f"{shop['database']}.{name}"]
        if is_ferretdb(shop):  # one entry per inserted document
            assert entries == shop["counts"][name], name
        else:  # mongod may group a batch into one applyOps entry
            assert entries > 0, name


# -- determinism, refusal, command line --------------------------------------------------


def test_same_seed_same_documents(mongo_client: MongoClient[Any], mongo_db_name: str) -> None:
    other, third = f"{mongo_db_name}_b", f"{mongo_db_name}_c"
    try:
        first = shopdb.generate(mongo_client, mongo_db_name, size_mb=1, seed=5)
        second = shopdb.generate(mongo_client, other, size_mb=1, seed=5)
        assert first["counts"] == second["counts"] and first["bytes"] == second["bytes"]
        for name in COLLECTIONS:
            a = by_id(mongo_client, mongo_db_name, name)
            assert a == by_id(mongo_client, other, name), name
            assert len(a) == first["counts"][name]
        shopdb.generate(mongo_client, third, size_mb=1, seed=6)
        assert by_id(mongo_client, third, "products") != by_id(mongo_client, other, "products")
    finally:
        mongo_client.drop_database(other)
        mongo_client.drop_database(third)


def test_refuses_a_database_that_has_collections(
    mongo_client: MongoClient[Any], mongo_db_name: str
) -> None:
    mongo_client[mongo_db_name].keep.insert_one({"_id": 1})
    with pytest.raises(shopdb.ShopDbError, match="drop"):
        shopdb.generate(mongo_client, mongo_db_name, size_mb=0.2)
    assert mongo_client[mongo_db_name].keep.count_documents({}) == 1
    summary = shopdb.generate(mongo_client, mongo_db_name, size_mb=0.2, drop=True)
    assert "keep" not in mongo_client[mongo_db_name].list_collection_names()
    assert summary["counts"]["orders"] >= shopdb.MIN_DOCS


def test_command_line(mongo_server: MongoTestServer, mongo_db_name: str) -> None:
    cmd = [sys.executable, "-m", "emberkeep.demo.shopdb", "--uri", mongo_server.uri]
    cmd += ["--size-mb", "0.5", "--db", mongo_db_name]
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["database"] == mongo_db_name and set(summary["counts"]) == COLLECTIONS
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1
    assert "--drop" in again.stderr and "Traceback" not in again.stderr
