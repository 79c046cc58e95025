"""The writer key chain against a hostile storage side (README, "How it keeps data safe"):
it can write any object but holds no secret, save perhaps a writer key that
``keys rotate --writer`` retired (the reason to rotate). What it forges or replays in
``config`` and ``keys/writer.age`` is refused by name, never trusted, never a traceback."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pyrage
from conftest import Site

from emberkeep import keys
from emberkeep.repository import layout
from emberkeep.repository.snapshot import decode_snapshot, encode_snapshot


def _rotated_site(site: Site, tmp_path: Path) -> tuple[keys.WriterKey, str]:
    """A site with one backup and a rotated writer key; the retired key (what the
    attacker is assumed to hold) and the snapshot taken under it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(os.urandom(50_000))
    site.write_config([src])
    site.run("init")
    site.run("backup")
    old_key = keys.WriterKey.load(site.state_dir / "writer.key")
    (snap,) = site.snapshots()
    site.run("keys", "rotate", "--writer")
    return old_key, snap["id"]


def test_an_unsealed_config_cannot_list_what_a_retired_key_sealed_after_rotation(
    site: Site, tmp_path: Path
) -> None:
    """With the retired key, a snapshot can be sealed; the rotation's config lists what
    that key may have sealed. A config of format 2 is always sealed (it came after
    sealing): one without a seal that adds the planted snapshot to that list is refused,
    and never sealed by the next backup."""
    old_key, first = _rotated_site(site, tmp_path)
    name = next((site.repo / layout.SNAPSHOTS).iterdir())
    snap = decode_snapshot(name.name, name.read_bytes(), old_key.index_key)
    forged = dataclasses.replace(snap, tags=["planted"])
    forged_name, sealed = encode_snapshot(forged, old_key.index_key)
    (site.repo / forged_name).write_bytes(sealed)

    config = site.repo / layout.CONFIG
    real = config.read_text()
    body = json.loads(real)
    assert body["format"] == layout.FORMAT_ROTATED
    del body["seal"]
    retired = body["writer"]["retired"][0]
    retired["objects"] = sorted([*retired["objects"], forged_name])
    config.write_text(json.dumps(body))

    listed = site.run("snapshots", "--json", ok=None)
    taken = json.loads(listed.stdout) if listed.returncode == 0 else []
    assert forged.id not in [s["id"] for s in taken], taken
    backup = site.run("backup", ok=None)
    said = backup.stdout + backup.stderr
    assert "config" in said and "not sealed" in said, said
    assert json.loads(config.read_text()) == body  # not sealed by the backup: left as found
    proc = site.run("check", ok=False)
    assert "is not sealed" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    config.write_text(real)  # the sealed one back: what the old key sealed before is read
    ids = [s["id"] for s in site.snapshots()]
    assert first in ids and forged.id not in ids, ids


def test_a_config_with_an_infinite_or_huge_generation_is_refused_by_name(
    site: Site, tmp_path: Path
) -> None:
    _rotated_site(site, tmp_path)
    config = site.repo / layout.CONFIG
    real = config.read_text()
    for generation in (float("inf"), 10**4000 // 10**3990, "2"):
        body = json.loads(real)
        body["writer"]["generation"] = generation
        config.write_text(json.dumps(body))
        for args in (("backup",), ("snapshots",), ("keys", "rotate", "--writer")):
            proc = site.run(*args, ok=None)  # no traceback (Site.run)
            if proc.returncode != 0:
                assert "config" in proc.stderr, (generation, args, proc.stderr)
    config.write_text(real)
    site.run("backup")


def test_a_writer_key_copy_with_an_infinite_generation_is_refused_by_name(
    site: Site, tmp_path: Path
) -> None:
    _rotated_site(site, tmp_path)
    recipients = keys.parse_recipients(site.recipients)
    copy = site.repo / layout.WRITER_KEY
    held = keys.WriterKey.load(site.state_dir / "writer.key")
    for field, value in (("generation", float("inf")), ("chunker_seed", float("inf"))):
        fields = json.loads(held.to_bytes())
        fields[field] = value
        copy.write_bytes(pyrage.encrypt(json.dumps(fields).encode(), recipients))
        aside = site.state_dir / "writer.key.aside"
        (site.state_dir / "writer.key").rename(aside)
        try:
            proc = site.run("snapshots", "--identity", site.identities[0], ok=False)
        finally:
            aside.rename(site.state_dir / "writer.key")
        assert layout.WRITER_KEY in proc.stderr, (field, proc.stderr)


def _grow(path: Path, size: int) -> None:
    """Make ``path`` ``size`` bytes long (sparse: no disk, but a read of it is that long)."""
    with path.open("r+b") as handle:
        handle.truncate(size)


def test_oversized_key_objects_are_refused_unread(site: Site, tmp_path: Path) -> None:
    """The storage side can make any object any size; ``config``, the recipient record and
    the writer key's copy are read whole, so one larger than it may be is refused by name
    (read up to its limit, never the whole)."""
    _rotated_site(site, tmp_path)
    for name, limit in ((layout.CONFIG, layout.CONFIG_MAX),
                        (layout.RECIPIENTS, layout.RECIPIENTS_MAX)):  # fmt: skip
        path = site.repo / name
        real = path.read_bytes()
        _grow(path, limit + 4096)
        proc = site.run("backup", ok=False)
        assert f"{name}: larger than the {limit} bytes" in proc.stderr, proc.stderr
        path.write_bytes(real)
    copy = site.repo / layout.WRITER_KEY
    _grow(copy, 2 * layout.WRITER_KEY_MAX)
    aside = site.state_dir / "writer.key.aside"
    (site.state_dir / "writer.key").rename(aside)
    try:
        proc = site.run("snapshots", "--identity", site.identities[0], ok=False)
    finally:
        aside.rename(site.state_dir / "writer.key")
    assert f"{layout.WRITER_KEY}: larger than the" in proc.stderr, proc.stderr
    proc = site.run("check", ok=None)  # the host holding the key writes the copy again
    assert f"{layout.WRITER_KEY}: larger than the" in proc.stdout + proc.stderr
    assert copy.stat().st_size < layout.WRITER_KEY_MAX
    site.run("check")


def test_a_repository_forged_with_the_retired_key_fails_the_runbooks_expect_repository(
    site: Site, tmp_path: Path
) -> None:
    """The repository id is the first generation's (it stays the same across rotations),
    so whoever holds a retired key can make a whole repository of its own with that id:
    the retired key, then a generation of theirs after it, encrypted to the public
    recipients. After a rotation the runbook pins the current key's fingerprint instead."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(os.urandom(50_000))
    site.write_config([src])
    site.run("init")
    site.run("backup")
    forged_repo = tmp_path / "forged"
    shutil.copytree(site.repo, forged_repo)
    old_key = (site.state_dir / "writer.key").read_bytes()
    site.run("keys", "rotate", "--writer")
    runbook = site.run("runbook").stdout
    expected = re.findall(r"--expect-repository (\S+?)`?\s", runbook)
    assert expected, runbook

    # the holder of the retired key: the pre-rotation repository, rotated by them
    attacker = Site(tmp_path / "attacker", recipients=list(site.recipients))
    attacker.root.mkdir()
    attacker.write_config(
        [src], identity=False, targets=f'[[targets]]\nname = "t"\nurl = "file://{forged_repo}"'
    )
    attacker.state_dir.mkdir(mode=0o700)
    (attacker.state_dir / "writer.key").write_bytes(old_key)
    (attacker.state_dir / "writer.key").chmod(0o600)
    attacker.run("keys", "rotate", "--writer")
    forged = keys.WriterKey.load(attacker.state_dir / "writer.key")
    real = keys.WriterKey.load(site.state_dir / "writer.key")
    assert forged.repo_id == real.repo_id and forged.fingerprint != real.fingerprint

    args: list[str | Path] = ["recover", "--from", f"file://{forged_repo}", "--identity"]
    args.append(site.identities[0])
    for value in set(expected):
        proc = site.run(*args, "--dry-run", "--expect-repository", value, ok=False)
        assert "not the expected" in proc.stderr, (value, proc.stderr)
    genuine = site.run(*args[:2], f"file://{site.repo}", *args[3:], "--dry-run",
                       "--expect-repository", expected[0])  # fmt: skip
    assert real.fingerprint in genuine.stdout
