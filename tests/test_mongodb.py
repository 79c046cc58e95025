"""The mongodb source against a real server (FerretDB; mongod with EMBERKEEP_TEST_MONGO=mongod).

Consistency under concurrent writes, restore selection and refusal, users, and every bad
input the issue names (the shop's byte-for-byte round trip, on FerretDB 1.24 and
DocumentDB, is test_mongo_fidelity's). Each test gets its own database; servers
with special settings (no oplog, a tiny oplog, authentication) are started by the tests
that need them.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from conftest import Site
from mongo_helpers import mongo_site, raw_by_id
from pymongo import MongoClient
from pymongo.errors import OperationFailure
from servers_mongo import MongoTestServer, client_of, module_server

from emberkeep import config
from emberkeep.runner.backup import run_backup
from emberkeep.site import Site as ApiSite
from emberkeep.sources.mongodb import dump
from emberkeep.sources.mongodb.catalog import CollectionInfo


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTestServer]:
    yield from module_server(tmp_path_factory, "mongo-src", 32 << 20)


@pytest.fixture(scope="module")
def client(server: MongoTestServer) -> Iterator[MongoClient[Any]]:
    yield from client_of(server)


_names = iter(range(1, 1 << 20))


@pytest.fixture
def db_name(client: MongoClient[Any]) -> Iterator[str]:
    name = f"shop{next(_names)}"
    yield name
    for db in client.list_database_names():
        if db.startswith(name):
            client.drop_database(db)


def test_snapshot_is_mongodump_layout(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    client[db_name].items.insert_many([{"_id": i, "n": i} for i in range(50)])
    client[db_name].items.create_index("n", unique=True)
    mongo_site(site, server.uri, [db_name])
    site.run("backup")
    out = site.root / "files"
    site.run("restore", "latest", "/", "--to", out)
    assert (out / db_name / "items.bson").stat().st_size > 0
    meta = json.loads((out / db_name / "items.metadata.json").read_text())
    # mongodump's order; no options, so no "options" (omitempty; see test_mongo_fidelity)
    assert list(meta) == ["indexes", "uuid", "collectionName", "type"]
    assert meta["collectionName"] == "items" and meta["type"] == "collection"
    index = next(i for i in meta["indexes"] if i["name"] == "n_1")
    assert index["key"] == {"n": {"$numberInt": "1"}} and index["unique"] is True
    assert index["v"] == {"$numberInt": "2"}  # canonical Extended JSON, as mongodump writes
    record = json.loads((out / "emberkeep-mongodb.json").read_text())
    [items] = [c for c in record["collections"] if c["name"] == "items"]
    assert items["count"] == 50 and len(items["digest"]) == 32
    assert (out / "oplog.bson").exists()


def test_restore_refuses_non_empty_then_drop_and_rename_and_single(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    client[db_name].a.insert_many([{"_id": i, "v": "a"} for i in range(30)])
    client[db_name].b.insert_many([{"_id": i, "v": "b"} for i in range(20)])
    mongo_site(site, server.uri, [db_name])
    site.run("backup")
    client[db_name].a.insert_one({"_id": 999, "v": "new since"})

    refused = site.run("restore", "latest", "--to-uri", server.uri, ok=False)
    assert refused.returncode == 2
    assert f"{db_name}.a already exists and is not empty" in refused.stderr
    assert "--drop" in refused.stderr
    assert client[db_name].a.count_documents({}) == 31  # nothing was touched

    site.run("restore", "latest", "--to-uri", server.uri, "--drop")
    assert client[db_name].a.count_documents({}) == 30

    other = f"{db_name}_copy"
    unset = site.run("restore", "latest", "--to-uri", "env:EK_TEST_TO_URI", ok=False)
    assert unset.returncode == 2 and "EK_TEST_TO_URI is not set" in unset.stderr, unset.stderr
    site.env["EK_TEST_TO_URI"] = server.uri  # the URI from the environment, not argv
    site.run("restore", "latest", "--to-uri", "env:EK_TEST_TO_URI", "--ns-from", db_name,
             "--ns-to", other)  # fmt: skip
    assert sorted(client[other].list_collection_names()) == ["a", "b"]
    assert client[other].b.find_one({"_id": 3}) == {"_id": 3, "v": "b"}

    single = f"{db_name}_one"
    site.run(
        "restore", "latest", "--to-uri", server.uri, "--db", db_name, "--collection", "b",
        "--ns-from", f"{db_name}.b", "--ns-to", f"{single}.bee",
    )  # fmt: skip
    assert client[single].list_collection_names() == ["bee"]
    assert client[single].bee.count_documents({}) == 20

    bad = site.run("restore", "latest", "--to-uri", server.uri, "--collection", "b", ok=False)
    assert bad.returncode == 2 and "--collection needs --db" in bad.stderr


def test_a_lost_pack_fails_a_drop_restore_before_anything_is_dropped(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    blob = os.urandom(1 << 20)  # incompressible: 40 documents fill three packs
    client[db_name].media.insert_many([{"_id": i, "data": blob[i:] + blob[:i]} for i in range(40)])
    mongo_site(site, server.uri, [db_name])
    site.run("backup")
    packs = sorted(
        (p for p in (site.repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime
    )
    # the first pack holds the metadata files too, the last the dump's record: a middle one
    # holds documents only, read only once the restore has begun writing
    assert len(packs) >= 3, packs
    packs[1].unlink()
    client[db_name].media.insert_one({"_id": "live", "data": b"written since"})

    lost = site.run("restore", "latest", "--to-uri", server.uri, "--drop", ok=False)
    assert lost.returncode == 1 and "pack is missing" in lost.stderr, lost.stderr
    assert client[db_name].media.count_documents({}) == 41  # untouched: not dropped


class Writer:
    """One thread writing inserts, updates and deletes in sequence, each logged in order.

    With one writer every operation is one oplog entry, in the same order, so the state
    at an oplog point is the initial state with the first k logged operations applied.
    """

    def __init__(self, client: MongoClient[Any], db: str, initial: int) -> None:
        self.coll = client[db].live
        self.rng = random.Random(7)
        self.model: dict[int, dict[str, Any]] = {
            i: {"_id": i, "v": 0, "tag": "start"} for i in range(initial)
        }
        self.coll.insert_many([dict(d) for d in self.model.values()])
        self.initial = {k: dict(v) for k, v in self.model.items()}
        self.log: list[tuple[float, str, int, dict[str, Any] | None]] = []
        self.next_id = initial
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            kind = self.rng.choice("iuud")
            if kind == "i" or len(self.model) < 10:
                doc: dict[str, Any] = {"_id": self.next_id, "v": seq, "tag": "inserted"}
                self.next_id += 1
                self.coll.insert_one(dict(doc))
                self.model[doc["_id"]] = doc
                self.log.append((time.time(), "i", doc["_id"], doc))
            elif kind == "u":
                key = self.rng.choice(list(self.model))
                if self.rng.random() < 0.3:
                    self.coll.update_one({"_id": key}, {"$set": {"v": seq}, "$unset": {"tag": 1}})
                    new = {k: v for k, v in self.model[key].items() if k != "tag"} | {"v": seq}
                else:
                    self.coll.update_one({"_id": key}, {"$set": {"v": seq, "x": "y" * 50}})
                    new = self.model[key] | {"v": seq, "x": "y" * 50}
                self.model[key] = new
                self.log.append((time.time(), "u", key, dict(new)))
            else:
                key = self.rng.choice(list(self.model))
                self.coll.delete_one({"_id": key})
                del self.model[key]
                self.log.append((time.time(), "d", key, None))
            time.sleep(0.002)

    def state_after(self, k: int) -> dict[int, dict[str, Any]]:
        state = {key: dict(doc) for key, doc in self.initial.items()}
        for _t, op, key, doc in self.log[:k]:
            if op == "d":
                del state[key]
            else:
                state[key] = dict(doc or {})
        return state


def test_backup_under_writes_restores_the_recorded_point(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    # a filler collection slow enough to read that many writes land during the dump
    filler = [
        {"_id": i, "items": [{"k": j, "s": "z" * 20} for j in range(30)]} for i in range(3000)
    ]
    client[db_name].filler.insert_many(filler)
    writer = Writer(client, db_name, initial=300)
    mongo_site(site, server.uri, [db_name])
    writer.thread.start()
    try:
        time.sleep(0.3)
        started = len(writer.log)
        [out] = site.json("backup")
        ended = len(writer.log)
        time.sleep(0.3)
    finally:
        writer.stop.set()
        writer.thread.join()
    assert ended - started > 20, "the writer should have written during the dump"
    point = out["snapshot"]["extra"]["mongodb"]
    assert point["point_in_time"] is True
    end = point["oplog_end"]

    from bson import Timestamp

    oplog = client.local["oplog.rs"]
    entries = [
        e for e in oplog.find({"ns": f"{db_name}.live"}, {"ts": 1, "op": 1, "o2": 1, "o": 1})
    ]
    k = sum(1 for e in entries if e["ts"] <= Timestamp(end["t"], end["i"]))
    first_live = len(writer.initial)  # the initial insert_many logged one entry per document
    k -= first_live
    assert started <= k <= ended + 5, (started, k, ended)
    expected = writer.state_after(k)

    restored = f"{db_name}_at_point"
    site.run("restore", "latest", "--to-uri", server.uri, "--ns-from", db_name, "--ns-to", restored)
    got = {doc["_id"]: doc for doc in client[restored].live.find()}
    assert got == expected
    assert client[restored].filler.count_documents({}) == 3000


def test_server_without_oplog_works_but_is_not_point_in_time(site: Site, tmp_path: Path) -> None:
    with MongoTestServer(tmp_path / "srv", oplog_bytes=0) as plain:
        c = plain.client()
        c.plain.things.insert_many([{"_id": i} for i in range(10)])
        mongo_site(site, plain.uri, ["plain"])
        [out] = site.json("backup")
        header = out["snapshot"]["extra"]["mongodb"]
        assert header["point_in_time"] is False and header["consistent_at"] is None
        c.drop_database("plain")
        proc = site.run("restore", "latest", "--to-uri", plain.uri)
        assert "not a point-in-time snapshot" in proc.stderr and "no oplog" in proc.stderr
        assert c.plain.things.count_documents({}) == 10


def test_oplog_rolled_over_during_dump_fails_and_commits_nothing(
    site: Site, tmp_path: Path
) -> None:
    # FerretDB trims capped collections in the background: every 100 ms here, not each minute
    trim = ("--test-capped-cleanup-interval=100ms", "--test-capped-cleanup-percentage=50")
    with MongoTestServer(tmp_path / "srv", oplog_bytes=64 << 10, extra_args=trim) as small:
        c = small.client()
        c.shop.filler.insert_many(
            [{"_id": i, "items": [{"k": j, "s": "z" * 20} for j in range(30)]} for i in range(3000)]
        )
        mongo_site(site, small.uri, ["shop"])
        stop = threading.Event()

        def churn() -> None:
            while not stop.is_set():
                c.shop.churn.insert_many([{"pad": "p" * 1000} for _ in range(20)])

        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        try:
            proc = site.run("backup", ok=False)
        finally:
            stop.set()
            thread.join()
        assert proc.returncode == 1
        assert "oplog rolled over during the dump" in proc.stderr
        assert "no snapshot was made" in proc.stderr
        assert site.snapshots() == []


def test_unreachable_server_is_a_clear_error(site: Site) -> None:
    from servers_mongo import free_port

    uri = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=1500"
    mongo_site(site, uri, ["shop"])
    started = time.monotonic()
    proc = site.run("backup", ok=False)
    assert time.monotonic() - started < 30
    assert proc.returncode == 1
    assert "source db: cannot reach MongoDB at mongodb://127.0.0.1:" in proc.stderr
    assert site.snapshots() == []


def test_wrong_credentials_are_named_and_password_never_shown(site: Site, tmp_path: Path) -> None:
    with MongoTestServer(tmp_path / "srv", credentials=("backup", "right-pass")) as secured:
        c = secured.client()
        c.shop.things.insert_one({"_id": 1})
        wrong = secured.uri_with(("backup", "hunter2-wrong"))
        mongo_site(site, wrong, ["shop"])
        proc = site.run("backup", ok=False)
        assert proc.returncode == 1
        assert "refused the credentials" in proc.stderr
        assert "mongodb://backup:***@127.0.0.1" in proc.stderr
        assert "hunter2-wrong" not in proc.stderr + proc.stdout
        assert site.snapshots() == []

        mongo_site(site, secured.uri, ["shop"])  # the right ones work
        [out] = site.json("backup")
        assert out["snapshot"]["extra"]["mongodb"]["documents"] == 1


def _logs_in(server: MongoTestServer, user: str, password: str, db: str) -> bool:
    client: MongoClient[Any] = MongoClient(
        server.uri_with((user, password)), authSource=db, serverSelectionTimeoutMS=5000
    )
    try:
        client[db].command("ping")
        return True
    except OperationFailure as exc:
        assert exc.code == 18, exc  # AuthenticationFailed, nothing else
        return False
    finally:
        client.close()


def test_users_come_back_with_their_passwords_into_their_own_database(
    site: Site, tmp_path: Path
) -> None:
    with MongoTestServer(tmp_path / "srv", credentials=("admin", "admin-pass")) as secured:
        c = secured.client()
        c.shop.items.insert_many([{"_id": i} for i in range(3)])
        c.shop.command({"createUser": "app", "pwd": "app-pass", "roles": []})
        mongo_site(site, secured.uri, ["shop"])
        [out] = site.json("backup")
        assert "app-pass" not in json.dumps(out)

        c.shop.command({"dropUser": "app"})
        assert not _logs_in(secured, "app", "app-pass", "shop")
        restored = site.json("restore", "latest", "--to-uri", secured.uri, "--drop")
        assert restored["users_and_roles"] == [
            {"db": "shop", "users": ["shop.app"], "roles": [], "kept": [], "refused": {}}
        ]
        assert _logs_in(secured, "app", "app-pass", "shop")  # the same salted hashes
        assert not _logs_in(secured, "app", "not-the-password", "shop")

        # Without --drop, a user already there is kept and the restore says so.
        c.drop_database("shop")
        proc = site.run("restore", "latest", "--to-uri", secured.uri)
        assert "shop.app (restore with --drop to replace them)" in proc.stderr + proc.stdout
        # Under another name, the data comes back without the users.
        again = site.json("restore", "latest", "--to-uri", secured.uri, "--ns-from", "shop",
                          "--ns-to", "shop_copy")  # fmt: skip
        assert again["users_and_roles"] == []
        assert c.shop_copy.items.count_documents({}) == 3
        assert not _logs_in(secured, "app", "app-pass", "shop_copy")


def test_a_user_granted_roles_beyond_its_database_is_refused_by_name(
    site: Site, tmp_path: Path
) -> None:
    """A snapshot's user records are not trusted: one granting root@admin or a role on
    another database is refused and named, exit 1; the database's own user is restored."""
    with MongoTestServer(tmp_path / "srv", credentials=("admin", "admin-pass")) as secured:
        c = secured.client()
        c.shop.items.insert_many([{"_id": i} for i in range(3)])
        c.shop.command({"createUser": "app", "pwd": "app-pass", "roles": []})
        users = c.admin["system.users"]
        app = users.find_one({"_id": "shop.app"})
        assert app is not None
        forged = [  # what a hostile snapshot could carry for database shop
            {**app, "_id": "shop.evil", "user": "evil", "roles": [{"role": "root", "db": "admin"}]},
            {
                **app,
                "_id": "shop.peek",
                "user": "peek",
                "roles": [{"role": "read", "db": "billing"}],
            },
            {**app, "_id": "admin.boss", "user": "boss"},  # another database's record
        ]
        users.insert_many(forged)
        mongo_site(site, secured.uri, ["shop"])
        site.run("backup")
        users.delete_many({"db": "shop"})

        proc = site.run("restore", "latest", "--to-uri", secured.uri, "--drop", ok=False)
        assert proc.returncode == 1, proc.stderr
        assert "shop.evil: not restored: it grants role root@admin, outside database 'shop'" in (
            proc.stderr
        )
        assert "shop.peek: not restored: it grants role read@billing" in proc.stderr
        assert "admin.boss: not restored: its _id 'admin.boss' is not shop.boss" in proc.stderr
        assert "shop: user shop.app restored" in proc.stdout
        assert sorted(u["_id"] for u in users.find({"db": "shop"})) == ["shop.app"]
        assert _logs_in(secured, "app", "app-pass", "shop")
        assert c.shop.items.count_documents({}) == 3  # the data is restored all the same


def test_database_that_does_not_exist(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    client[db_name].x.insert_one({"_id": 1})
    mongo_site(site, server.uri, [db_name, "no_such_db"])
    proc = site.run("backup", ok=False)
    assert proc.returncode == 1
    assert "database 'no_such_db' does not exist on the server" in proc.stderr
    assert db_name in proc.stderr and "fix `databases`" in proc.stderr
    assert site.snapshots() == []


def test_collection_dropped_during_dump_is_reported(
    site: Site,
    server: MongoTestServer,
    client: MongoClient[Any],
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dropped after the dump listed it, before it is read: the dump's ``before_read`` seam
    drops it at that very point (in-process), so no thread races the dump."""
    client[db_name].aaa_filler.insert_many([{"_id": i, "s": "z" * 20} for i in range(100)])
    client[db_name].zzz_doomed.insert_many([{"_id": i} for i in range(5)])
    mongo_site(site, server.uri, [db_name], extra="parallel = 1")
    dropped: list[str] = []

    def drop_it(info: CollectionInfo) -> None:
        if info.name == "zzz_doomed":
            client[db_name].drop_collection("zzz_doomed")
            dropped.append(info.ns)

    monkeypatch.setattr(dump, "before_read", drop_it)
    outcome = run_backup(ApiSite(config.load(str(site.config_path))), "db")
    assert dropped == [f"{db_name}.zzz_doomed"]
    warnings = {w["path"]: w["message"] for w in outcome.result.warnings}
    assert "dropped during the dump" in warnings[f"{db_name}.zzz_doomed"]


def test_no_temporary_dump_is_written(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str, tmp_path: Path
) -> None:
    """The dump streams into the repository: no file appears in TMPDIR or the state dir
    beyond the repository's own objects, and the disk gains no more than the packs."""
    client[db_name].blobs.insert_many(
        [{"_id": ObjectId(), "data": os.urandom(4096)} for _ in range(1500)]
    )
    tmp = tmp_path / "watched-tmp"
    tmp.mkdir()
    site.env["TMPDIR"] = str(tmp)
    mongo_site(site, server.uri, [db_name])
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for root in (tmp, site.state_dir):
                for path in root.rglob("*"):
                    seen.add(str(path.relative_to(root)))
            time.sleep(0.01)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        [out] = site.json("backup")
    finally:
        stop.set()
        thread.join()
    assert out["snapshot"]["summary"]["bytes"] > 1500 * 4096
    own = (
        "writer.key",
        "cache",
        "scheduler.json",
        "siteconfig-stored.json",
        "snapshots-seen.json",
        "snapshots-seen.lock",
    )
    unexpected = {
        p
        for p in seen
        if p not in own
        and not p.startswith("journal.sqlite")
        and not any(p.startswith(f".{name}.tmp-") for name in own)  # their atomic writes
    }
    assert unexpected == set(), unexpected
    state_bytes = sum(
        p.stat().st_size
        for p in site.state_dir.rglob("*")
        if p.is_file() and not p.name.startswith("journal.sqlite")  # the job journal
    )
    assert state_bytes < 64 << 10


def test_export_formats_match_the_snapshot(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    """mongodump-dir holds the dump layout; the archive parses (by its spec) to the same
    documents and metadata; tar holds the same files. (The stock mongorestore restoring both
    formats, on FerretDB 1.24 and DocumentDB: test_mongo_fidelity.)"""
    import tarfile

    from emberkeep.sources.mongodb.archive_read import read_archive

    client[db_name].items.insert_many([{"_id": i, "n": i, "pad": "x" * i} for i in range(400)])
    client[db_name].empty.insert_one({"_id": 0})
    client[db_name].empty.delete_one({"_id": 0})
    mongo_site(site, server.uri, [db_name])
    site.run("backup")
    raw = raw_by_id(client, db_name)

    out = site.root / "dumpdir"
    site.run("export", "latest", "--format", "mongodump-dir", "--to", out)
    assert sorted(p.name for p in (out / db_name).iterdir()) == [
        "empty.bson", "empty.metadata.json", "items.bson", "items.metadata.json",
    ]  # fmt: skip
    assert (out / "oplog.bson").exists() and not (out / "emberkeep-mongodb.json").exists()
    prelude = json.loads((out / "prelude.json").read_text())  # as mongodump writes it
    assert set(prelude) == {"ServerVersion", "ToolVersion"} and prelude["ServerVersion"]
    from emberkeep.sources.mongodb.record import split_documents

    docs, _used = split_documents((out / db_name / "items.bson").read_bytes())
    assert sorted(docs) == sorted(raw["items"].values())

    archive = site.root / "dump.archive"
    site.run("export", "latest", "--format", "mongodump-archive", "--to", archive)
    with archive.open("rb") as f:
        parsed = read_archive(f)
    assert sorted(parsed.documents(db_name, "items")) == sorted(raw["items"].values())
    assert parsed.documents(db_name, "empty") == []
    meta = json.loads(parsed.metadata[(db_name, "items")]["metadata"])
    assert meta["collectionName"] == "items" and parsed.header["server_version"]

    tar_path = site.root / "dump.tar"
    site.run("export", "latest", "--format", "tar", "--to", tar_path)
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile(f"{db_name}/items.bson")
        assert member is not None and member.read() == (out / db_name / "items.bson").read_bytes()

    wrong = site.run("export", "latest", "--format", "mongodump-dir", "--to", out, ok=False)
    assert wrong.returncode == 2 and "not an empty directory" in wrong.stderr
