"""Prune, `latest`, the RPO and the record of what a target held, against a hostile storage
side, a forging writer and wrong clocks (README, How it keeps data safe).

Each attack is built with the project's own modules (an index file or a snapshot header
sealed with the writer key, as a compromised writer host could) or by deleting objects in
the target (as whoever runs it can), and is then shown to fail through the CLI. The one
race (a prune during a backup) is held at a fixed point by a hook in the backup's storage,
never by a sleep.
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import Site, restored, tree_listing
from robustness_helpers import check_json, objects, packs, write_random

from emberkeep import clock
from emberkeep import config as ek_config
from emberkeep.engine.backup import backup as engine_backup
from emberkeep.repository import layout
from emberkeep.repository.index import PackRecord, encode_index
from emberkeep.repository.pack import BlobEntry
from emberkeep.repository.repo import Repository
from emberkeep.runner.backup import run_backup
from emberkeep.runner.site import Site as ApiSite
from emberkeep.sources.files import FilesWalker
from emberkeep.storage.base import Payload, Storage

MB = 1024 * 1024


def _repo(site: Site) -> Repository:
    return ApiSite(ek_config.load(str(site.config_path))).repository("local")


def _files(root: Path, tag: str, count: int = 2, size: int = MB) -> Path:
    for i in range(count):
        write_random(root / f"{tag}-{i}.bin", size + i * 4099)
    return root


def _assert_restores(site: Site, snapshot: str, source: Path, listing: Any, dest: Path) -> None:
    site.run("restore", snapshot, "--to", dest)
    assert tree_listing(restored(dest, source)) == listing, f"snapshot {snapshot[:12]}"


def _status(site: Site) -> tuple[int, dict[str, Any]]:
    proc = site.run("status", "--json", ok=None)
    return proc.returncode, json.loads(proc.stdout)


# -- a shadow index: every blob listed again, in packs that do not exist ------------------


def _plant_shadow_index(repo: Repository) -> str:
    """An index file, sealed with the writer key's index key, that lists every blob again
    in a data and a meta pack that do not exist, named to sort before every real pack and
    the file itself before every real index file. Returns its name."""
    entries: dict[int, list[BlobEntry]] = {}
    for name in repo.index_files():
        for record in repo.read_index_file(name):
            entries.setdefault(record.kind, []).extend(record.entries)
    fake = [
        PackRecord(layout.pack_object(kind, "00" * 32), kind, 1 << 20, tuple(listed))
        for kind, listed in sorted(entries.items())
    ]
    first = min(repo.index_files())
    while True:  # the name is the SHA-256 of the sealed bytes (random nonce): draw again
        name, sealed = encode_index(fake, repo.writer_key.index_key)
        if name < first:
            break
    repo.storage.put(name, sealed)
    return name


def test_a_shadow_index_makes_prune_delete_no_live_pack(site: Site, tmp_path: Path) -> None:
    src = _files(tmp_path / "src", "one")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    first_listing = tree_listing(src)
    _files(src, "two")
    site.run("backup")
    second_listing = tree_listing(src)
    first, second = (s["id"] for s in site.snapshots())
    live = packs(objects(site.repo))

    shadow = _plant_shadow_index(_repo(site))
    result = check_json(site, rc=1)
    assert [e["object"] for e in result["errors"]] == [shadow], result["errors"]
    assert "not in the target" in result["errors"][0]["error"]
    assert "ignored" in result["errors"][0]["error"]

    site.run("prune", "--grace", "0s")  # an ordinary prune, as the scheduler runs it
    assert live <= objects(site.repo), f"live packs deleted: {sorted(live - objects(site.repo))}"
    _assert_restores(site, first, src, first_listing, tmp_path / "r1")
    _assert_restores(site, second, src, second_listing, tmp_path / "r2")
    after = check_json(site, "--read-data", rc=0)  # prune dropped the shadow entries
    assert after["errors"] == [] and after["snapshots"] == 2


def test_prune_deletes_nothing_while_a_kept_snapshot_has_blobs_in_no_pack(
    site: Site, tmp_path: Path
) -> None:
    """The storage side deletes the index file: the packs look like a crash's leftovers."""
    src = _files(tmp_path / "src", "one")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    [snapshot] = site.snapshots()
    for index_file in (site.repo / "index").iterdir():
        index_file.unlink()
    before = objects(site.repo)

    proc = site.run("prune", "--grace", "0s", ok=False)
    assert proc.returncode == 1
    message = proc.stderr
    assert snapshot["short_id"] in message and "blobs" in message, message
    assert f"prune --forget {snapshot['short_id']}" in message, message
    assert objects(site.repo) == before, "prune deleted objects"


# -- clocks ----------------------------------------------------------------------------


def _forge_future(repo: Repository, snapshot_id: str, days: int) -> str:
    """A copy of a snapshot's header dated ``days`` later, sealed with the index key."""
    [real] = [s for s in repo.snapshots() if s.id == snapshot_id]
    real.time += timedelta(days=days)
    real.seq = (real.seq or 0) + days
    return repo.save_snapshot(real)


def test_future_dated_snapshots_take_no_retention_slot_and_fake_no_rpo(
    site: Site, tmp_path: Path
) -> None:
    src = _files(tmp_path / "src", "one")
    site.write_config(
        paths=[src], source_extra='retention = { daily = 2 }\nobjectives = { rpo = "1h" }'
    )
    site.env["EMBERKEEP_NOW"] = "2026-03-10T02:00:00Z"
    site.run("init")
    site.run("backup")
    listing = tree_listing(src)
    [real] = site.snapshots()
    repo = _repo(site)
    forged = [_forge_future(repo, real["id"], days) for days in (365, 366)]

    site.env["EMBERKEEP_NOW"] = "2026-03-10T04:00:00Z"  # two hours later: past the RPO
    code, report = _status(site)
    [source] = report["sources"]
    assert source["rpo_state"] == "breached" and code == 1, source
    assert source["last_backup"]["snapshot"] == real["id"]
    assert report["targets"][0]["future_snapshots"] == 2
    assert any(forged[0][:12] in w or forged[1][:12] in w for w in report["warnings"])

    checked = check_json(site, rc=0)
    future = [w for w in checked["warnings"] if "after now" in w]
    assert len(future) == 2 and all(any(f[:12] in w for w in future) for f in forged), future

    pruned = site.json("prune", "--grace", "0s")["local"]
    decided = {d["id"]: (d["action"], d["reason"]) for d in pruned["snapshots"]}
    assert decided[real["id"]] == ("keep", "daily 1/2"), decided
    assert all(decided[f][0] == "keep" and "future" in decided[f][1] for f in forged)
    _assert_restores(site, real["id"], src, listing, tmp_path / "restore")


def test_after_a_clock_step_back_latest_is_the_snapshot_written_last(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    version = src / "version.txt"
    site.write_config(paths=[src], source_extra="retention = { daily = 1 }")
    site.run("init")
    written = []
    clocks = ("2026-03-10T02:00:00Z", "2026-03-10T20:00:00Z", "2026-03-10T10:00:00Z")
    for now, text in zip(clocks, ("one", "two", "three"), strict=True):
        version.write_text(text)
        site.env["EMBERKEEP_NOW"] = now  # the third backup's clock stepped back 10 hours
        [entry] = site.json("backup")
        written.append(entry)
    warned = [[w["message"] for w in e["warnings"] if w["path"] == "clock"] for e in written]
    assert warned[:2] == [[], []] and len(warned[2]) == 1, warned
    assert "behind the newest snapshot" in warned[2][0]

    ids = [e["snapshot"]["id"] for e in written]
    listed = site.snapshots()  # by time, as the contract says; seq tells the order written
    assert [s["id"] for s in listed] == [ids[0], ids[2], ids[1]]
    assert [s["seq"] for s in listed] == [1, 3, 2]
    assert "seq" in site.run("snapshots").stdout
    out = tmp_path / "latest"
    site.run("restore", "latest", "--to", out)
    assert (restored(out, src) / "version.txt").read_text() == "three"

    pruned = site.json("prune", "--grace", "0s")["local"]
    kept = [d["id"] for d in pruned["snapshots"] if d["action"] == "keep"]
    assert kept == [ids[2]], pruned["snapshots"]


class _StallBeforeIndex:
    """A storage that calls ``hook`` before it writes an index file (the backup's packs
    are uploaded by then, and no index lists them yet)."""

    def __init__(self, inner: Storage, hook: Callable[[], None]) -> None:
        self._inner = inner
        self._hook = hook
        self.label = inner.label

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        if name.startswith(f"{layout.INDEX}/"):
            self._hook()
        self._inner.put(name, data, overwrite=overwrite)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_prune_a_day_ahead_leaves_a_running_backups_packs_alone(
    site: Site, tmp_path: Path
) -> None:
    src = _files(tmp_path / "src", "d", count=3, size=3 * MB)
    site.write_config(paths=[src])
    site.run("init")
    listing = tree_listing(src)
    stalled, resume = threading.Event(), threading.Event()

    def hold() -> None:
        stalled.set()
        assert resume.wait(120), "the test never let the backup go on"

    repo = _repo(site)
    repo.storage = _StallBeforeIndex(repo.storage, hold)  # type: ignore[assignment]
    outcome: dict[str, Any] = {}

    def run_backup() -> None:
        walker = FilesWalker([src], [])
        try:
            outcome["result"] = engine_backup(
                repo,
                walker.walk(),
                source="files",
                source_type="files",
                paths=walker.roots,
                now=clock.now(),
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run_backup, name="running-backup")
    thread.start()
    try:
        assert stalled.wait(120), "the backup never came to its index"
        uploaded = packs(objects(site.repo))
        assert uploaded, "the backup uploaded no pack before its index"
        site.env["EMBERKEEP_NOW"] = clock.iso(clock.now() + timedelta(days=1))
        pruned = site.json("prune", "--grace", "0s")["local"]
        del site.env["EMBERKEEP_NOW"]
        assert uploaded <= objects(site.repo), "prune deleted the running backup's packs"
        assert pruned["packs_deleted"] == 0 and pruned["packs_deferred"] == len(uploaded)
    finally:
        resume.set()
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    snapshot = outcome["result"].snapshot
    check_json(site, "--read-data", rc=0)
    _assert_restores(site, snapshot.id, src, listing, tmp_path / "restore")


# -- deletion and rollback noticed -------------------------------------------------------


def _two_backups(site: Site, tmp_path: Path) -> str:
    """Two snapshots of a small source; returns the newest's id."""
    src = _files(tmp_path / "src", "one", count=1)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    _files(src, "two", count=1)
    site.run("backup")
    return str(site.snapshots()[-1]["id"])


def test_the_newest_snapshot_deleted_by_the_storage_side_is_noticed(
    site: Site, tmp_path: Path
) -> None:
    newest = _two_backups(site, tmp_path)
    code, report = _status(site)
    assert code == 0 and report["snapshots_gone"] == [], report

    (site.repo / layout.SNAPSHOTS / newest).unlink()  # or the whole target rolled back
    checked = check_json(site, rc=0)
    assert any(newest[:12] in w and "is gone" in w for w in checked["warnings"]), checked
    code, report = _status(site)
    assert code == 1 and report["state"] == "breach"
    assert any(newest[:12] in g for g in report["snapshots_gone"]), report
    assert "gone: " in site.run("status", ok=False).stdout
    [entry] = site.json("backup")
    assert any(newest[:12] in w["message"] for w in entry["warnings"]), entry["warnings"]

    code, report = _status(site)  # a newer backup does not make the deletion go away
    assert code == 1 and any(newest[:12] in g for g in report["snapshots_gone"]), report
    (site.state_dir / "snapshots-seen.json").unlink()  # the operator accepts the target
    code, report = _status(site)
    assert code == 0 and report["snapshots_gone"] == [], report


def test_this_hosts_own_prune_is_no_deletion_and_a_damaged_memory_is_rebuilt(
    site: Site, tmp_path: Path
) -> None:
    newest = _two_backups(site, tmp_path)
    site.run("prune", "--forget", newest, "--grace", "0s")
    code, report = _status(site)
    assert code == 0 and report["snapshots_gone"] == [], report

    memory = site.state_dir / "snapshots-seen.json"
    assert stat.S_IMODE(memory.stat().st_mode) == 0o600
    for damage in ('{"format": 1, "targets": {"local": {"snapshots": "many"}}}', "{not json"):
        memory.write_text(damage)
        code, report = _status(site)
        assert code == 0 and report["snapshots_gone"] == [], report
        assert any("damaged" in w and "rebuilt" in w for w in report["warnings"]), report
        assert len(json.loads(memory.read_text())["targets"]["local"]["snapshots"]) == 1


def test_a_backup_reads_only_the_snapshot_headers_its_host_has_not_seen(
    site: Site, tmp_path: Path
) -> None:
    """The seq goes on from what the host remembers; what it does not know it reads."""
    src = _files(tmp_path / "src", "one", count=1, size=1024)
    site.write_config(paths=[src])
    site.run("init")
    api = ApiSite(ek_config.load(str(site.config_path)))
    first = run_backup(api, "files").result
    second = run_backup(api, "files").result
    assert [s.id for s in second.previous] == [], "read headers the host had seen"
    assert (first.snapshot.seq, second.snapshot.seq) == (1, 2)
    (site.state_dir / "snapshots-seen.json").unlink()  # a new host, say
    third = run_backup(api, "files").result
    assert {s.id for s in third.previous} == {first.snapshot.id, second.snapshot.id}
    assert third.snapshot.seq == 3
    other = third.snapshot  # another writer host's snapshot, further on
    other.seq, other.host = 50, "other-host"
    _repo(site).save_snapshot(other)
    site.run("check")  # sees it by name only: the next backup must still read its header
    fourth = run_backup(api, "files").result
    assert [s.id for s in fourth.previous] == [other.id] and fourth.snapshot.seq == 51
