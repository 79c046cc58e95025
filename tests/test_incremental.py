"""Incremental backups: an unchanged 1 GiB tree costs under 1 MiB, with or without the cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, restored, stored_bytes, tree_listing

MiB = 1024 * 1024
GiB = 1024 * MiB


def random_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left:
            step = min(left, 8 * MiB)
            handle.write(os.urandom(step))
            left -= step


def build_gib_tree(src: Path) -> None:
    """1 GiB: seven 128 MiB files and 1,024 files of 128 KiB in 16 directories."""
    (src / "large").mkdir(parents=True)
    for n in range(7):
        random_file(src / "large" / f"part{n}.bin", 128 * MiB)
    for d in range(16):
        folder = src / "small" / f"d{d:02}"
        folder.mkdir(parents=True)
        for f in range(64):
            random_file(folder / f"f{f:02}.bin", 128 * 1024)


def backup(site: Site) -> dict[str, Any]:
    results = site.json("backup")
    assert len(results) == 1
    assert results[0]["warnings"] == []
    return results[0]["snapshot"]["summary"]


@pytest.mark.slow
def test_unchanged_gib_tree_costs_under_one_mib(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_gib_tree(src)
    site.write_config(paths=[src])
    site.run("init")

    first = backup(site)
    assert first["bytes"] == GiB
    assert first["bytes_new"] >= GiB
    size_after_first = stored_bytes(site.repo)
    assert size_after_first >= GiB  # random data does not compress

    # the files cache makes the second run free
    second = backup(site)
    size_after_second = stored_bytes(site.repo)
    assert size_after_second - size_after_first < MiB
    assert second["bytes_stored"] < MiB
    assert second["bytes"] == GiB
    assert second["bytes_from_cache"] == GiB

    # losing the cache only costs time: content-addressed dedup still stores nothing new
    cache = site.state_dir / "cache"
    assert cache.is_dir() and any(cache.iterdir())
    shutil.rmtree(cache)
    third = backup(site)
    size_after_third = stored_bytes(site.repo)
    assert size_after_third - size_after_second < MiB
    assert third["bytes_stored"] < MiB
    assert third["bytes_from_cache"] == 0
    assert third["bytes"] == GiB
    assert len(site.snapshots()) == 3

    # one file changed in place (1 MiB in the middle): only the chunks around it are new
    victim = src / "large" / "part3.bin"
    with open(victim, "r+b") as handle:
        handle.seek(60 * MiB)
        handle.write(os.urandom(MiB))
    fourth = backup(site)
    size_after_fourth = stored_bytes(site.repo)
    assert MiB <= fourth["bytes_stored"] < 16 * MiB
    assert size_after_fourth - size_after_third < 17 * MiB
    assert fourth["bytes_from_cache"] == GiB - 128 * MiB

    # one file with 100 bytes inserted near its start: chunk boundaries resynchronise
    victim = src / "large" / "part5.bin"
    data = victim.read_bytes()
    victim.write_bytes(data[: 5 * MiB] + os.urandom(100) + data[5 * MiB :])
    del data
    fifth = backup(site)
    assert fifth["bytes_stored"] < 16 * MiB
    assert fifth["bytes"] == GiB + 100
    assert stored_bytes(site.repo) - size_after_fourth < 17 * MiB

    # and the changed tree restores exactly
    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert tree_listing(restored(out, src)) == tree_listing(src)
