"""``keys rotate --writer``: a new writer key generation (docs/design.md, "Writer key
rotation"), through the CLI against a file target."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import secrets
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
from conftest import Site, restored, tree_listing
from robustness_helpers import killed_at
from servers import S3Server, start_versitygw

from emberkeep import keys
from emberkeep.repository import layout
from emberkeep.repository.snapshot import decode_snapshot, encode_snapshot


def _write(src: Path, name: str, size: int) -> None:
    path = src / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _stored(site: Site) -> int:
    """Bytes of data and tree packs in the target: what backups uploaded."""
    return sum(p.stat().st_size for d in ("data", "meta") for p in (site.repo / d).rglob("*")
               if p.is_file())  # fmt: skip


def _restore(site: Site, snapshot: str, out: Path, *, new_host: bool) -> None:
    key = site.state_dir / "writer.key"
    aside = site.state_dir / "writer.key.aside"
    if new_host:
        key.rename(aside)
    try:
        site.run("restore", snapshot, "--to", out, "--identity", site.identities[0])
    finally:
        if aside.exists():
            key.unlink(missing_ok=True)
            aside.rename(key)


def _every_snapshot_restores(site: Site, src: Path, out: Path, *, new_host: bool) -> None:
    for snap in site.snapshots():
        target = out / snap["id"][:8]
        _restore(site, snap["id"], target, new_host=new_host)
        assert any(target.rglob("*.bin")), snap


def test_rotate_writer_then_backup_uploads_everything_once_more_then_nothing(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    size = 3 * 1_000_000
    for n in range(3):
        _write(src, f"f{n}.bin", size // 3)
    site.write_config([src])
    site.run("init")
    site.run("backup")
    first = _stored(site)
    site.run("backup")
    unchanged = _stored(site) - first
    old = site.snapshots()[0]["id"]
    old_key = keys.WriterKey.load(site.state_dir / "writer.key")

    rotated = site.json("keys", "rotate", "--writer")["changes"][0]
    assert "writer key generation 2" in rotated["message"], rotated
    assert not any(o.startswith(("data/", "meta/")) for o in rotated["objects_written"])
    new_key = keys.WriterKey.load(site.state_dir / "writer.key")
    assert new_key.generation == 2 and new_key.mac_key != old_key.mac_key
    assert new_key.repo_id == old_key.repo_id  # the repository keeps its name
    assert not (site.state_dir / "writer.key.next").exists()

    before = _stored(site)
    site.run("backup")
    again = _stored(site) - before
    site.run("backup")
    after_that = _stored(site) - before - again
    print(
        f"\nbytes uploaded: first backup {first}, unchanged {unchanged}; after rotate "
        f"--writer {again} ({again / size:.2f}x the data), the backup after {after_that}"
    )
    assert unchanged < 64_000
    assert again >= 0.95 * size  # the old key deduplicates nothing
    assert after_that < 64_000  # the new one does

    listing = site.json("keys", "list")["local"]
    gens = [(w["generation"], w["current"]) for w in listing["writer_keys"]]
    assert gens == [(1, False), (2, True)], listing["writer_keys"]
    assert listing["writer_key"]["fingerprint"] == new_key.fingerprint
    assert [e["number"] for e in listing["epochs"]] == [1, 2]  # a new read-key epoch too
    text = site.run("keys", "list").stdout + site.run("keys", "list").stderr
    assert "writer key generation 1 (retired)" in text, text
    site.run("check", "--read-data")  # old chunk ids verify with the retired MAC key
    new = site.snapshots()[-1]["id"]
    for snap in (old, new):
        for new_host in (True, False):
            out = tmp_path / f"out-{snap[:6]}-{new_host}"
            _restore(site, snap, out, new_host=new_host)
            assert tree_listing(restored(out, src)) == tree_listing(src)


def test_a_host_with_only_the_old_writer_key_is_refused_and_init_fetches_the_new(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _write(src, "one.bin", 50_000)
    site.write_config([src])
    site.run("init")
    site.run("backup")
    key_path = site.state_dir / "writer.key"
    old_copy = key_path.read_bytes()
    old_key = keys.WriterKey.load(key_path)
    site.run("keys", "rotate", "--writer")
    new_copy = key_path.read_bytes()

    # the old host: only the retired key
    key_path.write_bytes(old_copy)
    proc = site.run("backup", ok=False)
    assert "was retired by `emberkeep keys rotate --writer`" in proc.stderr, proc.stderr
    assert "emberkeep init --identity" in proc.stderr

    # what it could still do by hand: a snapshot sealed with the old key, planted
    name = next((site.repo / layout.SNAPSHOTS).iterdir())
    snap = decode_snapshot(name.name, name.read_bytes(), old_key.index_key)
    forged = dataclasses.replace(snap, tags=["planted"])
    forged_name, sealed = encode_snapshot(forged, old_key.index_key)
    (site.repo / forged_name).write_bytes(sealed)
    key_path.write_bytes(new_copy)
    listed = site.snapshots()
    assert [s["id"] for s in listed] == [snap.id], listed  # not taken
    checked = site.run("check", ok=False)
    assert "after `keys rotate --writer` retired it" in checked.stdout + checked.stderr
    (site.repo / forged_name).unlink()

    # init with an identity on the old host fetches the new key; then it backs up again
    key_path.write_bytes(old_copy)
    site.run("init", "--identity", site.identities[0])
    assert (
        keys.WriterKey.load(key_path).fingerprint
        == keys.WriterKey.from_bytes(new_copy, "new").fingerprint
    )
    _write(src, "two.bin", 50_000)
    site.run("backup")
    assert len(site.snapshots()) == 2


def test_a_forged_or_mismatched_new_writer_key_is_refused(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src, "one.bin", 50_000)
    site.write_config([src])
    site.run("init")
    site.run("backup")
    key_path = site.state_dir / "writer.key"
    old_copy = key_path.read_bytes()
    site.run("keys", "rotate", "--writer")
    key_path.write_bytes(old_copy)  # the old host
    copy = site.repo / layout.WRITER_KEY
    real = copy.read_bytes()
    recipients = keys.parse_recipients(site.recipients)
    # the storage side knows the recipients: it can encrypt a chain of its own to them
    foreign = keys.WriterKey.generate().rotated()
    copy.write_bytes(pyrage.encrypt(foreign.to_bytes(), recipients))
    proc = site.run("init", "--identity", site.identities[0], ok=False)
    assert "is not a successor of this host's" in proc.stderr, proc.stderr
    assert key_path.read_bytes() == old_copy  # kept
    # the config naming another repository id: not this host's repository at all
    config = site.repo / layout.CONFIG
    body = json.loads(config.read_text())
    config.write_text(json.dumps({**body, "id": "0" * 32}))
    copy.write_bytes(real)
    proc = site.run("init", "--identity", site.identities[0], ok=False)
    assert "another site's repository" in proc.stderr, proc.stderr
    assert key_path.read_bytes() == old_copy


def test_sigkill_at_ten_moments_of_rotate_writer_then_it_completes(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _write(src, "one.bin", 50_000)
    site.write_config([src])
    site.run("init")
    site.run("backup")
    points = ["writer-pending", "rotate-epoch", "writer-copy", "writer-config", "writer-host-key"]
    points += [f"put-{n}" for n in range(6)]  # each put of the six one target takes
    rng = random.Random("writer-rotation")
    moments = points[:5] + rng.sample(points[5:], 5)
    print(f"\nkill moments: {moments}")
    for trial, point in enumerate(moments):
        generation = keys.WriterKey.load(site.state_dir / "writer.key").generation
        proc = killed_at(site, point, "keys", "rotate", "--writer")
        assert proc.returncode == -9, (point, proc.returncode, proc.stderr)
        # a new host reads with the repository's copy, this one with its own key(s)
        _every_snapshot_restores(site, src, tmp_path / f"trial-{trial}", new_host=True)
        newest = site.snapshots()[-1]["id"]
        _restore(site, newest, tmp_path / f"trial-{trial}-held", new_host=False)
        site.run("keys", "rotate", "--writer")  # completes the change
        key = keys.WriterKey.load(site.state_dir / "writer.key")
        assert key.generation == generation + 1, (point, key.generation)
        assert not (site.state_dir / "writer.key.next").exists()
        listing = site.json("keys", "list")["local"]
        assert len(listing["writer_keys"]) == key.generation
        _write(src, f"t{trial}.bin", 20_000)
        site.run("backup")
    site.run("check")
    _every_snapshot_restores(site, src, tmp_path / "final", new_host=True)


# -- key changes on an S3 target with Object Lock -----------------------------------------


@pytest.fixture(scope="module")
def versioned_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A versitygw whose buckets are versioned, as AWS requires for Object Lock."""
    server = start_versitygw(tmp_path_factory.mktemp("versitygw-versioned"), versioning=True)
    yield server
    server.stop()


@pytest.fixture(params=["unversioned", "versioned"])
def lock_server(request: pytest.FixtureRequest) -> S3Server:
    return request.getfixturevalue(
        "s3_server" if request.param == "unversioned" else "versioned_s3"
    )


def test_key_changes_on_an_object_lock_target(
    site: Site, tmp_path: Path, lock_server: S3Server, request: pytest.FixtureRequest
) -> None:
    """Object Lock locks ``keys/`` too (storage/s3.py): a versioned bucket takes key
    changes (each replaced object stays as a locked old version); an unversioned one
    refuses every overwrite, so a key change there is refused before it changes a thing."""
    src = tmp_path / "src"
    _write(src, "one.bin", 50_000)
    bucket = f"vault-{secrets.token_hex(4)}"
    lock_server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    site.env.update(lock_server.env())
    url = lock_server.url(bucket, "site", lock_days=1)
    site.write_config([src], targets=f'[[targets]]\nname = "t"\nurl = "{url}"')
    site.run("init")
    site.run("backup")
    second_id, second = site.keygen("second.txt")
    before = {o["Key"]: o["ETag"] for o in _listed(lock_server, bucket)}
    versioned = lock_server is not request.getfixturevalue("s3_server")
    changes = (["keys", "add", second, "--update-config"], ["keys", "rotate"],
               ["keys", "rotate", "--writer"])  # fmt: skip
    for args in changes:
        proc = site.run(*args, ok=versioned)
        if not versioned:  # refused before anything changed, saying why and what to do
            assert "S3 Object Lock protects them until" in proc.stderr, proc.stderr
            assert "nothing was changed" in proc.stderr and "versioned bucket" in proc.stderr
            assert {o["Key"]: o["ETag"] for o in _listed(lock_server, bucket)} == before
            assert not (site.state_dir / "writer.key.next").exists()
    if versioned:  # every change made: the old snapshot restores with the second identity
        assert site.json("keys", "list")["t"]["recipients"] == sorted(site.recipients)
        snap = site.snapshots()[0]["id"]
        site.run("restore", snap, "--to", tmp_path / "out", "--identity", second_id)
        assert tree_listing(restored(tmp_path / "out", src)) == tree_listing(src)
    _write(src, "two.bin", 50_000)
    site.run("backup")  # either way the target goes on taking backups


def _listed(server: S3Server, bucket: str) -> list[dict[str, str]]:
    found = server.client().list_objects_v2(Bucket=bucket, Prefix="site/keys/")
    return list(found.get("Contents", []))
