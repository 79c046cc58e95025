"""Backups and prune at the same time (docs/design.md, "Concurrency").

Backups are append-only and take no exclusive lock, so two of them run side by side.
Prune condemns, then deletes after a grace period and only when no backup that began
before the condemnation is still running, so a concurrent backup never loses a blob.
The last tests drive exact interleavings through the Python API.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, tree_listing
from robustness_helpers import check_json, finish, objects, packs, popen, restored, write_random

from emberkeep import clock
from emberkeep import config as ek_config
from emberkeep.engine.backup import backup as engine_backup
from emberkeep.repository import lease as lease_module
from emberkeep.repository.check import check
from emberkeep.repository.lease import Lease, LeaseWatch
from emberkeep.repository.prune import prune
from emberkeep.repository.repo import Repository
from emberkeep.repository.snapshot import Snapshot
from emberkeep.site import Site as ApiSite
from emberkeep.sources.files import FilesWalker
from emberkeep.storage.base import ObjectInfo, Storage

MB = 1024 * 1024


def _data(root: Path, tag: str, files: int = 3, size: int = 3 * MB) -> Path:
    for i in range(files):
        write_random(root / f"{tag}-{i}.bin", size + i * 4099)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "sub" / f"{tag}.txt").write_text(f"{tag}\n" * 1000)
    return root


def _assert_restores(site: Site, snapshot: str, source: Path, dest: Path) -> None:
    site.run("restore", snapshot, "--to", dest)
    assert tree_listing(restored(dest, source)) == tree_listing(source)


# -- two backups at once -------------------------------------------------------------------


def test_two_backups_of_different_sources_at_once_both_succeed(site: Site, tmp_path: Path) -> None:
    media, other = tmp_path / "media", tmp_path / "other"
    site.write_config(
        paths=[media],
        extra_sources=(f'[[sources]]\nname = "other"\ntype = "files"\npaths = ["{other}"]\n'),
    )
    site.run("init")
    for round_ in range(2):
        _data(media, f"media{round_}", files=4, size=12 * MB)
        _data(other, f"other{round_}", files=4, size=12 * MB)
        shared = os.urandom(3 * MB)  # the same content in both: both dedup it at once
        (media / f"shared{round_}.bin").write_bytes(shared)
        (other / f"shared{round_}.bin").write_bytes(shared)

        first = popen(site, "backup", "files", "--json", "-q")
        second = popen(site, "backup", "other", "--json", "-q")
        made = {}
        for proc, name in ((first, "files"), (second, "other")):
            [outcome] = json.loads(finish(proc, f"backup {name}"))
            assert outcome["source"] == name
            made[name] = outcome["snapshot"]["id"]

        listed = {s["id"]: s["source"] for s in site.snapshots()}
        assert listed[made["files"]] == "files" and listed[made["other"]] == "other"
        assert len(listed) == 2 * (round_ + 1)
        result = check_json(site, "--read-data", rc=0)
        assert result["errors"] == [] and result["leftovers"] == []
        _assert_restores(site, made["files"], media, tmp_path / f"r{round_}-files")
        _assert_restores(site, made["other"], other, tmp_path / f"r{round_}-other")


# -- prune racing a backup through the CLI -------------------------------------------------

# Seconds prune starts after the backup (negative: before), and whether the backup must
# read every file again (touched mtimes defeat the files cache) or takes them from it.
RACES = [(-0.25, False), (-0.1, True), (0.0, False), (0.1, True), (0.25, False), (0.4, True)]


def test_prune_forgetting_racing_a_backup_of_the_same_data_loses_nothing(
    site: Site, tmp_path: Path
) -> None:
    source = _data(tmp_path / "src", "d", files=5, size=9 * MB)
    site.write_config(paths=[source])
    site.run("init")
    site.run("backup")
    for i, (offset, touch) in enumerate(RACES):
        [previous] = site.snapshots()
        if touch:
            stamp = time.time() - 1000 + i
            for path in source.rglob("*"):
                os.utime(path, (stamp, stamp))
        prune_args = ("prune", "--forget", previous["id"], "--grace", "0s", "-q")
        if offset < 0:
            pruning = popen(site, *prune_args)
            time.sleep(-offset)
            backing = popen(site, "backup", "-q")
        else:
            backing = popen(site, "backup", "-q")
            time.sleep(offset)
            pruning = popen(site, *prune_args)
        finish(backing, f"race {i}: backup")
        finish(pruning, f"race {i}: prune")

        snapshots = site.snapshots()
        assert [s["id"] for s in snapshots] != [previous["id"]]
        assert len(snapshots) == 1, f"race {i}: {snapshots}"
        check_json(site, "--read-data", what=f"race {i} (prune {offset:+}s, touched {touch})")
        dest = tmp_path / f"restore{i}"
        _assert_restores(site, "latest", source, dest)
        shutil.rmtree(dest)


# -- the protocol, step by step through the Python API ----------------------------------


def _repo(site: Site, *, read: bool = False) -> Repository:
    return ApiSite(ek_config.load(str(site.config_path))).repository("local", read=read)


def _backup(repo: Repository, source: Path) -> Snapshot:
    walker = FilesWalker([source], [])
    result = engine_backup(
        repo,
        walker.walk(),
        source="files",
        source_type="files",
        paths=walker.roots,
        now=clock.now(),
    )
    return result.snapshot


class _Hooked:
    """A storage that calls ``hook(prefix)`` after listing a folder, before returning."""

    def __init__(self, inner: Storage, hook: Callable[[str], None]) -> None:
        self._inner = inner
        self._hook = hook
        self.label = inner.label

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        found = list(self._inner.list(prefix))
        self._hook(prefix)
        return iter(found)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _one_snapshot(site: Site, tmp_path: Path) -> tuple[Path, str]:
    source = _data(tmp_path / "src", "d", files=3, size=4 * MB)
    site.write_config(paths=[source])
    site.run("init")
    site.run("backup")
    [snapshot] = site.snapshots()
    return source, snapshot["id"]


def test_prune_defers_deletion_while_an_earlier_backup_lease_lives(
    site: Site, tmp_path: Path
) -> None:
    _source, s1 = _one_snapshot(site, tmp_path)
    s1_packs = packs(objects(site.repo))
    repo = _repo(site)
    with Lease(repo.storage, "backup"):  # a backup that read the index before the marks
        held = prune(repo, forget=[s1], grace=timedelta(0))
        assert held.packs_condemned == len(s1_packs) > 0
        assert held.packs_deferred == len(s1_packs)
        assert held.packs_deleted == 0
        assert s1_packs <= objects(site.repo), "a pack was deleted under a running backup"
    after = prune(repo, grace=timedelta(0))
    assert after.packs_deferred == 0
    assert after.packs_deleted == len(s1_packs)
    assert not packs(objects(site.repo))
    assert not {n for n in objects(site.repo) if n.startswith("trash/")}
    assert check(_repo(site)).ok


def _blobs_outside(repo: Repository, excluded: set[str]) -> set[bytes]:
    """Blob ids stored in packs other than ``excluded``, from every index file's records
    (``BlobIndex`` keeps one location per blob, so it cannot answer this)."""
    return {
        entry.id
        for name in repo.index_files()
        for record in repo.read_index_file(name)
        if record.name not in excluded
        for entry in record.entries
    }


def test_backup_after_condemnation_does_not_deduplicate_against_condemned_packs(
    site: Site, tmp_path: Path
) -> None:
    """Several rounds, each: snapshot new data, forget it (prune with a long grace marks its
    packs), back the same data up again, then prune with no grace. The second backup must
    store its own copies, and the last prune must delete exactly the condemned packs.
    (Which copy of a blob stored twice the index resolves to depends on the names of the
    index files, so the rounds cover both orders.)"""
    source = tmp_path / "src"
    site.write_config(paths=[source])
    site.run("init")
    for round_ in range(6):
        shutil.rmtree(source, ignore_errors=True)
        _data(source, f"round{round_}", files=2, size=1 * MB)
        first = _backup(_repo(site), source)
        repo = _repo(site)
        condemning = prune(repo, forget=[first.id], grace=timedelta(hours=1))
        condemned = set(repo.condemned())
        assert condemning.packs_condemned == len(condemned) > 0
        assert condemning.packs_deleted == 0

        again = _backup(_repo(site), source)  # the same data, after the marks
        assert again.summary["blobs_new"] > 0 and again.summary["packs_new"] > 0
        fresh = _repo(site)
        outside = _blobs_outside(fresh, condemned)
        only_condemned = [b.hex()[:16] for b in again.blob_ids() if b not in outside]
        assert not only_condemned, f"round {round_}: blobs only in condemned packs"

        deleting = prune(fresh, grace=timedelta(0))
        left = condemned & objects(site.repo)
        assert not left, (
            f"round {round_}: prune kept condemned packs no snapshot needs ({deleting})"
        )
        checked = check(_repo(site, read=True), read_data=True)
        assert checked.ok, f"round {round_}: {checked.errors}"
    _assert_restores(site, "latest", source, tmp_path / "restore")


def test_backup_after_condemnation_through_the_files_cache(site: Site, tmp_path: Path) -> None:
    """The files cache remembers blob ids of condemned packs: it must not reuse them."""
    source, s1 = _one_snapshot(site, tmp_path)
    s1_packs = packs(objects(site.repo))
    site.run("prune", "--forget", s1)  # default grace (1h): condemned, not deleted
    assert s1_packs <= objects(site.repo)
    [again] = json.loads(site.run("backup", "--json").stdout)
    assert again["snapshot"]["summary"]["bytes_from_cache"] == 0
    repo = _repo(site)
    [snapshot] = repo.snapshots()
    outside = _blobs_outside(repo, s1_packs)
    assert all(b in outside for b in snapshot.blob_ids()), "reused blobs of condemned packs"

    site.run("prune", "--grace", "0s")
    check_json(site, "--read-data", rc=0)
    _assert_restores(site, "latest", source, tmp_path / "restore")


def test_backup_starting_while_prune_condemns_keeps_its_blobs(site: Site, tmp_path: Path) -> None:
    """Interleaving: prune reads the clock and the snapshots; a backup then takes its lease
    and reads the index and the (still empty) marks, so it deduplicates against the packs
    prune is about to condemn; prune writes its marks and decides on deletion while that
    backup is still running; the backup then commits."""
    source, s1 = _one_snapshot(site, tmp_path)
    backup_read_marks, prune_done = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    backup_repo = _repo(site)

    def backup_hook(prefix: str) -> None:
        if prefix.startswith("trash"):  # the backup reads prune's marks
            backup_read_marks.set()
            prune_done.wait(60)

    backup_repo.storage = _Hooked(backup_repo.storage, backup_hook)

    def run_backup() -> None:
        try:
            outcome["snapshot"] = _backup(backup_repo, source)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run_backup, name="racing-backup")
    prune_repo = _repo(site)

    def prune_hook(prefix: str) -> None:
        if prefix.startswith("trash") and "started" not in outcome:  # before prune marks
            outcome["started"] = True
            thread.start()
            assert backup_read_marks.wait(60), "the backup never read the marks"

    prune_repo.storage = _Hooked(prune_repo.storage, prune_hook)
    try:
        result = prune(prune_repo, forget=[s1], grace=timedelta(0))
    finally:
        prune_done.set()
        if thread.is_alive() or "started" in outcome:
            thread.join(120)
    assert "started" in outcome, "prune never read its marks"
    assert "error" not in outcome, outcome.get("error")
    snapshot = outcome["snapshot"]

    checked = check(_repo(site, read=True), read_data=True)
    assert checked.ok, (
        f"prune deleted packs a running backup used ({result.packs_deleted} deleted, "
        f"{result.packs_deferred} deferred): {checked.errors}"
    )
    _assert_restores(site, snapshot.id, source, tmp_path / "restore")


def test_backup_committed_while_prune_runs_keeps_its_blobs(site: Site, tmp_path: Path) -> None:
    """Interleaving: prune reads the snapshots (only S1, which it forgets); a backup of the
    same data then runs start to finish, deduplicating against S1's packs, and commits S2;
    only then does prune mark S1's packs and delete them (grace 0)."""
    source, s1 = _one_snapshot(site, tmp_path)
    backup_repo = _repo(site)
    committed: list[Snapshot] = []

    def prune_hook(prefix: str) -> None:
        if prefix.startswith("trash") and not committed:
            committed.append(_backup(backup_repo, source))

    prune_repo = _repo(site)
    prune_repo.storage = _Hooked(prune_repo.storage, prune_hook)
    result = prune(prune_repo, forget=[s1], grace=timedelta(0))
    assert committed, "prune never read its marks"
    assert committed[0].summary["blobs_new"] < len(committed[0].blob_ids())  # it deduplicated

    checked = check(_repo(site, read=True), read_data=True)
    assert checked.ok, (
        f"prune deleted packs of a snapshot committed while it ran ({result.packs_deleted} "
        f"deleted): {checked.errors}"
    )
    _assert_restores(site, committed[0].id, source, tmp_path / "restore")


def test_backup_whose_lease_went_stale_does_not_commit(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup deduplicates against S1's packs, then stalls longer than a lease lives (the
    host paused, or every refresh failed). Meanwhile one prune condemns S1's packs (the
    backup's lease is live: they wait) and a later one, having seen the lease unchanged for
    two hours, deletes them. The backup must then refuse to save a snapshot that points at
    the deleted packs. The prunes judge as another host would: on the backup's own host, a
    lease whose process lives is never broken (repository/lease.py)."""
    source, s1 = _one_snapshot(site, tmp_path)
    ticks = [1000.0]  # the lease's clock of elapsed time, moved by hand
    monkeypatch.setattr(lease_module, "_ticks", lambda: ticks[0], raising=False)
    stalled, resume = threading.Event(), threading.Event()

    def events() -> Iterator[Any]:
        yield from FilesWalker([source], []).walk()  # deduplicated against S1's packs
        stalled.set()
        assert resume.wait(60)

    outcome: dict[str, Any] = {}

    def run_backup() -> None:
        try:
            outcome["result"] = engine_backup(
                _repo(site),
                events(),
                source="files",
                source_type="files",
                paths=[str(source)],
                now=clock.now(),
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run_backup, name="stalling-backup")
    thread.start()
    try:
        assert stalled.wait(60)
        start = clock.now()
        monkeypatch.setenv(clock.ENV_VAR, (start + timedelta(minutes=1)).isoformat())
        elsewhere = LeaseWatch(host="another-host")
        condemning = prune(_repo(site), forget=[s1], grace=timedelta(hours=1), watch=elsewhere)
        assert condemning.packs_condemned > 0 and condemning.packs_deleted == 0
        ticks[0] += 2 * 3600  # the backup stalls for two hours
        monkeypatch.setenv(clock.ENV_VAR, (start + timedelta(hours=2)).isoformat())
        deleting = prune(_repo(site), grace=timedelta(hours=1), watch=elsewhere)
        assert deleting.packs_deleted > 0  # the backup's lease is stale: nothing holds them
        monkeypatch.delenv(clock.ENV_VAR)
    finally:
        resume.set()
        thread.join(120)

    assert "result" not in outcome, "the backup committed a snapshot after its lease went stale"
    message = str(outcome["error"])
    assert "Nothing was committed" in message and "renewed" in message, message
    assert _repo(site).snapshots() == []
    assert check(_repo(site)).ok


def test_prune_whose_lease_went_stale_deletes_nothing(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune that stalls (paused host) past a lease's life after deciding, before deleting:
    another prune may have broken its lease by then, so it must stop, not delete."""
    _, s1 = _one_snapshot(site, tmp_path)
    ticks = [1000.0]
    monkeypatch.setattr(lease_module, "_ticks", lambda: ticks[0], raising=False)

    def retention_that_stalls(snapshots: list[Snapshot], now: Any) -> dict[str, str]:
        ticks[0] += 2 * 3600  # the decision took two hours: the lease was not renewed
        return {}

    objects_before = objects(site.repo)
    with pytest.raises(lease_module.LeaseLost, match="prune stopped before deleting"):
        prune(_repo(site), retention=retention_that_stalls, grace=timedelta(0))
    assert objects(site.repo) == objects_before  # no snapshot, index or pack deleted
    assert [s.id for s in _repo(site).snapshots()] == [s1]
