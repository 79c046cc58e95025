"""A backup that could not read part of its source says so: exit 3, the journal, status."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Site, restored

NAME = "d" * 250  # a path component; 17 of them nest past PATH_MAX (4096)


def _nest_past_path_max(root: Path) -> str:
    """Directories nested deeper than a path can name, made with ``openat``: a file at the
    bottom cannot be stat'ed by its path even by root, whom permission bits do not stop."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while len(str(root)) + depth * (len(NAME) + 1) <= 4096 + len(NAME):
            os.mkdir(NAME, dir_fd=fd)
            child = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, depth = child, depth + 1
        leaf = os.open("lost.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"not backed up\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return str(root / NAME)


def test_an_unreadable_part_makes_the_backup_exit_3_and_status_warn(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.txt").write_text("kept\n")
    top = _nest_past_path_max(src)
    site.write_config([src])
    site.run("init")

    proc = site.run("backup", ok=False)
    assert proc.returncode == 3, proc.stderr
    assert "incomplete" in proc.stderr and "could not be read" in proc.stderr, proc.stderr
    assert "File name too long" in proc.stderr, proc.stderr

    # the snapshot is committed with what could be read
    out = tmp_path / "out"
    site.run("restore", "latest", src / "kept.txt", "--to", out)
    assert restored(out, src / "kept.txt").read_text() == "kept\n"

    again = site.run("backup", "--json", ok=False)  # --json: the paths, and exit 3 all the same
    assert again.returncode == 3, again.stderr
    report = json.loads(again.stdout)[0]
    assert report["unreadable"], report
    assert all(p.startswith(top) for p in report["unreadable"])

    status = site.run("status", "--json", ok=None)
    assert "is incomplete" in status.stdout and "could not be read" in status.stdout
    assert status.returncode != 2


def test_a_complete_backup_exits_0(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    os.mkfifo(src / "fifo")  # skipped by design: a warning, not an incomplete backup
    site.write_config([src])
    site.run("init")
    proc = site.run("backup")
    assert "special files are not backed up" in proc.stderr
    assert "incomplete" not in proc.stderr
