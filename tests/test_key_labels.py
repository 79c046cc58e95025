"""Recipient labels and `keys check` (README, "Keys and team changes"), through the CLI."""

from __future__ import annotations

import json
import os
import re
import struct
import tomllib
from pathlib import Path

import pyrage
import pytest
from conftest import Site, repo_objects

TRAILER = struct.Struct("<I4s")


def _write(src: Path, name: str, size: int = 40_000) -> None:
    path = src / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _set_recipients(site: Site, line: str) -> None:
    text = site.config_path.read_text()
    text = re.sub(r"(?m)^recipients = .*$", lambda _: line, text, count=1)
    site.config_path.write_text(text)


def _config_entries(site: Site) -> list[object]:
    return list(tomllib.loads(site.config_path.read_text())["keys"]["recipients"])


def _as_new_host(site: Site) -> Path:
    """This host's writer key moved aside: what a fresh host (recover) reads with."""
    key = site.state_dir / "writer.key"
    aside = site.state_dir / "writer.key.aside"
    key.rename(aside)
    return aside


def test_labels_from_config_add_remove_list_and_a_fresh_host(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src, "a.bin")
    alice_id, alice = site.keygen("alice.txt")
    _, bob = site.keygen("bob.txt")
    _, carol = site.keygen("carol.txt")
    site.recipients[:] = [alice, bob]
    site.write_config([src])
    _set_recipients(site, f'recipients = [{{ key = "{alice}", label = "alice" }}, "{bob}"]')
    site.run("init")
    site.run("backup")
    listing = site.json("keys", "list")["local"]
    assert listing["labels"] == {alice: "alice"}  # recorded from the config at init
    assert listing["recipients"] == sorted([alice, bob])

    added = site.json("keys", "add", carol, "--label", "dba", "--update-config")
    assert added["changes"][0]["labels"] == {alice: "alice", carol: "dba"}
    entries = _config_entries(site)
    assert {"key": carol, "label": "dba"} in entries and bob in entries, entries
    assert {"key": alice, "label": "alice"} in entries
    plan = site.run("recover", "--from", f"file://{site.repo}", "--identity", alice_id,
                    "--dry-run", "--json")  # fmt: skip
    planned = json.loads(plan.stdout)
    assert planned["labels"] == {alice: "alice", carol: "dba"}, planned
    assert f"recipient {carol} (dba) added" in planned["changes_since_previous"], planned
    proc = site.run("backup")  # the config names the set again: accepted, no label warning
    assert "recipient labels differ" not in proc.stdout + proc.stderr
    runbook = site.run("runbook").stdout
    assert f"`dba` (`{carol}`)" in runbook and f"`alice` (`{alice}`)" in runbook
    text = site.run("keys", "list").stdout + site.run("keys", "list").stderr
    assert f"recipient {carol} (dba)" in text and f"recipient {bob}\n" in text, text

    proc = site.run("keys", "remove", "nobody", ok=False)
    assert "no recipient is labelled 'nobody'" in proc.stderr
    assert "labels: alice, dba" in proc.stderr, proc.stderr
    proc = site.run("keys", "add", bob, "--label", "dba", ok=False)
    assert "label 'dba' is" in proc.stderr and carol in proc.stderr, proc.stderr
    proc = site.run("keys", "add", bob, "--label", "Bad Label", ok=False)
    assert "not a short name" in proc.stderr

    removed = site.json("keys", "remove", "dba", "--identity", alice_id)
    assert removed["changes"][0]["recipients"] == sorted([alice, bob])
    note = removed["config"]
    assert note and f'{{ key = "{alice}", label = "alice" }}' in note, note  # the line to put
    site.run("keys", "remove", "dba", "--update-config", ok=False)  # gone: named, refused
    _set_recipients(site, note.rsplit(": ", 1)[1])  # the printed line, put in by hand
    proc = site.run("backup")  # names the repository's keys and labels: no warning
    assert "recipient labels differ" not in proc.stdout + proc.stderr

    # labels live in the record: a host with only an identity, and a config without them
    _set_recipients(site, f"recipients = {json.dumps(sorted([alice, bob]))}")
    _as_new_host(site)
    listing = site.json("keys", "list", "--identity", alice_id)["local"]
    assert listing["labels"] == {alice: "alice"}
    assert [(r["recipient"], r["label"]) for r in listing["removed"]] == [(carol, "dba")]
    assert listing["removed"][0]["epochs"] == [1]


def test_a_bad_or_twice_used_label_is_a_config_error(site: Site) -> None:
    _, alice = site.keygen("alice.txt")
    _, bob = site.keygen("bob.txt")
    site.write_config([site.root])
    for line, said in (
        (f'recipients = [{{ key = "{alice}", label = "DBA team" }}]', "is not a short name"),
        (
            f'recipients = [{{ key = "{alice}", label = "ops" }}, '
            f'{{ key = "{bob}", label = "ops" }}]',
            "label 'ops' names two recipients",
        ),
        (f'recipients = [{{ key = "{alice}" }}]', "label"),
        ('recipients = [{ key = "age1nope", label = "x" }]', "is not an age recipient"),
    ):
        _set_recipients(site, line)
        proc = site.run("config", "check", ok=False)
        assert proc.returncode == 2 and said in proc.stderr, (line, proc.stderr)
        assert "keys.recipients" in proc.stderr, proc.stderr


def test_a_label_that_differs_from_the_record_is_a_warning_not_a_refusal(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _write(src, "a.bin")
    _, alice = site.keygen("alice.txt")
    site.write_config([src])
    _set_recipients(site, f'recipients = [{{ key = "{alice}", label = "alice" }}]')
    site.run("init")
    _set_recipients(site, f'recipients = [{{ key = "{alice}", label = "al" }}]')
    proc = site.run("backup")  # the keys are the same: the backup runs
    said = proc.stdout + proc.stderr
    assert "recipient labels differ" in said and "'al' in the config" in said, said
    assert len(site.snapshots()) == 1
    checked = site.run("check")
    assert "recipient labels differ" in checked.stdout + checked.stderr
    site.run("keys", "add", alice, "--label", "al", "--update-config")  # the fix it names
    proc = site.run("backup")
    assert "recipient labels differ" not in proc.stdout + proc.stderr


def _swap_wrapped_key(pack: Path, wrapped: bytes) -> None:
    """Replace a pack's wrapped data key: the frame rebuilt around it (pack.py's layout)."""
    data = pack.read_bytes()
    frame_len, magic = TRAILER.unpack(data[-TRAILER.size :])
    start = len(data) - TRAILER.size - frame_len
    (length,) = struct.unpack_from("<H", data, start)
    table = data[start + 2 + length : -TRAILER.size]
    frame = struct.pack("<H", len(wrapped)) + wrapped + table
    assert len(frame) == frame_len  # the size the index records, or it is refused for that
    pack.chmod(0o600)
    pack.write_bytes(data[:start] + frame + TRAILER.pack(len(frame), magic))


def _wrapped_key(pack: Path) -> bytes:
    data = pack.read_bytes()
    frame_len, _ = TRAILER.unpack(data[-TRAILER.size :])
    start = len(data) - TRAILER.size - frame_len
    (length,) = struct.unpack_from("<H", data, start)
    return data[start + 2 : start + 2 + length]


def test_keys_check_counts_packs_per_epoch_and_names_a_foreign_or_damaged_key(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for i in range(6):
        _write(src, f"old/{i}.bin", 3000)
    site.env["EMBERKEEP_TEST_PACK_TARGET"] = "1"  # every chunk its own pack
    site.write_config([src])
    site.run("init")
    site.run("backup")
    site.run("keys", "rotate")
    for i in range(4):
        _write(src, f"new/{i}.bin", 3000)
    site.run("backup")
    packs = repo_objects(site.repo, "data") + repo_objects(site.repo, "meta")
    report = site.json("keys", "check")
    assert report["ok"] is True
    t = report["targets"]["local"]
    assert t["packs"] == len(packs) and not t["failed"]
    per_epoch = {e["number"]: (e["packs"], e["opened"]) for e in t["epochs"]}
    assert set(per_epoch) == {1, 2} and sum(p for p, _ in per_epoch.values()) == len(packs)
    assert all(p == o for p, o in per_epoch.values()) and per_epoch[2][0] >= 4
    assert t["reads"] == 2 * len(packs)  # the trailer and the wrapped key, nothing else
    assert t["bytes_read"] <= (8 + 2 + 2048) * len(packs), t  # the trailer, then the key
    text = site.run("keys", "check", "--target", "local").stdout
    assert f"all {len(packs)} packs' data keys open" in text, text

    data_packs = sorted(repo_objects(site.repo, "data"))
    foreign_pack, damaged_pack = data_packs[0], data_packs[-1]
    stranger = pyrage.x25519.Identity.generate().to_public()
    # age adds a stanza of random length ("grease"): wrap until it is the pack's length
    length = len(_wrapped_key(foreign_pack))
    foreign = next(
        w for _ in range(100_000) if len(w := pyrage.encrypt(os.urandom(32), [stranger])) == length
    )
    _swap_wrapped_key(foreign_pack, foreign)
    damaged = bytearray(_wrapped_key(damaged_pack))
    damaged[-5] ^= 0x40  # in the encrypted payload
    _swap_wrapped_key(damaged_pack, bytes(damaged))

    proc = site.run("keys", "check", "--json", ok=False)
    assert proc.returncode == 1
    failed = {f["pack"]: f["reason"] for f in json.loads(proc.stdout)["targets"]["local"]["failed"]}
    name = lambda p: str(p.relative_to(site.repo))  # noqa: E731
    assert set(failed) == {name(foreign_pack), name(damaged_pack)}, failed
    assert "not wrapped to key epoch" in failed[name(foreign_pack)]
    assert "damaged" in failed[name(damaged_pack)]
    proc = site.run("keys", "check", ok=False)
    assert proc.returncode == 1
    assert f"2 of {len(packs)} packs' data keys do not open" in proc.stdout
    assert name(foreign_pack) in proc.stdout and name(damaged_pack) in proc.stdout
    assert "AGE-SECRET-KEY" not in proc.stdout + proc.stderr


def test_keys_check_says_what_a_removed_recipient_can_still_read(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _write(src, "kept.bin")
    alice_id, alice = site.keygen("alice.txt")
    _, bob = site.keygen("bob.txt")
    site.write_config([src])
    _set_recipients(site, f'recipients = ["{alice}", {{ key = "{bob}", label = "bob" }}]')
    site.run("init")
    site.run("backup")
    _write(src, "second.bin")
    site.run("backup")
    before = [s["id"] for s in site.snapshots()]
    text = site.run("keys", "check").stdout
    assert "no removed recipient is recorded" in text, text

    site.run("keys", "remove", "bob", "--update-config", "--identity", alice_id)
    _write(src, "third.bin")  # kept.bin and second.bin are deduplicated: old packs reused
    site.run("backup")
    report = site.json("keys", "check")
    assert report["ok"] is True
    (gone,) = report["targets"]["local"]["removed"]
    assert (gone["recipient"], gone["label"]) == (bob, "bob")
    assert gone["epochs"] == [1] and gone["before_epoch"] == 2
    assert gone["snapshots"] == before  # every snapshot written before epoch 2 began
    assert gone["partly_readable_snapshots"] == 1  # the third reuses their packs
    text = site.run("keys", "check").stdout
    assert f"bob ({bob}) removed" in text, text
    assert "can still read every snapshot written before epoch 2 began (2 snapshots" in text
    assert "--re-encrypt" in text and "keys rotate" in text

    site.run("keys", "add", bob, "--update-config", "--identity", alice_id)  # back again
    assert not site.json("keys", "check")["targets"]["local"]["removed"]


@pytest.mark.parametrize("kind", ["sftp", "s3"])
def test_keys_check_on_a_remote_target_reads_only_trailers_and_keys(
    site: Site, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    src = tmp_path / "src"
    for i in range(3):
        _write(src, f"{i}.bin", 200_000)
    if kind == "sftp":
        url = request.getfixturevalue("sftp_server").url(tmp_path / "remote-repo")
    else:
        s3 = request.getfixturevalue("s3_server")
        site.env.update(s3.env())
        url = s3.url(s3.make_bucket(), "site")
    site.write_config([src], targets=f'[[targets]]\nname = "r"\nurl = "{url}"')
    site.run("init")
    site.run("backup")
    t = site.json("keys", "check")["targets"]["r"]
    assert t["ok"] and t["packs"] >= 2 and t["reads"] == 2 * t["packs"], t
    stored = sum(e["packs"] for e in t["epochs"])
    assert stored == t["packs"]
    assert t["bytes_read"] <= (8 + 2 + 2048) * t["packs"], t  # of ~600 KB stored
    print(f"\n{kind}: keys check read {t['bytes_read']} bytes in {t['reads']} reads")
