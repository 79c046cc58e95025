"""`emberkeep replicate --target NEW --re-encrypt` (README, "Keys and team changes": "A team
member leaves"): a removed member who kept an old epoch key reads nothing of the new
target. Through the real CLI, against file targets; the keys are checked with pyrage, as
the removed member would try them."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import pyrage
import pytest
from conftest import Site, repo_objects, restored, tree_listing
from robustness_helpers import killed_at
from servers import S3Server

from emberkeep import config as config_module
from emberkeep.errors import WrongIdentity
from emberkeep.site import Site as EmberSite

MiB = 1024 * 1024


def _tree(root: Path) -> Path:
    (root / "media").mkdir(parents=True)
    (root / "media" / "photo.bin").write_bytes(os.urandom(MiB))
    for i in range(8):
        (root / f"note-{i}.txt").write_text(f"note {i}\n" * (i + 1))
    os.symlink("note-1.txt", root / "link")
    return root


def _targets(site: Site, *names: str) -> str:
    urls = {"local": site.repo}
    return "\n".join(
        f'[[targets]]\nname = "{n}"\nurl = "file://{urls.get(n, site.root / (n + "-repo"))}"'
        for n in names
    )


def _packs(repo: Path) -> list[Path]:
    return repo_objects(repo, "data") + repo_objects(repo, "meta")


def _wrapped_data_key(pack: Path) -> bytes:
    """The age-wrapped data key in a pack's table frame (repository/pack.py's layout)."""
    data = pack.read_bytes()
    frame_len, magic = struct.unpack("<I4s", data[-8:])
    assert magic == b"EKP1"
    frame = data[-8 - frame_len : -8]
    (wrapped_len,) = struct.unpack_from("<H", frame)
    return frame[2 : 2 + wrapped_len]


def _epoch_keys(repo: Path, identity: Path) -> list[pyrage.x25519.Identity]:
    """Every epoch key of ``repo`` that ``identity`` opens (what a member could keep)."""
    me = pyrage.x25519.Identity.from_str(identity.read_text().split()[-1])
    kept = []
    for path in sorted((repo / "keys").glob("epoch-*.age")):
        try:
            secret = pyrage.decrypt(path.read_bytes(), [me]).decode().strip()
        except pyrage.DecryptError:
            continue
        kept.append(pyrage.x25519.Identity.from_str(secret))
    return kept


def _opens(pack: Path, epoch_keys: list[pyrage.x25519.Identity]) -> bool:
    try:
        pyrage.decrypt(_wrapped_data_key(pack), epoch_keys)
    except pyrage.DecryptError:
        return False
    return True


def _restore(site: Site, target: str, snap: str, identity: Path, out: Path, ok: bool = True
             ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Restore as a host holding only ``identity`` (no writer key)."""
    key = site.state_dir / "writer.key"
    aside = key.with_suffix(".aside")
    key.rename(aside)
    try:
        return site.run(
            "restore", snap, "--target", target, "--to", out, "--identity", identity, ok=ok
        )
    finally:
        key.unlink(missing_ok=True)
        aside.rename(key)


def _left_team(site: Site, tmp_path: Path) -> tuple[Path, Path, Path, list[Any]]:
    """A site backed up to ``local`` with recipients A and B, then A removed (A keeps the
    epoch key it held), then a fresh target ``new`` initialized; returns the source, A's
    and B's identities and A's kept epoch keys."""
    src = _tree(tmp_path / "src")
    a_id, a = site.keygen("a.txt")
    b_id, b = site.keygen("b.txt")
    site.write_config([src], identity=False, targets=_targets(site, "local"))
    site.run("init")
    site.run("backup")
    kept = _epoch_keys(site.repo, a_id)  # what A walks away with
    assert kept and all(_opens(p, kept) for p in _packs(site.repo))
    site.run("keys", "remove", a, "--update-config", "--identity", b_id)
    site.recipients[:] = [b]
    site.write_config([src], identity=False, targets=_targets(site, "local", "new"))
    site.run("init", "--target", "new")
    return src, a_id, b_id, kept


def test_a_removed_member_reads_nothing_of_a_re_encrypted_target(
    site: Site, tmp_path: Path
) -> None:
    src, a_id, b_id, kept = _left_team(site, tmp_path)
    new = site.root / "new-repo"
    [snap] = [s["id"] for s in site.snapshots()]

    proc = site.run("replicate", "--target", "new", "--re-encrypt", ok=False)
    assert "--identity" in proc.stderr and "keys.identity_file" in proc.stderr, proc.stderr
    assert not _packs(new)
    proc = site.run("replicate", "--re-encrypt", "--identity", b_id, ok=False)
    assert "--target" in proc.stderr, proc.stderr

    [copy] = site.json("replicate", "--target", "new", "--re-encrypt", "--identity", b_id)
    assert copy["status"] == "copied" and copy["snapshots"] == [snap], copy
    assert copy["re_encrypted"] is True and copy["packs_reused"] == 0
    assert copy["packs_copied"] == len(_packs(new)) >= 2  # data and tree packs
    assert copy["bytes_copied"] > MiB
    assert [s["id"] for s in site.json("snapshots", "--target", "new")] == [snap]

    out = tmp_path / "out-b"
    _restore(site, "new", snap, b_id, out)
    assert tree_listing(restored(out, src)) == tree_listing(src)

    # A: no epoch key file of the new target opens with A's identity; B's opens them all
    assert not _epoch_keys(new, a_id)
    assert len(_epoch_keys(new, b_id)) == len(list((new / "keys").glob("epoch-*.age"))) >= 1
    # A's kept epoch key opens every old pack of the primary, and no pack of the new target
    assert all(_opens(p, kept) for p in _packs(site.repo))
    assert not any(_opens(p, kept) for p in _packs(new))
    # no pack is a primary's pack copied: neither by name nor by content
    digests = {hashlib.sha256(p.read_bytes()).digest() for p in _packs(site.repo)}
    assert not digests & {hashlib.sha256(p.read_bytes()).digest() for p in _packs(new)}
    assert not {p.name for p in _packs(site.repo)} & {p.name for p in _packs(new)}

    # A's identity reads no pack of it, each refused by name
    proc = _restore(site, "new", snap, a_id, tmp_path / "out-a", ok=False)
    assert "not one of the recipients" in proc.stderr or "not a recipient" in proc.stderr
    assert "AGE-SECRET-KEY" not in proc.stderr
    as_a = EmberSite(config_module.load(str(site.config_path)), identity_file=a_id)
    repo = as_a.repository("new", read=True)
    for pack in repo.index.packs:
        with pytest.raises(WrongIdentity, match="not a recipient of key epoch"):
            repo.pack_key(pack)

    result = site.json("check", "--read-data", "--target", "new", "--identity", b_id)["new"]
    assert result["ok"] and result["packs_read"] == len(_packs(new)), result

    again = site.json("replicate", "--target", "new", "--re-encrypt", "--identity", b_id)
    assert again[0]["status"] == "skipped" and again[0]["packs_copied"] == 0, again


@pytest.mark.parametrize("point", ["pack-stored", "reencrypt-before-header"])
def test_sigkill_mid_copy_leaves_the_target_checkable_and_the_next_run_completes(
    site: Site, tmp_path: Path, point: str
) -> None:
    src, _a_id, b_id, kept = _left_team(site, tmp_path)
    new = site.root / "new-repo"
    [snap] = [s["id"] for s in site.snapshots()]
    site.env["EMBERKEEP_TEST_PACK_TARGET"] = str(128 * 1024)  # several packs to cut between

    proc = killed_at(
        site, point, "replicate", "--target", "new", "--re-encrypt", "--identity", b_id
    )
    assert proc.returncode == -9, (proc.returncode, proc.stderr)
    left = _packs(new)
    assert left, "killed before any pack was stored: the kill point is wrong"
    assert site.json("snapshots", "--target", "new") == []  # nothing committed
    result = site.json("check", "--read-data", "--target", "new", "--identity", b_id)["new"]
    assert result["ok"], result

    [copy] = site.json("replicate", "--target", "new", "--re-encrypt", "--identity", b_id)
    assert copy["status"] == "copied" and copy["snapshots"] == [snap], copy
    if point == "reencrypt-before-header":  # the packs and their index were all written
        assert copy["packs_copied"] == 0, copy
    out = tmp_path / "out"
    _restore(site, "new", snap, b_id, out)
    assert tree_listing(restored(out, src)) == tree_listing(src)
    result = site.json("check", "--read-data", "--target", "new", "--identity", b_id)["new"]
    assert result["ok"], result
    assert not any(_opens(p, kept) for p in _packs(new))


def test_blobs_in_packs_a_plain_replicate_brought_are_sealed_again(
    site: Site, tmp_path: Path
) -> None:
    """A target that got a snapshot verbatim holds packs of the primary's old epoch: a later
    re-encrypted copy stores its blobs anew rather than pointing at those packs."""
    src = _tree(tmp_path / "src")
    a_id, a = site.keygen("a.txt")
    b_id, b = site.keygen("b.txt")
    new = site.root / "new-repo"
    site.write_config([src], identity=False, targets=_targets(site, "local", "new"))
    site.run("init")
    site.run("backup")  # copied verbatim to new, with its epoch
    kept = _epoch_keys(site.repo, a_id)
    verbatim = set(_packs(new))
    assert verbatim and all(_opens(p, kept) for p in verbatim)
    site.run("keys", "remove", a, "--update-config", "--identity", b_id)
    site.recipients[:] = [b]
    (src / "later.txt").write_text("written after A left\n")
    site.write_config([src], identity=False, targets=_targets(site, "local"))
    site.run("backup")  # the primary only: its photo blob is in the old epoch's pack
    site.write_config([src], identity=False, targets=_targets(site, "local", "new"))

    [copy] = site.json("replicate", "--target", "new", "--re-encrypt", "--identity", b_id)
    assert copy["status"] == "copied" and len(copy["snapshots"]) == 1, copy
    assert copy["bytes_copied"] > MiB, copy  # the photo sealed again, not reused
    written = set(_packs(new)) - verbatim
    assert len(written) == copy["packs_copied"] >= 2
    assert not any(_opens(p, kept) for p in written)
    latest = copy["snapshots"][0]
    out = tmp_path / "out"
    _restore(site, "new", latest, b_id, out)
    assert tree_listing(restored(out, src)) == tree_listing(src)


def test_re_encrypt_into_a_new_s3_target(site: Site, s3_server: S3Server, tmp_path: Path) -> None:
    """The same copy into versitygw: B restores it byte for byte, A's identity reads none."""
    src = _tree(tmp_path / "src")
    a_id, a = site.keygen("a.txt")
    b_id, b = site.keygen("b.txt")
    site.env.update(s3_server.env())
    local = _targets(site, "local")
    site.write_config([src], identity=False, targets=local)
    site.run("init")
    snap = site.json("backup")[0]["snapshot"]["id"]
    site.run("keys", "remove", a, "--update-config", "--identity", b_id)
    site.recipients[:] = [b]
    cold = f'[[targets]]\nname = "new"\nurl = "{s3_server.url(s3_server.make_bucket(), "site")}"'
    site.write_config([src], identity=False, targets=f"{local}\n{cold}")
    site.run("init", "--target", "new")

    [copy] = site.json("replicate", "--target", "new", "--re-encrypt", "--identity", b_id)
    assert copy["status"] == "copied" and copy["snapshots"] == [snap], copy
    assert copy["packs_copied"] >= 2 and copy["bytes_copied"] > MiB
    out = tmp_path / "out"
    _restore(site, "new", snap, b_id, out)
    assert tree_listing(restored(out, src)) == tree_listing(src)
    proc = _restore(site, "new", snap, a_id, tmp_path / "out-a", ok=False)
    assert "not one of the recipients" in proc.stderr or "not a recipient" in proc.stderr
    result = site.json("check", "--read-data", "--target", "new", "--identity", b_id)["new"]
    assert result["ok"] and result["packs_read"] == copy["packs_copied"], result
