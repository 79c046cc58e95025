"""Restore drills: each source type passes on healthy backups; every kind of damage makes
the drill fail naming the file or collection; the live database is never touched."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, repo_objects
from pymongo import MongoClient
from robustness_helpers import flip_byte, write_random
from servers_mongo import MongoTestServer, client_of, module_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTestServer]:
    yield from module_server(tmp_path_factory, "mongo-drill", 16 << 20)


@pytest.fixture(scope="module")
def client(server: MongoTestServer) -> Iterator[MongoClient[Any]]:
    yield from client_of(server)


def files_site(site: Site, tmp_path: Path, *, rto: str = "1h") -> Path:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    write_random(data / "big.bin", 3 << 20)
    (data / "sub" / "note.txt").write_text("hello drill\n")
    os.symlink("sub/note.txt", data / "link")
    site.write_config([data], source_extra=f'objectives = {{ rpo = "24h", rto = "{rto}" }}')
    site.run("init")
    site.run("backup")
    return data


def mongo_site(site: Site, uri: str, db: str, extra: str = "") -> None:
    site.write_config(
        extra_sources=(
            f'[[sources]]\nname = "db"\ntype = "mongodb"\nuri = "{uri}"\n'
            f'databases = ["{db}"]\nobjectives = {{ rto = "1h" }}\n{extra}\n'
        )
    )
    site.run("init")


def drill(site: Site, *args: str, ok: bool = True) -> tuple[list[dict[str, Any]], str]:
    proc = site.run("drill", *args, "--json", ok=ok)
    return json.loads(proc.stdout), proc.stderr


def test_files_drill_passes_with_phases_rto_and_report(site: Site, tmp_path: Path) -> None:
    files_site(site, tmp_path)
    [result], _ = drill(site, "files", "--report", str(tmp_path / "drill"))
    assert result["outcome"] == "passed" and result["first_difference"] is None
    assert set(result["phases"]) == {"fetch", "decrypt", "restore", "verify"}
    assert result["rto_seconds"] > 0 and result["rto_ok"] is True
    assert result["rto_objective_seconds"] == 3600
    assert result["checked"][0]["files"] == 2
    report = (tmp_path / "drill.md").read_text()
    assert "files (files): PASSED" in report and "| restore |" in report
    assert json.loads((tmp_path / "drill.json").read_text())[0]["snapshot"] == result["snapshot"]
    assert not list((site.state_dir / "drill").iterdir())  # the scratch is gone


def test_rto_over_the_objective_is_flagged(site: Site, tmp_path: Path) -> None:
    files_site(site, tmp_path, rto="0s")
    [result], _ = drill(site)
    assert result["outcome"] == "passed"  # the data is fine ...
    assert result["rto_ok"] is False  # ... but it took longer than the objective
    human = site.run("drill")
    assert "OVER the objective" in human.stderr


def test_git_drill_passes(site: Site, tmp_path: Path) -> None:
    repo = tmp_path / "app"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.txt").write_text("v1\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}  # fmt: skip
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "one"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "tag", "v1"], check=True)
    site.write_config(extra_sources=f'[[sources]]\nname = "code"\ntype = "git"\npath = "{repo}"')
    site.run("init")
    site.run("backup")
    [result], _ = drill(site, "code")
    assert result["outcome"] == "passed"
    assert result["checked"][0]["git_fsck"] is True


def test_mongodb_drill_passes_and_never_touches_the_live_database(
    site: Site, server: MongoTestServer, client: MongoClient[Any]
) -> None:
    live = client["livedrill"]
    live.orders.insert_many(
        [{"_id": i, "total": i * 3, "items": ["a"] * (i % 5)} for i in range(500)]
    )
    live.orders.create_index("total", unique=True)
    live.empty.insert_one({"_id": 1})
    live.empty.delete_one({"_id": 1})
    mongo_site(site, server.uri, "livedrill")
    site.run("backup")
    before = {n: sorted(map(repr, live[n].find())) for n in live.list_collection_names()}
    dbs_before = set(client.list_database_names())

    [result], _ = drill(site, "db")
    assert result["outcome"] == "passed", result
    checked = {c["collection"]: c for c in result["checked"] if "collection" in c}
    assert checked["livedrill.orders"]["documents"] == 500 and checked["livedrill.orders"]["ok"]
    assert checked["livedrill.orders"]["restored_as"].startswith("emberkeep_drill_")
    assert set(client.list_database_names()) == dbs_before  # the scratch is dropped
    after = {n: sorted(map(repr, live[n].find())) for n in live.list_collection_names()}
    assert after == before  # the live database is untouched
    client.drop_database("livedrill")


def test_drill_fails_on_a_corrupt_pack_naming_file_and_pack(site: Site, tmp_path: Path) -> None:
    files_site(site, tmp_path)
    pack = max(repo_objects(site.repo, "data"), key=lambda p: p.stat().st_size)
    flip_byte(pack, 1000)
    [result], _ = drill(site, ok=False)
    assert result["outcome"] == "failed"
    assert "big.bin" in result["error"] and pack.name in result["error"]


def test_drill_fails_on_a_deleted_pack(site: Site, tmp_path: Path) -> None:
    files_site(site, tmp_path)
    pack = max(repo_objects(site.repo, "data"), key=lambda p: p.stat().st_size)
    pack.unlink()
    [result], _ = drill(site, ok=False)
    assert "big.bin" in result["error"] and "missing" in result["error"]


def test_drill_fails_on_a_truncated_index(site: Site, tmp_path: Path) -> None:
    files_site(site, tmp_path)
    [index] = repo_objects(site.repo, "index")
    index.write_bytes(index.read_bytes()[:40])
    proc = site.run("drill", ok=False)
    assert proc.returncode == 1 and f"index/{index.name}" in proc.stderr


def tamper(site: Site, path: str, change: Any) -> str:
    """A snapshot as a faulty writer would write it: the latest one, with the file at
    ``path`` given the content ``change(old bytes)`` while its recorded digest stays.
    Returns the new snapshot's id (the old one is removed)."""
    from emberkeep import config as cfg
    from emberkeep.engine.tree import decode_tree, encode_tree
    from emberkeep.engine.writer import BlobWriter
    from emberkeep.site import Site as RunSite

    run_site = RunSite(cfg.load(str(site.config_path)))
    repo = run_site.repository(read=True)
    snap = repo.snapshots()[-1]
    writer = BlobWriter(repo, workers=1)
    referenced: set[bytes] = set()

    def rebuild(tree_id: bytes, prefix: str) -> bytes:
        nodes = decode_tree(repo.read_blob(tree_id))
        for node in nodes:
            where = f"{prefix}/{node['name']}"
            if node["type"] == "dir":
                node["subtree"] = rebuild(node["subtree"], where)
            elif where == path:
                data = change(b"".join(repo.read_blob(b) for b in node["content"]))
                ids: list[bytes] = []
                writer.submit(data, ids)
                writer.drain()
                node["content"], node["size"] = ids, len(data)
            referenced.update(node.get("content", ()))
        tree = writer.store_tree(encode_tree(nodes))
        referenced.add(tree)
        return tree

    snap.tree = rebuild(snap.tree, "")
    writer.finish()
    snap.blobs = b"".join(sorted(referenced))
    old = snap.id
    repo.save_snapshot(snap)
    repo.storage.delete(f"snapshots/{old}")
    return snap.id


def test_drill_fails_on_a_tampered_file(site: Site, tmp_path: Path) -> None:
    data = files_site(site, tmp_path)
    tamper(site, str(data / "sub" / "note.txt"), lambda old: old.replace(b"hello", b"HELLO"))
    [result], _ = drill(site, ok=False)
    assert result["first_difference"].startswith(str(data / "sub" / "note.txt"))
    assert "recorded at backup time" in result["first_difference"]


def test_drill_fails_on_one_altered_document(
    site: Site, server: MongoTestServer, client: MongoClient[Any]
) -> None:
    client["tamperdb"].customers.insert_many([{"_id": i, "name": f"c{i:04}"} for i in range(200)])
    mongo_site(site, server.uri, "tamperdb")
    site.run("backup")
    tamper(site, "/tamperdb/customers.bson", lambda old: old.replace(b"c0042", b"X0042"))
    dbs_before = set(client.list_database_names())
    [result], _ = drill(site, ok=False)
    assert result["first_difference"].startswith("tamperdb.customers: document content differs")
    assert set(client.list_database_names()) == dbs_before
    client.drop_database("tamperdb")
