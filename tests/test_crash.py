"""A backup killed with SIGKILL leaves a repository that check passes, and the next
backup and prune succeed (docs/design.md, "Commit order": a crash leaves only unreferenced
packs). An init killed between its writes leaves no repository that recover cannot use."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, tree_listing
from robustness_helpers import (
    check_json,
    killed_at,
    objects,
    packs,
    restored,
    temp_files,
    write_random,
)

from emberkeep import keys
from emberkeep.repository import layout
from emberkeep.repository.repo import Repository
from emberkeep.storage.local import LocalStorage

FILES = 12
FILE_SIZE = 25 * 1024 * 1024  # 300 MB in all: about 19 data packs, a few seconds to back up
SEED = 20260301


def _new_data(source: Path, trial: int) -> None:
    """Replace the whole tree with fresh random content, so the next backup uploads it all."""
    for old in source.glob("*.bin"):
        old.unlink()
    for i in range(FILES):
        write_random(source / f"trial{trial}-{i:02}.bin", FILE_SIZE)


def _kill_points(repo: Path, rng: random.Random) -> list[str]:
    """Where each trial's backup kills itself (``emberkeep.crashpoints``): with its lease
    still a temp file, inside a pack upload (some packs already stored), with its index a
    temp file (every pack stored), and with its snapshot, the commit point, a temp file."""
    written = "temp-written"
    return [
        f"{written}:{repo}/locks/backup-",
        f"{written}:{repo}/data/#{rng.randint(2, 8)}",
        f"{written}:{repo}/index/",
        f"{written}:{repo}/snapshots/",
    ]


def test_backup_killed_at_random_moments_leaves_a_sound_repository(
    site: Site, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "README.txt").write_text("media that changes between trials\n")
    site.write_config(paths=[source])
    site.run("init")
    trials_with_leftovers = 0

    for trial, point in enumerate(_kill_points(site.repo, random.Random(SEED))):
        _new_data(source, trial)
        before = objects(site.repo)
        proc = killed_at(site, point, "backup", "-q")
        assert proc.returncode == -signal.SIGKILL, (
            f"trial {trial}: the backup did not reach {point} ({proc.returncode})\n{proc.stderr}"
        )
        after = objects(site.repo)
        new = after - before
        assert not any(n.startswith("snapshots/") for n in new), "killed backup committed"
        crash_temps = temp_files(site.repo)
        assert crash_temps, f"trial {trial}: killed at {point}, yet no temp file was left"

        result = check_json(site, rc=0)  # structural check passes after the crash
        assert result["ok"] is True and result["errors"] == []
        leftovers = set(result["leftovers"])
        assert leftovers <= packs(after), leftovers
        if not any(n.startswith("index/") for n in new):
            # No index was written: every pack the killed run uploaded is a leftover.
            assert packs(new) <= leftovers, (
                f"trial {trial}: uploaded packs not reported: {packs(new) - leftovers}"
            )
        if packs(new):
            trials_with_leftovers += 1

        site.run("backup")
        check_json(site, "--read-data", rc=0)
        snapshots = site.snapshots()
        latest = snapshots[-1]
        forget = [arg for s in snapshots[:-1] for arg in ("--forget", s["id"])]
        site.run("prune", "--grace", "0s", *forget)  # the killed run's lease is stale

        result = check_json(site, "--read-data", rc=0)
        assert result["leftovers"] == [], f"trial {trial}: prune left {result['leftovers']}"
        assert [s["id"] for s in site.snapshots()] == [latest["id"]]
        trash = {n for n in objects(site.repo) if n.startswith("trash/")}
        assert not trash, f"trial {trial}: condemned packs not deleted: {trash}"
        assert leftovers.isdisjoint(objects(site.repo)), "leftover packs survived prune"
        still = crash_temps & temp_files(site.repo)
        assert not still, f"trial {trial}: prune left the killed run's temp files: {still}"

    assert trials_with_leftovers >= 1, "no trial was killed after a pack was uploaded"

    dest = tmp_path / "restore"
    site.run("restore", "latest", "--to", dest)
    assert tree_listing(restored(dest, source)) == tree_listing(source)


def test_prune_removes_temp_files_of_an_interrupted_write(site: Site, tmp_path: Path) -> None:
    """A process killed inside a pack upload leaves ``data/aa/.<name>.tmp-<random>``.

    That is exactly what the local backend's write leaves (fsutil.temp_name); no running
    backup owns it once the writer is gone, so prune must reclaim the space.
    """
    source = tmp_path / "src"
    write_random(source / "file.bin", 2_000_000)
    site.write_config(paths=[source])
    site.run("init")
    site.run("backup")
    crashed = site.repo / "data" / "ab" / (".ab" + "0" * 62 + ".tmp-0123456789ab")
    crashed.parent.mkdir(parents=True, exist_ok=True)
    crashed.write_bytes(b"half a pack" * 100_000)
    day_ago = time.time() - 86400
    os.utime(crashed, (day_ago, day_ago))  # long dead, whatever age a fix may demand
    result = check_json(site, "--read-data", rc=0)
    assert result["errors"] == []

    site.run("prune", "--grace", "0s")
    assert not crashed.exists(), "prune left an interrupted upload's temp file behind"
    check_json(site, "--read-data", rc=0)


class _DiesAfterFirstPut:
    """Our storage seam: the process "dies" (raises) on the second object written."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.written: list[str] = []

    def put(self, name: str, data: Any, *, overwrite: bool = False) -> None:
        if self.written:
            raise KeyboardInterrupt(f"killed before writing {name}")
        self.inner.put(name, data, overwrite=overwrite)
        self.written.append(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_init_killed_between_its_writes_leaves_no_repository_without_a_key_copy(
    site: Site, tmp_path: Path
) -> None:
    """``config`` is init's commit point: written last, after the writer key's copy."""
    source = tmp_path / "src"
    write_random(source / "file.bin", 1000)
    site.write_config(paths=[source])
    writer_key = keys.WriterKey.generate()
    recipients = keys.parse_recipients(site.recipients)
    dying = _DiesAfterFirstPut(LocalStorage(site.repo))
    with pytest.raises(KeyboardInterrupt):
        Repository.init(dying, writer_key, recipients)
    assert dying.written == [layout.WRITER_KEY]
    assert not (site.repo / layout.CONFIG).exists()

    site.run("init")
    site.run("backup")
    _recover_dry_run(site)


def test_init_rewrites_a_missing_copy_of_the_writer_key(site: Site, tmp_path: Path) -> None:
    """A repository left without keys/writer.age (an init that crashed under the old write
    order) is repaired by the next init, which says so."""
    source = tmp_path / "src"
    write_random(source / "file.bin", 1000)
    site.write_config(paths=[source])
    site.run("init")
    (site.repo / layout.WRITER_KEY).unlink()

    proc = site.run("init")
    assert "writer key" in proc.stdout, proc.stdout
    assert (site.repo / layout.WRITER_KEY).is_file()
    assert site.json("init") == [
        {"target": "local", "created": False, "message": "already initialized"}
    ]
    site.run("backup")
    _recover_dry_run(site)


def _recover_dry_run(site: Site) -> None:
    url = f"file://{site.repo}"
    site.run("recover", "--from", url, "--identity", site.identities[0], "--dry-run")
