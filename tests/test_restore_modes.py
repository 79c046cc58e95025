"""Restore never exposes a secret while it runs: every file and directory it creates is
private (0600 / 0700) until its final mode is set (review: `.env.local` and `.ssh` keys were
readable by other users during a restore)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, restored, tree_listing
from test_concurrency import _repo

from emberkeep.engine.restore import Restorer


def _secret_tree(src: Path) -> None:
    ssh = src / "home" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (ssh / "id_ed25519").chmod(0o600)
    (src / ".env.local").write_text("DATABASE_PASSWORD=hunter2\n")
    (src / ".env.local").chmod(0o600)
    (src / "public").mkdir()
    (src / "public" / "index.html").write_text("<h1>shop</h1>\n")
    (src / "public" / "big.bin").write_bytes(os.urandom(3 << 20))  # several blobs
    (src / "public").chmod(0o755)
    ssh.chmod(0o700)
    (src / "home").chmod(0o750)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask: a file opened 0666 would be world-readable
    try:
        yield
    finally:
        os.umask(old)


class ModeWatch:
    """Hooks os.fchmod, os.open and os.mkdir (restore creates everything relative to
    directory handles, ``engine.confined``); before each mode change, checks that nothing
    under ``dest`` that has not had its final mode yet is readable by group or others.

    A file's mode is set once, when it is complete; a directory's twice: 0700 when it is
    made (whatever the umask), its own at the end."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.final: set[int] = set()  # inodes whose final mode is set
        self.chmods: dict[int, int] = {}  # inode -> mode changes seen
        self.exposed: list[tuple[str, str]] = []
        self.opens: list[tuple[str, int, int]] = []
        self.mkdirs: list[tuple[str, int]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_fchmod, real_open, real_mkdir = os.fchmod, os.open, os.mkdir

        def fchmod(fd: int, mode: int) -> None:
            self.scan()
            real_fchmod(fd, mode)
            st = os.fstat(fd)
            seen = self.chmods[st.st_ino] = self.chmods.get(st.st_ino, 0) + 1
            if stat.S_ISREG(st.st_mode) or seen >= 2:
                self.final.add(st.st_ino)

        def open_(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
            if self._ours(path, kwargs) and flags & os.O_CREAT:
                self.opens.append((str(path), flags, mode))
            return real_open(path, flags, mode, *args, **kwargs)

        def mkdir(path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
            if self._ours(path, kwargs):
                self.mkdirs.append((str(path), mode))
            real_mkdir(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "fchmod", fchmod)
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "mkdir", mkdir)

    def _ours(self, path: Any, kwargs: dict[str, Any]) -> bool:
        """Created under ``dest``: relative to a directory handle (only the restore runs
        meanwhile), or by a path inside it."""
        if kwargs.get("dir_fd") is not None:
            return True
        return isinstance(path, str | os.PathLike) and str(path).startswith(f"{self.dest}/")

    def scan(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.dest):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue  # renamed meanwhile by another restore worker
                if stat.S_ISLNK(st.st_mode) or st.st_ino in self.final:
                    continue
                if st.st_mode & 0o077:
                    self.exposed.append((path, oct(stat.S_IMODE(st.st_mode))))


def test_restore_keeps_files_and_dirs_private_until_their_final_mode(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    src = tmp_path / "src"
    _secret_tree(src)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    repo = _repo(site, read=True)
    dest = tmp_path / "out"

    watch = ModeWatch(dest)
    watch.install(monkeypatch)
    Restorer(repo, dest).restore(repo.snapshots()[0])
    monkeypatch.undo()

    assert watch.exposed == [], "readable by others before its final mode was set"
    assert watch.opens, "restored files are not created with os.open and a private mode"
    for path, flags, mode in watch.opens:
        assert mode == 0o600 and flags & os.O_EXCL and flags & os.O_NOFOLLOW, (path, oct(mode))
    assert watch.mkdirs and all(mode == 0o700 for _, mode in watch.mkdirs), watch.mkdirs
    assert tree_listing(restored(dest, src)) == tree_listing(src)
