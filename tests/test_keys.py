"""Keys: a write-only host backs up but cannot read; identities read; wrong ones fail clearly."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from conftest import Site, restored, stored_bytes, tree_listing

MiB = 1024 * 1024


def make_tree(src: Path) -> None:
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "readme.txt").write_text("read me\n" * 100)
    (src / "media.bin").write_bytes(os.urandom(3 * MiB))
    (src / "small.bin").write_bytes(os.urandom(2000))


def keygen(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emberkeep", "keygen", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def assert_fails_for_identity(proc: subprocess.CompletedProcess[str], code: int = 1) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "identity" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


def test_write_only_host_backs_up_lists_checks_and_prunes(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    old = src / "old.bin"
    old.write_bytes(os.urandom(2 * MiB))
    site.keygen()
    site.write_config(paths=[src], identity=None)
    assert "identity_file" not in site.config_path.read_text()

    site.run("init")  # a new repository needs no identity
    assert (site.state_dir / "writer.key").is_file()
    first = site.json("backup")[0]["snapshot"]
    old.unlink()
    second = site.json("backup")[0]["snapshot"]
    listed = site.snapshots()
    assert [s["id"] for s in listed] == [first["id"], second["id"]]

    check = site.json("check")
    assert check["local"]["ok"] is True
    assert check["local"]["snapshots"] == 2

    before = stored_bytes(site.repo, ("data",))
    pruned = site.json("prune", "--forget", first["id"], "--grace", "0s")["local"]
    assert [(d["id"], d["action"]) for d in pruned["snapshots"]] == [
        (first["id"], "remove"),
        (second["id"], "keep"),
    ]
    assert [s["id"] for s in site.snapshots()] == [second["id"]]
    # the data only the forgotten snapshot used is gone (or waits, reported, in partly used packs)
    freed = before - stored_bytes(site.repo, ("data",))
    assert freed + pruned["bytes_in_partly_used_packs"] >= 2 * MiB
    assert site.json("check")["local"]["ok"] is True

    # reading needs an identity: restore and check --read-data say so
    proc = site.run("restore", "latest", "--to", tmp_path / "out", ok=False)
    assert_fails_for_identity(proc)
    assert not any((tmp_path / "out").rglob("*.bin"))
    proc = site.run("check", "--read-data", ok=False)
    assert_fails_for_identity(proc)
    proc = site.run("check", "--read-data-subset", "50%", ok=False)
    assert_fails_for_identity(proc)

    # with the identity given on the command line the same host restores
    out = tmp_path / "out2"
    site.run("restore", "latest", "--to", out, "--identity", site.identities[0])
    assert tree_listing(restored(out, src)) == tree_listing(src)
    site.run("check", "--read-data", "--identity", site.identities[0])


def test_a_wrong_identity_fails_clearly(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    third = tmp_path / "third.txt"
    assert keygen("-o", third).returncode == 0  # not one of the recipients

    out = tmp_path / "out"
    proc = site.run("restore", "latest", "--to", out, "--identity", third, ok=False)
    assert proc.returncode == 1
    assert "recipient" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(out.rglob("*.bin"))

    # check --read-data says the identity is wrong, rather than calling the data damaged
    proc = site.run("check", "--read-data", "--identity", third, ok=False)
    assert proc.returncode == 1
    text = proc.stdout + proc.stderr
    assert "recipient" in text
    assert "damaged" not in text.lower()

    # on a new host (no writer key) the wrong identity cannot open the repository's copy
    shutil.rmtree(site.state_dir)
    proc = site.run("restore", "latest", "--to", out, "--identity", third, ok=False)
    assert proc.returncode == 1
    assert "recipient" in proc.stderr
    assert not (site.state_dir / "writer.key").exists()


def test_any_one_of_two_recipients_restores(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    alice, _ = site.keygen("alice.txt")
    bob, _ = site.keygen("bob.txt")
    site.write_config(paths=[src], identity=None)
    site.run("init")
    site.run("backup")
    wrapped = (site.repo / "keys" / "writer.age").read_bytes()
    assert wrapped.count(b"\n-> X25519 ") == 2

    expected = tree_listing(src)
    for who in (alice, bob):
        out = tmp_path / f"out-{who.stem}"
        site.run("restore", "latest", "--to", out, "--identity", who)
        assert tree_listing(restored(out, src)) == expected
        site.run("check", "--read-data", "--identity", who)

    # and each alone rebuilds a new host's writer key
    for who in (alice, bob):
        shutil.rmtree(site.state_dir)
        out = tmp_path / f"new-host-{who.stem}"
        site.run("restore", "latest", "--to", out, "--identity", who)
        assert tree_listing(restored(out, src)) == expected


def test_new_host_with_an_identity_restores_and_backs_up_with_dedup(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    old_key = (site.state_dir / "writer.key").read_bytes()

    # the old host is gone: no state dir, no writer key, no files cache
    shutil.rmtree(site.state_dir)

    # without an identity the new host cannot even back up: it must say what it needs
    site.write_config(paths=[src], identity=None)
    proc = site.run("backup", ok=False)
    assert_fails_for_identity(proc)
    site.write_config(paths=[src])

    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert tree_listing(restored(out, src)) == tree_listing(src)
    rebuilt = site.state_dir / "writer.key"
    assert rebuilt.read_bytes() == old_key
    assert stat.S_IMODE(os.stat(rebuilt).st_mode) == 0o600

    # a backup from the new host deduplicates against the old host's data
    (src / "new.txt").write_text("written on the new host\n")
    summary = site.json("backup")[0]["snapshot"]["summary"]
    assert summary["bytes_from_cache"] == 0  # no cache on this host: everything was read
    assert summary["bytes"] > 3 * MiB
    assert summary["bytes_stored"] < 64 * 1024
    assert len(site.snapshots()) == 2

    # and the new host can now back up without the identity (its writer key is local)
    site.write_config(paths=[src], identity=None)
    site.run("backup")
    assert len(site.snapshots()) == 3


def test_init_on_a_new_host_takes_the_writer_key_from_the_repository(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    old_key = (site.state_dir / "writer.key").read_bytes()
    shutil.rmtree(site.state_dir)

    site.write_config(paths=[src], identity=None)
    proc = site.run("init", ok=False)
    assert_fails_for_identity(proc)
    assert not (site.state_dir / "writer.key").exists()

    site.write_config(paths=[src])
    site.run("init")
    assert (site.state_dir / "writer.key").read_bytes() == old_key
    assert len(site.snapshots()) == 1


def test_keygen_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "id.txt"
    proc = keygen("-o", path)
    assert proc.returncode == 0, proc.stderr
    recipient = proc.stdout.strip().splitlines()[-1]
    assert recipient.startswith("age1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert recipient in text
    assert sum(line.startswith("AGE-SECRET-KEY-1") for line in text.splitlines()) == 1

    before = path.read_bytes()
    proc = keygen("-o", path)
    assert proc.returncode == 2
    assert str(path) in proc.stderr
    assert "exists" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert path.read_bytes() == before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    # --json gives both, and two keygens never give the same identity
    other = tmp_path / "other.txt"
    proc = keygen("-o", other, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["identity_file"] == str(other)
    assert data["recipient"].startswith("age1")
    assert data["recipient"] != recipient

    # the default output file is in the current directory, and is also never overwritten
    proc = keygen(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    default = tmp_path / "emberkeep-identity.txt"
    assert stat.S_IMODE(os.stat(default).st_mode) == 0o600
    assert keygen(cwd=tmp_path).returncode == 2


def test_an_identity_file_others_can_read_is_refused(site: Site, tmp_path: Path) -> None:
    """As ssh refuses such a private key: named, with its mode and the fix."""
    src = tmp_path / "src"
    make_tree(src)
    identity, _ = site.keygen()
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    identity.chmod(0o640)
    proc = site.run("restore", "latest", "--to", tmp_path / "out", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert str(identity) in proc.stderr and "0640" in proc.stderr
    assert f"chmod 600 {identity}" in proc.stderr
    assert not (tmp_path / "out").exists()
    identity.chmod(0o600)
    site.run("restore", "latest", "--to", tmp_path / "out")
