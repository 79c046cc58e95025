"""Key epochs: recipients added and removed, keys rotated, without rewriting a pack
(docs/design.md, "Key epochs"), through the CLI against file, sftp and s3 targets."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, Site, repo_objects, restored, tree_listing
from robustness_helpers import killed_at

FIXTURE = ROOT / "tests" / "fixtures" / "legacy-repo"


def _write(src: Path, name: str, size: int = 50_000) -> None:
    path = src / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _target(request: pytest.FixtureRequest, site: Site, kind: str, tmp_path: Path) -> str:
    """A ``[[targets]]`` block of the given kind, with what the site needs to reach it."""
    if kind == "file":
        url = f"file://{site.repo}"
    elif kind == "sftp":
        url = request.getfixturevalue("sftp_server").url(tmp_path / "remote-repo")
    else:
        s3 = request.getfixturevalue("s3_server")
        site.env.update(s3.env())
        url = s3.url(s3.make_bucket(), "site")
    return f'[[targets]]\nname = "t"\nurl = "{url}"'


def _restore(
    site: Site, snapshot: str, identity: Path, out: Path, *, new_host: bool = True, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Restore as a host that holds only ``identity`` (``new_host``: no writer key, so the
    repository's copy must open too)."""
    key = site.state_dir / "writer.key"
    aside = site.state_dir / "writer.key.aside"
    if new_host and key.exists():
        key.rename(aside)
    try:
        return site.run("restore", snapshot, "--to", out, "--identity", identity, ok=ok)
    finally:
        if aside.exists():
            key.unlink(missing_ok=True)
            aside.rename(key)


def _target_url(site: Site) -> str:
    import tomllib

    return str(tomllib.loads(site.config_path.read_text())["targets"][0]["url"])


def _config_recipients(site: Site) -> list[str]:
    import tomllib

    return sorted(tomllib.loads(site.config_path.read_text())["keys"]["recipients"])


@pytest.mark.parametrize("kind", ["file", "sftp", "s3"])
def test_add_a_second_then_remove_the_first(
    site: Site, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    src = tmp_path / "src"
    _write(src, "one.bin")
    first_id, first = site.keygen("first.txt")
    second_id, second = site.keygen("second.txt")
    site.recipients[:] = [first]
    site.write_config([src], targets=_target(request, site, kind, tmp_path))
    site.run("init")
    site.run("backup")
    before = site.snapshots()[0]["id"]

    added = site.json("keys", "add", second, "--update-config")
    change = added["changes"][0]
    assert change["recipients"] == sorted([first, second])
    assert _config_recipients(site) == sorted([first, second])
    assert not any(o.startswith(("data/", "meta/", "index/")) for o in change["objects_written"])
    print(f"{kind}: keys add wrote {change['objects_written']} ({change['bytes_written']} B)")
    out = tmp_path / "out-before"
    _restore(site, before, second_id, out)  # made before the second was a recipient
    assert tree_listing(restored(out, src)) == tree_listing(src)
    # a new member's recover reads the site's history: what changed, nothing refused
    plan = site.run("recover", "--from", _target_url(site), "--identity", second_id,
                    "--dry-run", "--json")  # fmt: skip
    planned = json.loads(plan.stdout)
    assert planned["recipients"] == sorted([first, second]) and not planned["refused"]
    assert f"recipient {second} added" in planned["changes_since_previous"], planned

    site.json("keys", "remove", first, "--update-config", "--identity", second_id)
    assert _config_recipients(site) == [second]
    _write(src, "two.bin")
    site.run("backup")  # the config names the repository's set again: accepted
    after = site.snapshots()[-1]["id"]
    out = tmp_path / "out-after"
    _restore(site, after, second_id, out)
    assert tree_listing(restored(out, src)) == tree_listing(src)
    for new_host in (True, False):  # the first identity no longer reads it, with or without
        proc = _restore(
            site, after, first_id, tmp_path / f"no-{new_host}", new_host=new_host, ok=False
        )
        assert "not one of the recipients" in proc.stderr or "not a recipient of key epoch" in (
            proc.stderr
        ), proc.stderr
        assert "AGE-SECRET-KEY" not in proc.stderr
    proc = _restore(site, after, first_id, tmp_path / "no", new_host=False, ok=False)
    assert "not a recipient of key epoch 2" in proc.stderr, proc.stderr  # named, with its file
    assert "keys/epoch-" in proc.stderr

    listing = site.json("keys", "list", "--identity", second_id)["t"]
    assert listing["recipients"] == [second]
    assert [e["number"] for e in listing["epochs"]] == [1, 2]  # remove started epoch 2
    assert [e["current"] for e in listing["epochs"]] == [False, True]
    assert listing["epochs"][1]["snapshots"] == [after]
    assert [e["encrypted_to"] for e in listing["epochs"]] == [1, 1]  # the second alone
    assert before in listing["epochs"][0]["snapshots"]


def test_a_recipient_change_on_a_thousand_packs_writes_a_few_small_objects(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for i in range(1000):
        (src / f"d{i // 100}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i // 100}" / f"f{i}").write_bytes(os.urandom(1500))
    site.env["EMBERKEEP_TEST_PACK_TARGET"] = "1"  # every chunk its own pack
    site.write_config([src])
    site.run("init")
    site.run("backup")
    packs = len(repo_objects(site.repo, "data")) + len(repo_objects(site.repo, "meta"))
    assert packs >= 1000, packs
    _, second = site.keygen("second.txt")

    def state() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(site.repo)): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in site.repo.rglob("*")
            if p.is_file() and "locks" not in p.parts
        }

    was = state()
    started = time.perf_counter()
    change = site.json("keys", "add", second, "--update-config")["changes"][0]
    took = time.perf_counter() - started
    now = state()
    changed = sorted(name for name in now if now[name] != was.get(name))
    keys_objects = [n for n in changed if n.startswith("keys/")]
    written = [o for o in change["objects_written"] if o.startswith("keys/")]
    assert sorted(keys_objects) == sorted(written), (changed, change)
    assert set(changed) - set(keys_objects) <= {n for n in changed if n.startswith("siteconfig/")}
    assert len(keys_objects) == 3, keys_objects  # the epoch key, the writer key, the record
    configs = [o for o in change["objects_written"] if o.startswith("siteconfig/")]
    assert len(configs) == 1, change  # the one stored config, re-encrypted in place
    assert change["bytes_written"] < 8192, change
    print(
        f"\nrecipient change on {packs} packs: {len(keys_objects)} key objects and "
        f"{len(configs)} site config, "
        f"{change['bytes_written']} bytes written, {change['seconds']:.3f}s in the target, "
        f"{took:.2f}s for the whole command"
    )
    out = tmp_path / "out"
    _restore(site, "latest", site.identities[1], out)
    assert tree_listing(restored(out, src)) == tree_listing(src)

    started = time.perf_counter()
    checked = site.json("keys", "check", "--identity", site.identities[1])["targets"]["local"]
    took = time.perf_counter() - started
    assert checked["ok"] and checked["packs"] == packs and checked["reads"] == 2 * packs
    print(
        f"keys check on {packs} packs: {checked['reads']} ranged reads, "
        f"{checked['bytes_read']} bytes, {took:.2f}s for the whole command"
    )


def test_rotate_then_backup_both_restore_and_prune_drops_the_unused_epoch(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _write(src, "old/one.bin")
    site.write_config([src])
    site.run("init")
    site.run("backup")
    old = site.snapshots()[0]["id"]
    rotated = site.json("keys", "rotate")["changes"][0]
    assert [o for o in rotated["objects_written"] if o.startswith("keys/epoch-")], rotated
    shutil.rmtree(src / "old")
    _write(src, "new/two.bin")
    site.run("backup")
    new = site.snapshots()[-1]["id"]
    listing = site.json("keys", "list")["local"]
    assert [e["number"] for e in listing["epochs"]] == [1, 2]
    by_number = {e["number"]: e for e in listing["epochs"]}
    assert old in by_number[1]["snapshots"] and old not in by_number[2]["snapshots"]
    assert new in by_number[2]["snapshots"]
    for snap in (old, new):
        _restore(site, snap, site.identities[0], tmp_path / f"out-{snap[:6]}")
    assert tree_listing(restored(tmp_path / f"out-{new[:6]}", src)) == tree_listing(src)

    needs_one = new in by_number[1]["snapshots"]  # shared tree blobs, if any, keep it
    print(f"\nthe new snapshot needs epoch 1 too: {needs_one}")
    epoch_one = site.repo / by_number[1]["object"]
    site.run("prune", "--forget", old, "--grace", "0s")
    site.run("prune", "--grace", "0s")  # condemned packs go after the grace
    after = site.json("keys", "list")["local"]
    numbers = [e["number"] for e in after["epochs"]]
    if needs_one:
        assert numbers == [1, 2] and epoch_one.exists()
    else:
        assert numbers == [2] and not epoch_one.exists(), after
    out = tmp_path / "out-last"
    _restore(site, new, site.identities[0], out)
    assert tree_listing(restored(out, src)) == tree_listing(src)


def _legacy_site(site: Site, tmp_path: Path) -> Path:
    """The fixture repository (written before key epochs) as this site's target."""
    shutil.copytree(FIXTURE / "repo", site.repo)
    identity = tmp_path / "legacy-identity.txt"
    shutil.copy(FIXTURE / "identity.txt", identity)
    identity.chmod(0o600)
    site.identities.append(identity)
    site.recipients.append((FIXTURE / "recipient.txt").read_text().strip())
    site.write_config([FIXTURE / "src"])
    return identity


def _restores_the_fixture(site: Site, tmp_path: Path, identity: Path, name: str) -> None:
    snapshots = site.snapshots()
    assert len(snapshots) == 2
    for snap in snapshots:
        out = tmp_path / f"{name}-{snap['id'][:6]}"
        _restore(site, snap["id"], identity, out)
        a = (out / "tmp/legacy/src/a.txt").read_text()
        assert a in ("first file\n", "changed\n")
        got = (out / "tmp/legacy/src/sub/c.txt").read_bytes()
        assert got == (FIXTURE / "src/sub/c.txt").read_bytes()


def test_a_repository_from_before_epochs_restores_converts_and_restores_again(
    site: Site, tmp_path: Path
) -> None:
    identity = _legacy_site(site, tmp_path)
    assert site.json("keys", "list")["local"]["converted"] is False
    _restores_the_fixture(site, tmp_path, identity, "before")
    converted = site.json("keys", "convert")["changes"][0]
    assert "converted to key epochs" in converted["message"]
    assert not any(o.startswith(("data/", "meta/")) for o in converted["objects_written"])
    listing = site.json("keys", "list")["local"]
    assert [(e["number"], e["legacy"]) for e in listing["epochs"]] == [(0, True), (1, False)]
    assert len(listing["epochs"][0]["snapshots"]) == 2
    _restores_the_fixture(site, tmp_path, identity, "after")
    again = site.json("keys", "convert")["changes"][0]
    assert "nothing to convert" in again["message"]

    # the point of it: a new recipient reads what was written before epochs
    second_id, second = site.keygen("second.txt")
    site.json("keys", "add", second, "--update-config")
    _restores_the_fixture(site, tmp_path, second_id, "second")
    (tmp_path / "more").mkdir()
    site.write_config([FIXTURE / "src", tmp_path / "more"])
    site.recipients[:] = _config_recipients(site)
    site.write_config([FIXTURE / "src", tmp_path / "more"])
    _write(tmp_path / "more", "new.bin")
    site.run("backup")
    out = tmp_path / "latest"
    _restore(site, "latest", second_id, out)
    assert tree_listing(restored(out, tmp_path / "more")) == tree_listing(tmp_path / "more")


def test_keys_add_on_a_repository_from_before_epochs_converts_it_first(
    site: Site, tmp_path: Path
) -> None:
    _legacy_site(site, tmp_path)
    second_id, second = site.keygen("second.txt")
    change = site.json("keys", "add", second, "--update-config")["changes"][0]
    assert change["message"].startswith("converted to key epochs; added")
    _restores_the_fixture(site, tmp_path, second_id, "second")


# -- crash safety: SIGKILL at chosen moments, then the same command completes the change --


def _identity_file(tmp_path: Path, name: str, *sources: Path) -> Path:
    path = tmp_path / name
    path.write_text("".join(s.read_text() for s in sources))
    path.chmod(0o600)
    return path


def _every_snapshot_restores(site: Site, identity: Path, out: Path) -> None:
    for snap in site.snapshots():
        target = out / snap["id"][:8]
        _restore(site, snap["id"], identity, target)
        assert any(target.rglob("*.bin"))


def test_sigkill_at_ten_moments_of_key_changes_leaves_every_snapshot_restorable(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _write(src, "one.bin")
    a_id, a = site.keygen("a.txt")
    b_id, b = site.keygen("b.txt")
    site.recipients[:] = [a]
    site.write_config([src])
    site.run("init")
    site.run("backup")
    rotate_run = site.json("keys", "rotate")["changes"][0]  # to learn how many puts each makes
    _write(src, "two.bin")
    site.run("backup")
    puts = {"rotate": len(rotate_run["objects_written"]), "add": 3, "remove": 4}
    rng = random.Random("key-changes")
    moments = [(op, rng.randrange(puts[op])) for op in rng.choices(list(puts), k=10)]
    moments[:3] = [("add", 1), ("remove", 3), ("rotate", 0)]  # each operation at least once
    print(f"\nkill moments: {moments}")
    for trial, (op, n) in enumerate(moments):
        members = _config_recipients(site)
        if op == "add":
            recipient = b if a in members and b not in members else a
            args = ["keys", "add", recipient, "--update-config"]
            holders = [i for i, r in ((a_id, a), (b_id, b)) if r in members]
        elif op == "remove":
            if len(members) == 1:  # give it two first, so one can go
                other = b if members == [a] else a
                site.run(
                    "keys",
                    "add",
                    other,
                    "--update-config",
                    "--identity",
                    _holder(members, a, a_id, b_id),
                )
                members = _config_recipients(site)
            recipient = members[rng.randrange(2)]
            args = ["keys", "remove", recipient, "--update-config"]
            holders = [i for i, r in ((a_id, a), (b_id, b)) if r in members and r != recipient]
        else:
            args = ["keys", "rotate"]
            holders = [i for i, r in ((a_id, a), (b_id, b)) if r in members]
        identity = holders[0]
        proc = killed_at(site, f"put-{n}", *args, "--identity", str(identity))
        assert proc.returncode == -9, (op, n, proc.returncode, proc.stderr)
        # the identities both sets share read every snapshot, as a new host
        _every_snapshot_restores(site, identity, tmp_path / f"trial-{trial}")
        site.run(*args, "--identity", identity)  # the same command completes the change
        members_after = _config_recipients(site)
        listing = site.json("keys", "list")["local"]
        assert listing["recipients"] == members_after, (op, listing)
        if op == "add":
            assert recipient in members_after
        elif op == "remove":
            assert recipient not in members_after
        site.recipients[:] = members_after
        _every_snapshot_restores(site, identity, tmp_path / f"trial-{trial}-done")
    _write(src, "three.bin")
    site.run("backup")
    final = next(i for i, r in ((a_id, a), (b_id, b)) if r in _config_recipients(site))
    _every_snapshot_restores(site, final, tmp_path / "final")


def _holder(members: list[str], a: str, a_id: Path, b_id: Path) -> str:
    return str(a_id if a in members else b_id)


def test_sigkill_during_convert_then_convert_completes(site: Site, tmp_path: Path) -> None:
    identity = _legacy_site(site, tmp_path)
    for n in range(4):  # before each put: legacy epoch key, legacy table, epoch 1, record
        proc = killed_at(site, f"put-{n}", "keys", "convert")
        assert proc.returncode == -9, (n, proc.stderr)
        assert site.json("keys", "list")["local"]["converted"] is False  # the record is last
        _restores_the_fixture(site, tmp_path, identity, f"killed-{n}")
    site.run("keys", "convert")
    assert site.json("keys", "list")["local"]["converted"] is True
    _restores_the_fixture(site, tmp_path, identity, "converted")


def test_check_names_a_lost_epoch_key(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src, "one.bin")
    site.write_config([src])
    site.run("init")
    site.run("backup")
    epoch = site.json("keys", "list")["local"]["epochs"][0]
    (site.repo / epoch["object"]).unlink()
    proc = site.run("check", "--json", ok=False)
    errors = json.loads(proc.stdout)["local"]["errors"]
    assert any(e["object"] == epoch["object"] and "no reader can open" in str(e) for e in errors), (
        errors
    )


def test_a_backup_refuses_an_epoch_whose_key_file_is_missing(site: Site, tmp_path: Path) -> None:
    """Packs wrapped to an epoch whose file is gone could never be read back from this
    target (a record replayed from another target of the site does that): the backup
    writes nothing and names the file; `keys rotate` starts an epoch that has one."""
    src = tmp_path / "src"
    _write(src, "one.bin")
    site.write_config([src])
    site.run("init")
    site.run("backup")
    epoch = site.json("keys", "list")["local"]["epochs"][0]
    (site.repo / epoch["object"]).unlink()
    packs = set(repo_objects(site.repo, "data"))
    _write(src, "two.bin")
    proc = site.run("backup", ok=False)
    assert proc.returncode != 0
    assert epoch["object"] in proc.stderr and "keys rotate --target local" in proc.stderr
    assert set(repo_objects(site.repo, "data")) == packs and len(site.snapshots()) == 1
    site.run("keys", "rotate")
    (src / "one.bin").unlink()  # its pack is under the lost epoch: unreadable here for good
    site.run("backup")
    newest = site.snapshots()[-1]["id"]
    out = tmp_path / "out"
    _restore(site, newest, site.identities[0], out)
    assert tree_listing(restored(out, src)) == tree_listing(src)


def test_a_key_change_needs_a_current_recipient_and_a_real_recipient(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _write(src, "one.bin")
    site.write_config([src])
    site.run("init")
    site.run("backup")
    stranger_id, stranger = site.keygen("stranger.txt")
    before = sorted(p.read_bytes() for p in (site.repo / "keys").iterdir())
    proc = site.run("keys", "add", stranger, "--identity", stranger_id, ok=False)
    assert proc.returncode == 2 and "cannot read key epoch 1" in proc.stderr, proc.stderr
    assert "a current recipient" in proc.stderr
    proc = site.run("keys", "add", "age1notarecipient", ok=False)
    assert proc.returncode == 2 and "is not an age recipient" in proc.stderr, proc.stderr
    proc = site.run("keys", "remove", stranger, ok=False)
    assert proc.returncode == 2 and "is not a recipient" in proc.stderr, proc.stderr
    proc = site.run("keys", "remove", site.recipients[0], ok=False)
    assert proc.returncode == 2 and "no recipient" in proc.stderr, proc.stderr
    assert sorted(p.read_bytes() for p in (site.repo / "keys").iterdir()) == before

    # without --update-config: the line to write is printed, and backups wait for it
    proc = site.run("keys", "add", stranger)
    assert "recipients = [" in proc.stderr and stranger in proc.stderr, proc.stderr
    proc = site.run("backup", ok=False)
    assert "keys list" in proc.stderr, proc.stderr


def test_every_target_changes_and_a_copied_snapshot_brings_its_epoch(
    site: Site, tmp_path: Path
) -> None:
    """Two targets, each with its own epochs: a backup copies its snapshot to the second
    with the packs' epoch key (replicate), and a key change reaches both."""
    src = tmp_path / "src"
    _write(src, "one.bin")
    second_repo = tmp_path / "second-repo"
    blocks = (
        f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
        f'[[targets]]\nname = "second"\nurl = "file://{second_repo}"'
    )
    site.write_config([src], targets=blocks)
    site.run("init")
    site.run("backup")
    site.run("keys", "rotate", "--target", "local")  # the primary alone: epochs diverge
    _write(src, "two.bin")
    site.run("backup")
    local = site.json("keys", "list")
    primary_tags = {e["tag"] for e in local["local"]["epochs"]}
    copied_tags = {e["tag"] for e in local["second"]["epochs"]}
    assert primary_tags <= copied_tags, local  # the second has the primary's epochs too

    b_id, b = site.keygen("b.txt")
    changes = site.json("keys", "add", b, "--update-config")["changes"]
    assert [c["target"] for c in changes] == ["local", "second"]
    for target in ("local", "second"):
        snaps = site.json("snapshots", "--target", target)
        assert len(snaps) == 2
        for snap in snaps:
            out = tmp_path / f"{target}-{snap['id'][:6]}"
            key = site.state_dir / "writer.key"
            key.rename(key.with_suffix(".aside"))
            try:
                site.run("restore", snap["id"], "--target", target, "--to", out, "--identity", b_id)
            finally:
                key.unlink(missing_ok=True)
                key.with_suffix(".aside").rename(key)
            assert any(out.rglob("*.bin"))
