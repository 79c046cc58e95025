"""A damaged files cache never makes a backup store a hole or wrong content (README,
"Deduplicated": the cache is a hint, never trusted).

Random bit flips of the cache's SQLite file, two cached files' ids swapped, a cache that is
garbage, truncated or of another layout: each backup commits a snapshot that ``check``
passes and that restores to the source tree, the damage is warned about once, and a
damaged cache is moved aside and rebuilt. The backups run in-process through the runner
(as `emberkeep backup` calls it); one runs through the CLI, for its output.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, restored, tree_listing

from emberkeep import config
from emberkeep.engine.filescache import walk_key
from emberkeep.runner.backup import SourceOutcome, run_backup
from emberkeep.runner.maintenance import run_check
from emberkeep.runner.restore import run_restore
from emberkeep.site import Site as ApiSite

SEED = 20261202
TRIALS = 20
TWIN_SIZE = 70_000  # two files of this size, different bytes: the swap's victims


class Setup:
    """A site with one files source, backed up once: the cache is written and good."""

    def __init__(self, site: Site, tmp_path: Path) -> None:
        self.site, self.tmp = site, tmp_path
        self.src = tmp_path / "src"
        rng = random.Random(SEED)
        for i in range(150):
            path = self.src / f"dir{i % 7}" / f"file-{i:03}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randrange(1, 4000)))
        (self.src / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024))  # several chunks
        self.twins = [self.src / "twin-a.bin", self.src / "twin-b.bin"]
        for twin in self.twins:
            twin.write_bytes(rng.randbytes(TWIN_SIZE))
        site.write_config(paths=[self.src])
        site.run("init")
        self.api = ApiSite(config.load(str(site.config_path)))
        self.listing = tree_listing(self.src)
        first = self.backup()
        assert first.result.warnings == [], first.result.warnings
        [self.cache] = (site.state_dir / "cache").glob("*.sqlite")
        self.good = self.cache.read_bytes()
        self.total = first.result.snapshot.summary["bytes"]
        assert self.backup().result.snapshot.summary["bytes_from_cache"] == self.total

    def backup(self) -> SourceOutcome:
        return run_backup(self.api, "files")

    def put_back(self, data: bytes) -> None:
        """The cache file holding ``data``, nothing left of an earlier one beside it."""
        for leftover in self.cache.parent.iterdir():
            leftover.unlink()
        self.cache.write_bytes(data)

    def assert_sound(self, outcome: SourceOutcome, what: str) -> None:
        """The snapshot misses nothing (check) and restores to the source tree, exactly."""
        result = run_check(self.api, "local", read_data=False, subset=None)
        assert result.ok, f"{what}: check found {result.errors}"
        dest = self.tmp / "restore"
        shutil.rmtree(dest, ignore_errors=True)
        _snap, restore = run_restore(self.api, outcome.result.snapshot.id, dest, paths=[])
        assert restore.warnings == [], f"{what}: restore warned {restore.warnings}"
        assert tree_listing(restored(dest, self.src)) == self.listing, f"{what}: restore differs"
        shutil.rmtree(dest)


def cache_warnings(outcome: SourceOutcome) -> list[dict[str, Any]]:
    return [w for w in outcome.result.warnings if "files cache" in w["message"]]


@pytest.fixture
def setup(site: Site, tmp_path: Path) -> Setup:
    return Setup(site, tmp_path)


def test_random_bit_flips_never_give_a_snapshot_with_a_hole_or_wrong_content(
    setup: Setup,
) -> None:
    rng = random.Random(SEED)
    noticed = 0  # trials whose flip the backup found (warned, or read files again)
    for trial in range(TRIALS):
        damaged = bytearray(setup.good)
        bit = rng.randrange(len(damaged) * 8)
        damaged[bit // 8] ^= 1 << (bit % 8)
        setup.put_back(bytes(damaged))
        outcome = setup.backup()
        what = f"trial {trial}: bit {bit} of {len(damaged) * 8}"
        setup.assert_sound(outcome, what)
        assert len(cache_warnings(outcome)) <= 1, (what, outcome.result.warnings)
        summary = outcome.result.snapshot.summary
        noticed += bool(cache_warnings(outcome)) or summary["bytes_from_cache"] < setup.total
    # The flips must reach the rows, not only free space, or the test proves nothing.
    assert noticed >= TRIALS // 4, f"only {noticed} of {TRIALS} flips reached cached entries"


def test_ids_swapped_between_two_cached_files_are_caught_by_the_backup(setup: Setup) -> None:
    a, b = (walk_key(str(path)) for path in setup.twins)
    with sqlite3.connect(setup.cache) as db:
        (ids_a,), (ids_b,) = (
            db.execute("SELECT ids FROM files WHERE key = ?", (key,)).fetchone() for key in (a, b)
        )
        assert ids_a != ids_b  # same size, other bytes: each id valid, each in the index
        db.execute("UPDATE files SET ids = ? WHERE key = ?", (ids_b, a))
        db.execute("UPDATE files SET ids = ? WHERE key = ?", (ids_a, b))
    db.close()
    outcome = setup.backup()
    [warning] = cache_warnings(outcome)
    assert "2 entries did not verify" in warning["message"], warning
    summary = outcome.result.snapshot.summary
    assert summary["bytes_from_cache"] == setup.total - 2 * TWIN_SIZE  # the two were read again
    setup.assert_sound(outcome, "ids swapped")


@pytest.mark.parametrize("damage", ["truncated", "another layout"])
def test_a_cache_that_cannot_be_read_is_moved_aside_and_rebuilt(setup: Setup, damage: str) -> None:
    if damage == "truncated":
        setup.put_back(setup.good[: len(setup.good) // 2])
    else:
        setup.put_back(b"")
        with sqlite3.connect(setup.cache) as db:
            db.execute("PRAGMA user_version = 3")
            db.execute("CREATE TABLE files (key BLOB PRIMARY KEY, path TEXT) WITHOUT ROWID")
            db.execute("INSERT INTO files VALUES (?, 'x')", (walk_key(str(setup.twins[0])),))
        db.close()
    outcome = setup.backup()
    [warning] = cache_warnings(outcome)
    assert "is damaged" in warning["message"] and "moved aside" in warning["message"], warning
    assert setup.cache.with_name(setup.cache.name + ".damaged").is_file()
    setup.assert_sound(outcome, damage)
    again = setup.backup()  # the rebuilt cache serves the next backup
    assert again.result.warnings == []
    assert again.result.snapshot.summary["bytes_from_cache"] == setup.total


def test_a_garbage_cache_is_one_warning_through_the_cli(setup: Setup) -> None:
    setup.put_back(os.urandom(64 * 1024))
    proc = setup.site.run("backup")
    assert "Traceback" not in proc.stderr
    damaged = [line for line in proc.stderr.splitlines() if "files cache" in line]
    assert len(damaged) == 1 and "moved aside" in damaged[0], proc.stderr
    assert setup.cache.with_name(setup.cache.name + ".damaged").is_file()
    outcome = setup.backup()
    assert outcome.result.warnings == []
    assert outcome.result.snapshot.summary["bytes_from_cache"] == setup.total
    setup.assert_sound(outcome, "garbage")
