"""A full target (a small tmpfs) fails the backup clearly and keeps earlier snapshots.

Mounting needs root, which CI has; without it this test fails (it never skips).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Site, tree_listing
from robustness_helpers import (
    check_json,
    mounted_tmpfs,
    objects,
    restored,
    temp_files,
    write_random,
)

MB = 1024 * 1024
TARGET = "smalldisk"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tmpfs", 40) as mountpoint:
        vfs = os.statvfs(mountpoint)
        assert vfs.f_blocks * vfs.f_frsize <= 41 * MB, "the mount is not the small tmpfs"
        yield mountpoint


def test_full_target_fails_backup_clearly_and_keeps_earlier_snapshots(
    site: Site, tmp_path: Path, small_disk: Path
) -> None:
    repo = small_disk / "repo"
    source = tmp_path / "src"
    for i in range(4):
        write_random(source / f"small-{i}.bin", 2 * MB + i * 1000)
    write_random(source / "docs" / "readme.bin", 1_500_000)
    (source / "docs" / "notes.txt").write_text("kept\n" * 100)
    site.write_config(
        paths=[source], targets=f'[[targets]]\nname = "{TARGET}"\nurl = "file://{repo}"'
    )
    site.run("init")
    site.run("backup")
    [first] = site.snapshots()
    before = tree_listing(source)

    for i in range(4):  # 60 MB more than the 40 MB disk can take
        write_random(source / "big" / f"big-{i}.bin", 15 * MB)
    proc = site.run("backup", ok=False)  # ok=False also asserts there is no traceback
    message = proc.stderr + proc.stdout
    assert proc.returncode == 1, message
    assert "no space" in message.lower(), message
    assert TARGET in message or str(small_disk) in message, f"target not named: {message}"

    assert not temp_files(repo), "the failed write left its temp file on the full disk"
    assert [s["id"] for s in site.snapshots()] == [first["id"]]
    result = check_json(site, target=TARGET)  # leftover packs are allowed, errors are not
    assert result["snapshots"] == 1
    dest = tmp_path / "restore-first"
    site.run("restore", first["id"], "--to", dest)
    assert tree_listing(restored(dest, source)) == before

    shutil.rmtree(source / "big")  # free the source; prune frees the target
    site.run("prune", "--grace", "0s")
    assert check_json(site, target=TARGET)["leftovers"] == []
    assert not {n for n in objects(repo) if n.startswith("trash/")}

    (source / "docs" / "new.txt").write_text("after the disk was freed\n")
    site.run("backup")
    snapshots = site.snapshots()
    assert len(snapshots) == 2 and snapshots[0]["id"] == first["id"]
    result = check_json(site, "--read-data", target=TARGET)
    assert result["snapshots"] == 2
    dest = tmp_path / "restore-latest"
    site.run("restore", "latest", "--to", dest)
    assert tree_listing(restored(dest, source)) == tree_listing(source)
