"""`emberkeep mount DIR`: the snapshots as a real read-only FUSE mount (libfuse 3 through
mfusepy, /dev/fuse, fusermount3): every file's bytes, modes, owners and times as backed up,
read on demand at any offset; writes refused; snapshots by source and time, ``latest`` and
``ids/``; a forged listing's entries left out and reported; unmounting ends the command."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import Site, restored, tree_listing
from test_hostile_repository import Forger


@contextmanager
def mounted(site: Site, mountpoint: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`emberkeep mount` running; entered once it says the file system is up (its init
    callback ran: a barrier, no polling), unmounted with fusermount3 on the way out."""
    mountpoint.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), "mount",
           str(mountpoint), *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **site.env},
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if "mounted" not in first:
        proc.wait(timeout=30)
        pytest.fail(f"mount did not come up ({proc.returncode}): {first}{proc.stderr.read()}")
    try:
        yield proc
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        proc.wait(timeout=60)


def _tree(src: Path) -> None:
    (src / "media").mkdir(parents=True)
    (src / "media" / "big.bin").write_bytes(random.Random(7).randbytes(5 << 20))  # 4+ chunks
    (src / "media" / "small.txt").write_text("candles\n")
    (src / "secret.env").write_text("TOKEN=abc\n")
    (src / "secret.env").chmod(0o600)
    (src / "empty").write_bytes(b"")
    os.symlink("media/small.txt", src / "current")
    (src / "media").chmod(0o750)


def test_a_files_snapshot_mounts_read_only_and_reads_exactly(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    site.write_config([src])
    site.run("init")
    site.run("backup")
    (src / "media" / "small.txt").write_text("more candles\n")
    site.run("backup")
    first, second = site.snapshots()
    mp = tmp_path / "mnt"
    with mounted(site, mp) as proc:
        by_source = mp / "snapshots" / "files"
        second_name = second["time"]
        if second_name == first["time"]:  # the same second: the id tells them apart
            second_name = f"{second['time']}-{second['short_id']}"
        assert sorted(os.listdir(by_source)) == sorted([first["time"], second_name, "latest"])
        assert os.readlink(by_source / "latest") == second_name
        assert tree_listing(restored(by_source / "latest", src)) == tree_listing(src)
        old = restored(mp / "ids" / first["short_id"], src)
        assert (old / "media" / "small.txt").read_text() == "candles\n"
        assert os.readlink(mp / "ids" / second["short_id"]).startswith("../snapshots/files/")

        big = (src / "media" / "big.bin").read_bytes()
        rng = random.Random(3)
        with open(restored(by_source / "latest", src) / "media" / "big.bin", "rb") as f:
            for _ in range(40):
                offset, size = rng.randrange(len(big) + 10), rng.randrange(1, 3 << 20)
                f.seek(offset)
                assert f.read(size) == big[offset : offset + size]

        target = restored(by_source / "latest", src)
        for attempt in (
            lambda: os.open(target / "media" / "small.txt", os.O_WRONLY | os.O_APPEND),
            lambda: (target / "new.txt").write_text("x"),
            lambda: os.mkdir(target / "dir"),
            lambda: os.unlink(target / "empty"),
            lambda: os.chmod(target / "empty", 0o777),
        ):
            with pytest.raises(OSError) as raised:
                attempt()
            assert raised.value.errno == errno.EROFS
        assert proc.poll() is None
    assert proc.returncode == 0
    assert not os.path.ismount(mp)


def test_mount_refuses_what_it_cannot_mount(site: Site, tmp_path: Path) -> None:
    site.write_config([tmp_path])
    site.run("init")
    proc = site.run("mount", tmp_path / "nowhere", ok=False)
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    (tmp_path / "mnt").mkdir()
    proc = site.run("mount", tmp_path / "mnt", "--source", "flies", ok=False)
    assert proc.returncode == 2 and "files" in proc.stderr


def test_a_forged_listing_is_left_out_of_the_mount_and_reported(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    identity, _ = site.keygen()
    site.write_config([src], identity=False)
    site.run("init")
    site.run("backup")
    genuine = site.snapshots()[-1]["id"]
    forger = Forger(site, genuine)
    forged = forger.snapshot([forger.file("..", b"escape"), forger.file("fine.txt", b"ok")], 5)
    mp = tmp_path / "mnt"
    with mounted(site, mp, "--identity", str(identity)) as proc:
        top = mp / "ids" / forged[:12]
        assert sorted(os.listdir(top)) == ["fine.txt", "genuine"]
        assert (top / "fine.txt").read_bytes() == b"ok"
        assert (top / "genuine" / str(src).lstrip("/") / "secret.env").read_text() == "TOKEN=abc\n"
    assert proc.stderr is not None
    said = proc.stderr.read()
    assert "would leave its directory" in said and "not shown" in said
