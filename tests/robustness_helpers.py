"""Helpers shared by the robustness tests (damage, crash, concurrency, full disk)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Site

PACK_FOLDERS = ("data/", "meta/")


def objects(repo: Path) -> set[str]:
    """Names of the objects of a file:// repository, as ``storage.list`` names them.

    Temp files of unfinished writes (dot files) and leases (``locks/``) are left out.
    """
    if not repo.is_dir():
        return set()
    names = set()
    for path in repo.rglob("*"):
        rel = path.relative_to(repo)
        if path.is_file() and not path.name.startswith(".") and rel.parts[0] != "locks":
            names.add(rel.as_posix())
    return names


def packs(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(PACK_FOLDERS)}


def temp_files(repo: Path) -> set[Path]:
    """Temp files that an interrupted write left (``.<name>.tmp-<random>``)."""
    return {p for p in repo.rglob(".*") if p.is_file() and ".tmp-" in p.name}


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            step = min(left, 8 << 20)
            handle.write(os.urandom(step))
            left -= step


def restored(dest: Path, source: Path) -> Path:
    """Where ``restore --to dest`` puts ``source`` (snapshots keep absolute paths)."""
    return dest / str(source).lstrip("/")


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def popen(site: Site, *args: str | os.PathLike[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``emberkeep -c CONFIG ARGS`` without waiting for it."""
    cmd = [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), *map(str, args)]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **site.env},
        **kwargs,
    )


def killed_at(
    site: Site, point: str, *args: str | os.PathLike[str]
) -> subprocess.CompletedProcess[str]:
    """Run ``emberkeep -c CONFIG ARGS`` with the crash point ``point`` armed
    (``emberkeep.crashpoints``): the run SIGKILLs itself when it gets there."""
    cmd = [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), *map(str, args)]
    env = {**os.environ, **site.env, "EMBERKEEP_TEST_KILL_AT": point}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def finish(proc: subprocess.Popen[str], what: str, timeout: float = 300) -> str:
    """Wait for a started command, assert exit 0 and no traceback; returns its stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{err}\n{out}"
    assert "Traceback" not in err, f"{what} printed a traceback:\n{err}"
    return out


def check_json(
    site: Site, *args: str, rc: int = 0, target: str = "local", what: str = ""
) -> dict[str, Any]:
    """``check ARGS --json`` of a site with one target; asserts the exit status.

    ``what`` says, in the failure message, which step of a test ran the check.
    """
    proc = site.run("check", *args, "--json", ok=None)
    assert proc.returncode == rc, (
        f"{what}: check {' '.join(args)} exited {proc.returncode}, expected {rc}:\n"
        f"{proc.stdout}\n{proc.stderr}"
    )
    if proc.returncode:
        assert "Traceback" not in proc.stderr, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result) == [target], result
    if rc == 0:
        assert result[target]["ok"] is True and result[target]["errors"] == [], result
    return result[target]


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` mounted at ``mountpoint`` (made if missing), unmounted after.

    Mounting needs root, which CI has; without it the test fails (it never skips)."""
    mountpoint.mkdir(exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mountpoint)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        pytest.fail(f"cannot run {cmd}: {exc}; this test needs root and mount(8)")
    if proc.returncode != 0:
        pytest.fail(
            f"cannot mount a {size_mb} MB tmpfs at {mountpoint} ({proc.stderr.strip()}); "
            "this test needs root (CI runs as root)"
        )
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
