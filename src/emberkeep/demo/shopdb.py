"""Generate the candle shop's MongoDB database (``candle-ecommerce``) on a real server.

Collections: products (variants, scents), inventory, promotions, customers, orders (line
items), carts, reviews (with a validator), sessions (TTL index), events (capped), and the view
``paid_orders``; with ``largest_document``, ``media`` holding one document of nearly 16 MiB
(MongoDB's limit). Indexes: unique, compound, unique compound, multikey, TTL, partial, sparse,
text, hashed, 2dsphere, wildcard, collation. The application's user (``APP_USER``, password
``app_password(seed)``, readWrite on the database). Each server feature is tried, BSON types
beyond the basic ones (``EXTRAS``) by a probe document read back byte for byte; what the server
refuses (or accepts and silently drops or alters) is recorded in the summary instead of
failing, and documents hold only what the server stores, so the same generator seeds FerretDB
1.24, DocumentDB and a real mongod. Documents are made in a deterministic order from ``seed``
and inserted as raw BSON in batches by worker threads while the next batch is being made.

    python -m emberkeep.demo.shopdb --uri mongodb://127.0.0.1:27017 --size-mb 50 [--drop]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
from bson import Binary, Code, DBRef, Decimal128, MaxKey, MinKey, ObjectId, Regex
from bson.raw_bson import RawBSONDocument
from pymongo import TEXT, IndexModel, MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError, WriteError

from . import shopdocs
from .shopdocs import Doc, Shop

DB_NAME = "candle-ecommerce"
MIB = 1 << 20
BATCH_DOCS = 1000
BATCH_BYTES = 4 * MIB
MIN_DOCS = 20  # every collection gets some documents, however small the size
PROMOTIONS = 12
# how the bytes left after products, inventory and promotions are shared
SHARES = {
    "customers": 0.13,
    "orders": 0.42,
    "carts": 0.10,
    "reviews": 0.10,
    "sessions": 0.20,
    "events": 0.05,
}
MAKERS: dict[str, Callable[[random.Random, int, Shop], Doc]] = {
    "customers": shopdocs.customer,
    "orders": shopdocs.order,
    "carts": shopdocs.cart,
    "reviews": shopdocs.review,
    "sessions": shopdocs.session,
    "events": shopdocs.event,
}
CAPPED = "events"
VIEW = ("paid_orders", "orders")
VIEW_PIPELINE: list[Doc] = [
    {"$match": {"status": {"$in": ["paid", "shipped", "delivered"]}}},
    {"$project": {"order_number": 1, "customer_id": 1, "total": 1, "created_at": 1}},
]
VALIDATED = "reviews"
# The required fields as query conditions next to the schema: DocumentDB's $jsonSchema
# lacks "required" (it fails every insert with "Unknown $jsonSchema keyword").
VALIDATOR: Doc = {
    "$jsonSchema": {
        "bsonType": "object",
        "properties": {
            "rating": {"bsonType": "int", "minimum": 1, "maximum": 5},
            "title": {"bsonType": "string", "maxLength": 200},
            "verified_purchase": {"bsonType": "bool"},
        },
    },
    **{name: {"$exists": True} for name in ("product_id", "customer_id", "rating", "created_at")},
}


# BSON shapes beyond the basic types (see shopdocs): each is probed with this value and kept
# in the documents only when the server gives the probe back byte for byte.
EXTRAS: dict[str, Any] = {
    "bson:date_before_1970": datetime(1961, 4, 12, 6, 7, tzinfo=UTC),
    "bson:binary_subtypes": [Binary(b"\x01" * 16, 3), Binary(b"\x02" * 16, 5), Binary(b"t", 0x80)],
    "bson:regex_flags": Regex("^soy .*candle$", "imsx"),
    "bson:minkey_maxkey": [MinKey(), MaxKey()],
    "bson:code": Code("function () { return this.total >= 50; }"),
    "bson:dbref": DBRef("products", ObjectId(b"candle-probe")),
    "bson:nested_array": [[1, 2], [[3], [4, [5]]]],
    "field:dollar_dot": {"$locale": "en-US", "burn.time": "40h"},
}
LARGEST = "media"  # the collection of the nearly-16-MiB document
LARGEST_BYTES = 16 * MIB - 4096  # BSON size of that document, under MongoDB's 16 MiB limit
APP_USER = "candle-app"


def app_password(seed: int) -> str:
    """The generated application user's password (demo data, derived from the seed)."""
    return f"candle-app-{seed}"


def _ix(name: str, *keys: tuple[str, Any], **options: Any) -> IndexModel:
    return IndexModel(list(keys), name=name, **options)


# (feature, collection, index): a feature is created when all of its indexes are
INDEXES: list[tuple[str, str, IndexModel]] = [
    ("index:unique", "products", _ix("sku_unique", ("sku", 1), unique=True)),
    ("index:unique", "customers", _ix("email_unique", ("email", 1), unique=True)),
    ("index:unique", "orders", _ix("order_number_unique", ("order_number", 1), unique=True)),
    ("index:compound", "orders", _ix("customer_recent", ("customer_id", 1), ("created_at", -1))),
    ("index:compound", "reviews", _ix("product_recent", ("product_id", 1), ("created_at", -1))),
    (
        "index:unique_compound",
        "inventory",
        _ix("product_sku_unique", ("product_id", 1), ("sku", 1), unique=True),
    ),
    ("index:multikey", "products", _ix("scents", ("scents", 1))),
    ("index:multikey", "orders", _ix("item_sku", ("items.sku", 1))),
    ("index:ttl", "sessions", _ix("expires_ttl", ("expires_at", 1), expireAfterSeconds=0)),
    (
        "index:partial",
        "orders",
        _ix(
            "pending_by_created",
            ("created_at", 1),
            partialFilterExpression={"status": "pending"},
        ),
    ),
    ("index:sparse", "customers", _ix("stripe_sparse", ("stripe_customer_id", 1), sparse=True)),
    (
        "index:text",
        "products",
        _ix(
            "search_text",
            ("name", TEXT),
            ("description", TEXT),
            ("tags", TEXT),
            weights={"name": 10, "tags": 5},
        ),
    ),
    ("index:hashed", "carts", _ix("session_hashed", ("session_token", "hashed"))),
    ("index:2dsphere", "customers", _ix("address_geo", ("addresses.geo", "2dsphere"))),
    ("index:wildcard", "products", _ix("attributes_wildcard", ("attributes.$**", 1))),
    (
        "index:collation",
        "customers",
        _ix(
            "name_ci",
            ("name.last", 1),
            ("name.first", 1),
            collation={"locale": "en", "strength": 2},
        ),
    ),
]
KEPT_OPTIONS = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression", "collation")


class ShopDbError(Exception):
    """The database cannot be generated as asked (for example: it is not empty)."""


@dataclass
class Features:
    """What the server did with each feature: created, or refused with its reason."""

    created: list[str] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)

    def attempt(self, feature: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except PyMongoError as exc:
            self.refuse(feature, f"{type(exc).__name__}: {_first_line(exc)}")
            return False
        if feature not in self.unsupported and feature not in self.created:
            self.created.append(feature)
        return True

    def refuse(self, feature: str, reason: str) -> None:
        self.unsupported.setdefault(feature, reason)
        if feature in self.created:
            self.created.remove(feature)


class _Writer:
    """Inserts batches on worker threads, a bounded number in flight (memory stays flat)."""

    def __init__(self, db: Database[Any], workers: int) -> None:
        self.db = db
        self.pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="shopdb")
        self.pending: deque[Future[object]] = deque()
        self.limit = 2 * max(workers, 1)

    def insert(self, name: str, docs: list[RawBSONDocument], *, in_order: bool = False) -> None:
        if in_order:  # a capped collection keeps insertion order: one batch at a time
            self.drain()
            self.db[name].insert_many(docs, ordered=True)
            return
        while len(self.pending) >= self.limit:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self.db[name].insert_many, docs, ordered=False))

    def drain(self) -> None:
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Run:
    db: Database[Any]
    seed: int
    shop: Shop
    writer: _Writer
    features: Features
    counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def rng(self, collection: str) -> random.Random:
        return random.Random(f"{self.seed}/{collection}")

    def write(self, name: str, docs: Iterator[Doc], *, budget: int = 0) -> None:
        """Insert ``docs`` until ``budget`` BSON bytes (and MIN_DOCS) are reached or it ends."""
        in_order = name == CAPPED
        batch: list[RawBSONDocument] = []
        batch_bytes = count = total = 0
        for doc in docs:
            raw = bson.encode(doc)
            batch.append(RawBSONDocument(raw))
            batch_bytes += len(raw)
            count += 1
            if len(batch) >= BATCH_DOCS or batch_bytes >= BATCH_BYTES:
                self.writer.insert(name, batch, in_order=in_order)
                total += batch_bytes
                batch, batch_bytes = [], 0
            if budget and total + batch_bytes >= budget and count >= MIN_DOCS:
                break
        if batch:
            self.writer.insert(name, batch, in_order=in_order)
        self.counts[name] = count
        self.sizes[name] = total + batch_bytes


# -- public --------------------------------------------------------------------------------


def generate(
    client: MongoClient[Any],
    db_name: str = DB_NAME,
    size_mb: float = 20,
    seed: int = 2026,
    *,
    drop: bool = False,
    workers: int = 2,
    largest_document: bool = False,
    users: bool = True,
) -> dict[str, Any]:
    """Generate the shop's database of about ``size_mb`` MiB of BSON; return a summary.

    The summary has ``counts`` and ``bytes`` per collection, ``created`` (features the server
    took) and ``unsupported`` (feature -> the server's refusal), ``money`` (the BSON type of
    prices), ``oplog`` (whether the server keeps one), ``users`` (name -> password of the
    users it made), ``seconds`` and ``mb_per_s``. ``largest_document`` adds the nearly
    16 MiB document (``LARGEST``; feature ``document:16mib``), beyond ``size_mb``.
    """
    start = time.perf_counter()
    db = client[db_name]
    _prepare(client, db, drop)
    features = Features()
    money = _money_type(db, features)
    extras = _probe_extras(db, features)
    shop = Shop(_salt(seed), money, extras)
    run = _Run(db, seed, shop, _Writer(db, workers), features)
    try:
        _create_collections(run, int(size_mb * MIB))
        _fill(run, int(size_mb * MIB))
    finally:
        run.writer.close()
    if largest_document:
        _largest_document(run)
    _create_indexes(run)
    _create_view(run)
    made_users = _create_users(run) if users else {}
    seconds = time.perf_counter() - start
    total = sum(run.sizes.values())
    return {
        "database": db_name,
        "seed": seed,
        "size_mb": size_mb,
        "server": _server(client),
        "oplog": _has_oplog(client),
        "money": "decimal128" if money is shopdocs.decimal_money else "double",
        "counts": run.counts,
        "bytes": run.sizes,
        "total_bytes": total,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / MIB / seconds, 2) if seconds else 0.0,
        "created": features.created,
        "unsupported": features.unsupported,
        "users": made_users,
    }


# -- steps ---------------------------------------------------------------------------------


def _prepare(client: MongoClient[Any], db: Database[Any], drop: bool) -> None:
    if drop:  # a database's users outlive dropDatabase
        with contextlib.suppress(PyMongoError):
            db.command("dropAllUsersFromDatabase")
    if not db.list_collection_names():
        return
    if not drop:
        raise ShopDbError(
            f"database {db.name!r} already has collections: pass drop=True (--drop) to replace it"
        )
    client.drop_database(db.name)


def _probe_extras(db: Database[Any], features: Features) -> frozenset[str]:
    """The ``EXTRAS`` the server stores byte for byte; the others refused with what it did."""
    probe = db["_shopdb_probe"]
    raw = probe.with_options(
        codec_options=probe.codec_options.with_options(document_class=RawBSONDocument)
    )
    kept = []
    try:
        for n, (feature, value) in enumerate(EXTRAS.items()):
            sent = bson.encode({"_id": n, "v": value})
            try:
                _insert(db, probe.name, [RawBSONDocument(sent)])
                back = raw.find_one({"_id": n})
            except PyMongoError as exc:
                features.refuse(feature, f"{type(exc).__name__}: {_first_line(exc)}")
                continue
            if back is None or back.raw != sent:
                got = "nothing" if back is None else repr(bson.decode(back.raw).get("v"))
                features.refuse(feature, f"stored, but read back as {got[:120]}")
                continue
            features.created.append(feature)
            kept.append(feature)
    finally:
        with contextlib.suppress(PyMongoError):
            db.drop_collection(probe.name)
    return frozenset(kept)


def _largest_document(run: _Run) -> None:
    """One product video of nearly 16 MiB: the largest document MongoDB takes."""
    rng = run.rng(LARGEST)
    head = {"_id": ObjectId(b"candle-video"), "kind": "hero_video", "sku": "CND-ALL", "data": b""}
    padding = LARGEST_BYTES - len(bson.encode(head))
    doc = {**head, "data": Binary(rng.randbytes(padding))}
    raw = bson.encode(doc)

    def insert() -> None:
        _insert(run.db, LARGEST, [RawBSONDocument(raw)])

    if run.features.attempt("document:16mib", insert):
        run.counts[LARGEST], run.sizes[LARGEST] = 1, len(raw)


def _create_users(run: _Run) -> dict[str, str]:
    """The application's user with readWrite on the shop's database; the roles it ends up
    with are checked (a server may replace them)."""
    password = app_password(run.seed)
    wanted = [{"role": "readWrite", "db": run.db.name}]
    create = functools.partial(run.db.command, "createUser", APP_USER, pwd=password, roles=wanted)
    if not run.features.attempt("users", create):
        return {}
    try:
        info = run.db.command("usersInfo", APP_USER).get("users") or [{}]
    except PyMongoError as exc:
        run.features.refuse("users", f"created, but usersInfo failed: {_first_line(exc)}")
        return {APP_USER: password}
    roles = [{"role": r.get("role"), "db": r.get("db")} for r in info[0].get("roles", [])]
    if roles != wanted:
        run.features.refuse("users", f"created, but with the roles {roles} instead of {wanted}")
    return {APP_USER: password}


def _money_type(db: Database[Any], features: Features) -> shopdocs.Money:
    """Decimal128 where the server stores it; FerretDB 1.x drops the connection instead."""
    probe = db["_shopdb_probe"]
    try:
        # a plain command: a retried insert would wait out a second dropped connection
        _insert(db, probe.name, [{"_id": 0, "price": Decimal128("19.99")}])
        back = probe.find_one({"_id": 0}) or {}
        if not isinstance(back.get("price"), Decimal128):
            features.refuse("bson:decimal128", f"read back as {type(back.get('price')).__name__}")
            return shopdocs.float_money
    except PyMongoError as exc:
        features.refuse("bson:decimal128", f"{type(exc).__name__}: {_first_line(exc)}")
        return shopdocs.float_money
    finally:
        with contextlib.suppress(PyMongoError):
            db.drop_collection(probe.name)
    features.created.append("bson:decimal128")
    return shopdocs.decimal_money


def _create_collections(run: _Run, size: int) -> None:
    """The collections whose options are set at creation: capped, validated."""
    budget = max(int(size * SHARES[CAPPED]), 64 * 1024)  # at least what events will hold
    cap = -(-2 * budget // 256) * 256 + MIB  # twice the documents: nothing is rolled off
    run.features.attempt(
        "collection:capped",
        lambda: run.db.create_collection(CAPPED, capped=True, size=cap, max=budget // 50),
    )
    created = run.features.attempt(
        "collection:validator",
        lambda: run.db.create_collection(
            VALIDATED, validator=VALIDATOR, validationLevel="strict", validationAction="error"
        ),
    )
    if created and not run.features.attempt("collection:validator", lambda: _validates(run)):
        run.db.drop_collection(VALIDATED)  # it would fail every insert
        created = False
    if not created:
        run.db.create_collection(VALIDATED)


def _validates(run: _Run) -> None:
    """A valid review goes in (a server may take a validator it cannot apply)."""
    good = {"_id": 0, "product_id": 0, "customer_id": 0, "rating": 5, "created_at": 0}
    _insert(run.db, VALIDATED, [good])
    run.db[VALIDATED].delete_one({"_id": 0})


def _fill(run: _Run, size: int) -> None:
    run.write("products", _each(run, "products", shopdocs.product, _product_count(size)))
    run.write("inventory", _inventory(run))
    run.write("promotions", _each(run, "promotions", shopdocs.promotion, PROMOTIONS))
    left = max(size - sum(run.sizes.values()), 0)
    for name, share in SHARES.items():
        run.write(name, _each(run, name, MAKERS[name]), budget=int(left * share))


def _product_count(size: int) -> int:
    return min(max(round(size / MIB * 6), 24), 3000)


def _each(
    run: _Run, name: str, make: Callable[[random.Random, int, Shop], Doc], count: int = 0
) -> Iterator[Doc]:
    """Documents of one collection from its own generator: endless unless ``count``."""
    rng = run.rng(name)
    n = 0
    while not count or n < count:
        yield make(rng, n, run.shop)
        n += 1


def _inventory(run: _Run) -> Iterator[Doc]:
    rng = run.rng("inventory")
    n = 0
    for prod in run.shop.products:
        for sku in prod.skus:
            yield shopdocs.inventory(rng, n, run.shop, prod, sku)
            n += 1


def _create_indexes(run: _Run) -> None:
    """Each collection's indexes in one command, the collections at once (DocumentDB builds
    every index in a background job it polls every second or two); where a collection's
    command fails, its indexes are tried one by one (at once too), so each refusal is told
    to its own feature."""
    by_collection: dict[str, list[IndexModel]] = {}
    for _feature, collection, model in INDEXES:
        by_collection.setdefault(collection, []).append(model)
    together = _all_at_once(
        [functools.partial(run.db[c].create_indexes, models) for c, models in by_collection.items()]
    )
    failed_collections = {c for c, exc in zip(by_collection, together, strict=True) if exc}
    alone = [(f, c, m) for f, c, m in INDEXES if c in failed_collections]
    refusals = _all_at_once(
        [functools.partial(run.db[c].create_indexes, [m]) for _f, c, m in alone]
    )
    refused = {
        (f, m.document["name"]): exc for (f, _c, m), exc in zip(alone, refusals, strict=True)
    }
    failed: set[str] = set()
    for feature, _collection, model in INDEXES:
        exc = refused.get((feature, model.document["name"]))
        if exc is not None:
            run.features.refuse(feature, f"{type(exc).__name__}: {_first_line(exc)}")
            failed.add(feature)
        elif feature not in run.features.unsupported and feature not in run.features.created:
            run.features.created.append(feature)
    for feature, collection, model in INDEXES:
        if feature not in failed:
            _check_kept(run, feature, collection, model)


def _all_at_once(calls: list[Callable[[], object]]) -> list[PyMongoError | None]:
    """Run ``calls`` in parallel; each one's driver error, or None."""

    def call(fn: Callable[[], object]) -> PyMongoError | None:
        try:
            fn()
        except PyMongoError as exc:
            return exc
        return None

    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="shopdb-index") as pool:
        return list(pool.map(call, calls))


def _check_kept(run: _Run, feature: str, collection: str, model: IndexModel) -> None:
    """A server may accept an index option and drop it (FerretDB 1.24 does with ``sparse``)."""
    spec = model.document
    info = {ix["name"]: ix for ix in run.db[collection].list_indexes()}.get(spec["name"])
    if info is None:
        run.features.refuse(feature, f"index {spec['name']} missing after creation")
        return
    for option in KEPT_OPTIONS:
        if option in spec and option not in info:
            run.features.refuse(
                feature, f"accepted, but listIndexes shows no {option!r} on {spec['name']}"
            )


def _create_view(run: _Run) -> None:
    name, source = VIEW
    run.features.attempt(
        "view", lambda: run.db.create_collection(name, viewOn=source, pipeline=VIEW_PIPELINE)
    )


# -- small helpers -------------------------------------------------------------------------


def _insert(db: Database[Any], collection: str, documents: list[Any]) -> None:
    """An ``insert`` command, which is never retried (a probe that makes FerretDB drop the
    connection must not wait out a second one); a write error raises."""
    reply = db.command("insert", collection, documents=documents)
    errors = reply.get("writeErrors") or []
    if errors:
        raise WriteError(errors[0].get("errmsg", "write error"), errors[0].get("code"), errors[0])


def _salt(seed: int) -> int:
    return random.Random(f"{seed}/salt").getrandbits(16)


def _first_line(exc: BaseException) -> str:
    text = str(exc).split(", full error:")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def _server(client: MongoClient[Any]) -> str:
    info = client.admin.command("buildInfo")
    if "ferretdbVersion" in info:
        return f"FerretDB {info['ferretdbVersion']} (MongoDB {info.get('version')})"
    return f"MongoDB {info.get('version')}"


def _has_oplog(client: MongoClient[Any]) -> bool:
    try:
        return "oplog.rs" in client["local"].list_collection_names()
    except PyMongoError:
        return False


# -- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emberkeep.demo.shopdb", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--uri", default="mongodb://127.0.0.1:27017/?directConnection=true")
    parser.add_argument("--db", default=DB_NAME, help=f"database name (default {DB_NAME})")
    parser.add_argument("--size-mb", type=float, default=20, help="BSON size to generate")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--workers", type=int, default=2, help="insert threads")
    parser.add_argument("--drop", action="store_true", help="replace an existing database")
    args = parser.parse_args(argv)
    client: MongoClient[Any] = MongoClient(args.uri, serverSelectionTimeoutMS=10_000)
    try:
        summary = generate(
            client, args.db, args.size_mb, args.seed, drop=args.drop, workers=args.workers
        )
    except (ShopDbError, PyMongoError) as exc:
        print(f"shopdb: {_first_line(exc)}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
