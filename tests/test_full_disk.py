"""A full target (a small tmpfs) fails the backup clearly and keeps earlier snapshots.

Mounting needs root, which CI has; without it this test fails (it never skips).
"""

from __future__ import annotations

import contextlib
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


def test_a_state_dir_full_after_the_commit_warns_and_the_snapshot_stands(
    site: Site, tmp_path: Path
) -> None:
    """The backup commits its snapshot into the target; then the files cache, the journal and
    the record of the stored site config cannot be written into the full state dir. Each is
    a warning naming the snapshot and the full disk: exit 0, and the snapshot restores."""
    source = tmp_path / "src"
    for i in range(400):
        (source / f"d{i % 9}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 9}" / f"file-{i:04}.txt").write_text(f"file {i}\n" * (i % 50 + 1))
    with mounted_tmpfs(site.state_dir, 2):
        site.write_config(paths=[source])
        site.run("init")
        site.run("backup")  # the state dir holds its cache and journal
        for i in range(400, 800):  # more to remember than the full disk will take
            (source / f"new-{i:04}.txt").write_text(f"new {i}\n")
        fill(site.state_dir)
        proc = site.run("backup")  # exit 0 asserted, and no traceback
        err = proc.stderr
        [_, snap] = site.snapshots()
        assert f"snapshot {snap['id'][:12]}" in proc.stdout, proc.stdout
        assert f"the state dir {site.state_dir} is full" in err, err
        assert f"snapshot {snap['id'][:12]} is committed, but the files cache" in err, err
        assert "Traceback" not in err and "OperationalError" not in err, err

        status = site.run("status", ok=None)
        assert f"the state dir {site.state_dir} is full" in status.stderr, status.stderr
        assert "move it aside" not in status.stderr, status.stderr

        dest = tmp_path / "restored"
        site.run("restore", snap["id"], "--to", dest)
        assert tree_listing(restored(dest, source)) == tree_listing(source)


def fill(folder: Path) -> None:
    """Fill the file system holding ``folder`` to the last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        (folder / "probe").write_bytes(b"x")
