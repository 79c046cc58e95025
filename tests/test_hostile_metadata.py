"""What recover and readers trust: the site config, config, keys/recipients, keys/writer.age.

The storage side knows the recipients (they are public) and can add, replace and delete
objects, but holds no key (README, "How it keeps data safe"). Each test builds one of its
attacks, or one kind of damage, with the project's own modules and the real CLI, and shows
the refusal named and nothing run or written that should not be.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest
from conftest import Site, tree_listing

from emberkeep import config as ek_config
from emberkeep import keys
from emberkeep.errors import EmberkeepError, IntegrityError, WrongIdentity
from emberkeep.repository import layout, sealing
from emberkeep.repository.keyfiles import read_writer_key
from emberkeep.runner import maintenance
from emberkeep.runner.recover import plan_recover
from emberkeep.runner.site import Site as ApiSite
from emberkeep.storage import open_storage


def cli(site: Site, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """The CLI with stdin not a terminal (whatever runs the tests): nobody is asked."""
    proc = subprocess.run(
        [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **site.env},
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def recover(site: Site, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    url = f"file://{site.repo}"
    return cli(site, "recover", "--from", url, "--identity", site.identities[0], *args)


def backed_up(site: Site, tmp_path: Path, *, source_extra: str = "") -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("the shop's settings\n")
    (src / "b.bin").write_bytes(os.urandom(50_000))
    site.write_config([src], source_extra=source_extra)
    site.run("init")
    site.run("backup")
    return src


def destroy(site: Site, src: Path) -> None:
    """The host is gone: its files, config and state dir."""
    shutil.rmtree(src)
    site.config_path.unlink()
    shutil.rmtree(site.state_dir)


def plant_site_config(
    site: Site, toml: str, name: str, *, seal: str | None = None, time: str = "2099-01-01T00:00:00Z"
) -> str:
    """What anyone who knows a recipient can put under siteconfig/: a config encrypted to
    it, dated after every real one."""
    payload: dict[str, object] = {
        "format": 2, "path": str(site.config_path), "time": time, "toml": toml,
    }  # fmt: skip
    if seal is not None:
        payload["seal"] = seal
    recipient = pyrage.x25519.Recipient.from_str(site.recipients[0])
    obj = f"{layout.SITE_CONFIG}/{name}"
    (site.repo / obj).write_bytes(pyrage.encrypt(json.dumps(payload).encode(), [recipient]))
    return obj


def with_hook(toml: str, hook: str) -> str:
    changed = toml.replace("exclude = []", f"exclude = []\nhooks = {{ before_restore = {hook!r} }}")
    assert changed != toml
    return changed


def test_a_planted_site_config_is_refused_by_name_and_its_hook_never_runs(
    site: Site, tmp_path: Path
) -> None:
    src = backed_up(site, tmp_path)
    before = tree_listing(src)
    genuine = site.config_path.read_text()
    marker = tmp_path / "PWNED"
    evil = with_hook(genuine, f"id > {marker}; env >> {marker}")
    planted = plant_site_config(site, evil, "planted")
    forged = plant_site_config(site, evil, "forged-seal", seal="0" * 64)
    destroy(site, src)

    plan = recover(site, "--dry-run")
    shown = plan.stdout + plan.stderr
    assert plan.returncode == 1, shown  # the repository holds forged objects: a failure
    assert f"refused: {planted}: not sealed" in shown, shown
    assert f"refused: {forged}: its seal does not verify" in shown, shown
    assert "hooks: none" in plan.stdout  # the genuine config, shown: it has no hook
    assert not site.config_path.exists() and not marker.exists()

    done = recover(site, "--yes")  # even with every hook approved
    assert done.returncode == 1, done.stderr
    assert planted in done.stderr and "refused" in done.stderr
    assert not marker.exists()
    assert site.config_path.read_text() == genuine
    assert tree_listing(src) == before


def test_restore_hooks_run_only_when_approved(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    src = backed_up(site, tmp_path)
    genuine = with_hook(site.config_path.read_text(), f"echo ran >> {marker}")
    site.config_path.write_text(genuine)  # the site adds a hook; the next backup stores it
    site.env["EMBERKEEP_NOW"] = "2099-01-01T00:00:00Z"  # stored after the first, surely
    site.run("backup")
    del site.env["EMBERKEEP_NOW"]
    before = tree_listing(src)
    destroy(site, src)

    asked = recover(site)  # not on a terminal, no --yes: nothing is done
    assert asked.returncode == 2, asked.stderr
    assert "--yes" in asked.stderr and "--no-hooks" in asked.stderr
    assert f"hook files.before_restore: echo ran >> {marker}" in asked.stdout
    assert "hook files.before_restore added" in asked.stdout  # since the config before it
    assert not marker.exists() and not site.config_path.exists() and not src.exists()

    plan = json.loads(recover(site, "--dry-run", "--json").stdout)
    assert plan["restore_hooks"] == {"files.before_restore": f"echo ran >> {marker}"}
    assert plan["hooks_run"] is False and not marker.exists()

    recover(site, "--yes").check_returncode()
    assert marker.read_text() == "ran\n"
    assert tree_listing(src) == before

    marker.unlink()
    destroy(site, src)
    without = recover(site, "--no-hooks", "--json")
    assert without.returncode == 0, without.stderr
    assert json.loads(without.stdout)["hooks_run"] is False
    assert not marker.exists()
    assert tree_listing(src) == before
    assert site.config_path.read_text() == genuine  # the site's config, hooks and all


def test_a_fabricated_repository_is_caught_by_its_id(site: Site, tmp_path: Path) -> None:
    """Someone who can write to the target makes a whole repository of their own (a new
    writer key, encrypted to the public recipient): everything in it verifies, except the
    id the site's runbook gave."""
    backed_up(site, tmp_path)
    genuine_id = keys.WriterKey.load(site.state_dir / "writer.key").repo_id
    runbook = site.run("runbook").stdout
    assert f"--expect-repository {genuine_id}" in runbook

    impostor = Site(tmp_path / "impostor", recipients=list(site.recipients))
    impostor.identities.append(site.identities[0])
    impostor.root.mkdir()
    backed_up(impostor, impostor.root)
    url = f"file://{impostor.repo}"
    args = ["recover", "--from", url, "--identity", site.identities[0], "--dry-run"]
    trusting = cli(site, *args)
    assert trusting.returncode == 0  # it decrypts, it verifies: only the id differs
    assert genuine_id not in trusting.stdout
    refused = cli(site, *args, "--expect-repository", genuine_id)
    assert refused.returncode == 1
    assert f"not the expected {genuine_id}" in refused.stderr


def test_a_recipients_record_replaced_by_the_storage_side_is_refused_and_reported(
    site: Site, tmp_path: Path
) -> None:
    backed_up(site, tmp_path)
    record = site.repo / layout.RECIPIENTS
    original = record.read_bytes()
    _, attacker = site.keygen("attacker.txt")
    for forgery in (
        sealing.seal_secret(keys.WriterKey.generate(), "recipients", {"recipients": [attacker]}),
        sealing.seal(keys.WriterKey.generate(), "recipients", {"recipients": [attacker]}),
        b'{"format": 2, "recipients": ["' + attacker.encode() + b'"]}',
    ):
        record.write_bytes(forgery)
        snapshots = len(site.snapshots())
        backup = cli(site, "backup")
        assert backup.returncode == 1 and "keys/recipients" in backup.stderr, backup.stderr
        assert len(site.snapshots()) == snapshots
        check = cli(site, "check", "--json")
        assert check.returncode == 1
        errors = json.loads(check.stdout)["local"]["errors"]
        assert [e["object"] for e in errors] == [layout.RECIPIENTS], errors
    record.write_bytes(original)
    site.run("backup")


# -- bit flips: check reports every one, a backup host repairs what it can ---------------


def _flip(path: Path, rng: random.Random) -> int:
    data = bytearray(path.read_bytes())
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    return bit


@pytest.mark.parametrize("host", ["write-only", "with-identity", "new-host"])
def test_every_bit_flip_in_the_key_objects_is_reported_by_check(
    site: Site, tmp_path: Path, host: str
) -> None:
    """20 random bit flips in each object, each checked as a write-only backup host does
    (structural), as a host with an identity does (``--read-data``), and as a new host
    does that has only the identity (its writer key comes from the damaged copy)."""
    reader = host != "write-only"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    site.write_config([src], identity=True if reader else None)
    site.run("init")
    site.run("backup")
    api = ApiSite(ek_config.load(str(site.config_path)))
    pristine = {name: (site.repo / name).read_bytes() for name in _KEY_OBJECTS}
    rng = random.Random(f"flips-{host}")
    for name in _KEY_OBJECTS:
        for trial in range(20):
            for other, data in pristine.items():
                (site.repo / other).write_bytes(data)
            if host == "new-host":
                (site.state_dir / "writer.key").unlink(missing_ok=True)
            bit = _flip(site.repo / name, rng)
            try:
                result = maintenance.run_check(api, "local", read_data=reader, subset=None)
            except EmberkeepError as exc:  # the one object a new host cannot do without
                assert host == "new-host" and name == layout.WRITER_KEY, (name, bit, exc)
                assert f"{layout.WRITER_KEY}: damaged" in str(exc), (bit, exc)
                continue
            named = [e for e in result.errors if e["object"] == name]
            assert named and not result.ok, (name, trial, bit, result.errors)
            assert all(e["object"] == name for e in result.errors), (name, bit, result.errors)
            assert result.packs_read == (result.packs if reader else 0)
            if host == "new-host":
                continue
            again = maintenance.run_check(api, "local", read_data=False, subset=None)
            if name == layout.RECIPIENTS:  # never written over: it guards the recipient set
                assert [e["object"] for e in again.errors] == [name]
            else:  # the host holds the writer key: the check wrote it again
                assert again.ok, (name, bit, again.errors)


_KEY_OBJECTS = (layout.WRITER_KEY, layout.RECIPIENTS, layout.CONFIG)


def test_a_backup_host_writes_a_damaged_writer_key_copy_again(site: Site, tmp_path: Path) -> None:
    src = backed_up(site, tmp_path)
    copy = site.repo / layout.WRITER_KEY
    _flip(copy, random.Random(3))
    out = site.json("backup")[0]
    said = [w for w in out["warnings"] if w["path"].endswith(layout.WRITER_KEY)]
    assert said and "written again" in said[0]["message"], out["warnings"]
    assert site.json("check", "--read-data")["local"]["ok"] is True
    destroy(site, src)
    recover(site).check_returncode()  # a new host rebuilds the writer key from the copy
    assert (src / "a.txt").read_text() == "the shop's settings\n"


def test_recover_tells_a_damaged_writer_key_copy_from_a_wrong_identity(
    site: Site, tmp_path: Path
) -> None:
    backed_up(site, tmp_path)
    url = f"file://{site.repo}"
    identities = keys.load_identities(site.identities[0])
    storage = open_storage(url, name="local")
    copy = site.repo / layout.WRITER_KEY
    original = copy.read_bytes()
    flips = [_flipped(original, at) for at in (0, len(original) // 2, len(original) - 1)]
    for damaged in [*flips, _wrong_stanza(original, identities)]:
        copy.write_bytes(damaged)
        with pytest.raises(IntegrityError) as caught:
            read_writer_key(storage, identities)
        assert f"{layout.WRITER_KEY}: damaged" in str(caught.value), caught.value
    proc = recover(site, "--dry-run")
    assert proc.returncode == 1 and f"{layout.WRITER_KEY}: damaged" in proc.stderr, proc.stderr
    assert "not one of the recipients" not in proc.stderr

    copy.write_bytes(original)
    stranger, _ = site.keygen("stranger.txt")
    with pytest.raises(WrongIdentity):
        plan_recover(url, stranger, dry_run=True)
    proc = cli(site, "recover", "--from", url, "--identity", stranger, "--dry-run")
    assert proc.returncode == 1 and "not one of the recipients" in proc.stderr
    assert f"{layout.WRITER_KEY}: damaged" not in proc.stderr


def _flipped(data: bytes, position: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 0x04
    return bytes(damaged)


def _wrong_stanza(data: bytes, identities: list[pyrage.x25519.Identity]) -> bytes:
    """The copy with one character of its recipient stanza's wrapped file key changed for
    another valid one: age then finds no stanza it can open, exactly as for an identity
    that is not a recipient; only the site config beside it tells the two apart."""
    start = data.index(b"-> X25519 ")
    body = data.index(b"\n", start) + 1 + 10
    swapped = b"B" if data[body : body + 1] != b"B" else b"C"
    damaged = data[:body] + swapped + data[body + 1 :]
    with pytest.raises(pyrage.DecryptError, match=keys.NO_MATCHING_KEY):
        pyrage.decrypt(damaged, identities)
    return damaged


def test_a_damaged_host_writer_key_says_how_it_is_rebuilt(site: Site, tmp_path: Path) -> None:
    backed_up(site, tmp_path)
    path = site.state_dir / "writer.key"
    original = path.read_bytes()
    raw = json.loads(original)
    raw["index_key"] = (
        raw["index_key"][:5] + ("A" if raw["index_key"][5] != "A" else "B") + (raw["index_key"][6:])
    )  # still a key, no longer this one: its fingerprint tells
    for damaged in (b"{not json", json.dumps(raw).encode()):
        path.write_bytes(damaged)
        proc = cli(site, "snapshots")
        assert proc.returncode == 2, proc.stderr
        assert f"delete {path}" in proc.stderr and "identity" in proc.stderr
    path.unlink()
    assert len(site.snapshots()) == 1  # rebuilt from keys/writer.age with the identity
    assert path.read_bytes() == original


# -- repositories from before sealing ---------------------------------------------------


def _as_before_sealing(site: Site) -> None:
    """Rewrite config, keys/recipients and the site config as the format before sealing
    wrote them (no seal, no recorded digest, the site config's payload unsealed)."""
    from emberkeep.engine import crypto

    writer_key = keys.WriterKey.load(site.state_dir / "writer.key")
    config = json.loads((site.repo / layout.CONFIG).read_text())
    del config["seal"]
    (site.repo / layout.CONFIG).write_text(json.dumps(config, indent=1))
    plain = json.dumps({"format": 1, "recipients": sorted(site.recipients)}).encode()
    sealed = crypto.encrypt(writer_key.index_key, b"emberkeep recipients v1", plain)
    (site.repo / layout.RECIPIENTS).write_bytes(sealed)
    identities = keys.load_identities(site.identities[0])
    recipients = keys.parse_recipients(site.recipients)
    for path in (site.repo / layout.SITE_CONFIG).iterdir():
        payload = json.loads(pyrage.decrypt(path.read_bytes(), identities))
        payload = {k: v for k, v in payload.items() if k != "seal"} | {"format": 1}
        path.unlink()
        old = site.repo / layout.SITE_CONFIG / f"old{path.name[:8]}"
        old.write_bytes(keys.wrap(json.dumps(payload).encode(), recipients))


def test_a_repository_from_before_sealing_is_read_then_sealed_by_the_next_backup(
    site: Site, tmp_path: Path
) -> None:
    src = backed_up(site, tmp_path)
    _as_before_sealing(site)
    check = site.json("check")["local"]
    assert check["ok"] is True, check["errors"]
    assert {n["object"] for n in check["notes"]} >= {layout.CONFIG, layout.WRITER_KEY}

    saved = site.config_path.read_text()
    state = tmp_path / "state-aside"
    shutil.copytree(site.state_dir, state)
    destroy(site, src)
    refused = recover(site)
    assert refused.returncode == 1 and "--allow-unverified" in refused.stderr
    plan = recover(site, "--dry-run")
    assert plan.returncode == 0 and "UNVERIFIED" in plan.stdout
    assert not site.config_path.exists()

    site.config_path.write_text(saved)  # the host is back: its next backup seals
    shutil.copytree(state, site.state_dir)
    src.mkdir()
    (src / "a.txt").write_text("the shop's settings\n")
    out = site.json("backup")[0]
    assert any(w["path"].endswith(layout.CONFIG) for w in out["warnings"]), out["warnings"]
    assert "seal" in json.loads((site.repo / layout.CONFIG).read_text())
    check = site.json("check")["local"]
    assert check["ok"] is True and check["notes"] == [], check
    sealed = recover(site, "--dry-run")
    assert sealed.returncode == 0, sealed.stderr
    assert "sealed by the repository's writer key" in sealed.stdout
    assert "1 older unsealed site configs (from before sealing) not used" in sealed.stdout


def test_a_site_config_of_other_recipients_or_damaged_is_refused_not_fatal(
    site: Site, tmp_path: Path
) -> None:
    """Objects the identity cannot read do not stop a recovery: each is named."""
    src = backed_up(site, tmp_path)
    stranger = pyrage.x25519.Identity.generate().to_public()
    junk = site.repo / layout.SITE_CONFIG / "junk"
    junk.write_bytes(pyrage.encrypt(b"{}", [stranger]))
    broken = site.repo / layout.SITE_CONFIG / "broken"
    broken.write_bytes(b"age-encryption.org/v1\n-> nonsense\n")
    destroy(site, src)
    proc = recover(site, "--json")
    assert proc.returncode == 1
    refused = {r["object"]: r["reason"] for r in json.loads(proc.stdout)["refused"]}
    assert set(refused) == {"siteconfig/junk", "siteconfig/broken"}
    assert "other recipients" in refused["siteconfig/junk"]
    assert (src / "a.txt").exists()


def test_a_world_readable_identity_file_is_refused(site: Site, tmp_path: Path) -> None:
    identity, _ = site.keygen()
    identity.chmod(0o644)
    with pytest.raises(EmberkeepError) as caught:
        keys.load_identities(identity)
    message = str(caught.value)
    assert str(identity) in message and "0644" in message and f"chmod 600 {identity}" in message
    identity.chmod(0o600)
    assert keys.load_identities(identity)


def test_a_damaged_config_without_a_recipient_record_is_still_repaired(
    site: Site, tmp_path: Path
) -> None:
    """The snapshot headers show whose repository it is, so the backup host repairs all."""
    backed_up(site, tmp_path)
    (site.repo / layout.RECIPIENTS).unlink()
    (site.repo / layout.CONFIG).write_text("{damaged")
    out = site.json("backup")[0]
    repaired = {w["path"].split("/", 1)[1] for w in out["warnings"]}
    assert repaired >= {layout.CONFIG, layout.WRITER_KEY}, out["warnings"]
    check = site.json("check", "--read-data")["local"]
    assert check["ok"] is True and check["notes"] == [], check
