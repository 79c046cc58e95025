"""What is in a restore's way, kept aside: never destroyed (``Asides.keep_aside``).

A restore into a directory in use finds entries where the snapshot puts its own; one that is
already what is restored stays, anything else is moved under a ``.emberkeep-replaced-…``
directory (engine/restore.py writes; this decides and moves).
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..errors import StorageError
from .confined import PRIVATE_DIR, Destination, Parts, make_dirs_at, open_dir, parts_of
from .tree import shown

_CHUNK = 1 << 20


class Kept(Protocol):
    """Where a restore counts what it kept aside (``RestoreResult``)."""

    replaced: int
    kept_in: list[str]


def lstat_of(parent: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _same_bytes(a: int, b: int) -> bool:
    if os.fstat(a).st_size != os.fstat(b).st_size:
        return False
    offset = 0
    while True:
        left, right = os.pread(a, _CHUNK, offset), os.pread(b, _CHUNK, offset)
        if left != right:
            return False
        if not left:
            return True
        offset += len(left)


def same_file(st: os.stat_result, parent: int, name: str, other_parent: int, other: str) -> bool:
    """Whether ``name`` (whose lstat is ``st``) is a regular file holding the bytes of
    ``other``; unreadable counts as not."""
    if not stat.S_ISREG(st.st_mode):
        return False
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        a = os.open(name, flags, dir_fd=parent)
    except OSError:
        return False
    try:
        b = os.open(other, flags, dir_fd=other_parent)
    except OSError:
        os.close(a)
        return False
    try:
        return _same_bytes(a, b)
    except OSError:
        return False
    finally:
        os.close(a)
        os.close(b)


class Asides:
    """The directories a restore keeps what is in its way in, one per filesystem, made when
    first needed; ``lock`` is the restore's own (its workers share ``result``)."""

    def __init__(self, root: Destination, lock: threading.Lock, result: Kept) -> None:
        self.root = root
        self.lock = lock
        self.result = result
        self._dirs: dict[int, tuple[int, Parts]] = {}  # device -> (fd, parts)

    def close(self) -> None:
        for fd, _ in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def keep_aside(
        self, path: str, parent: int, name: str, same: Callable[[os.stat_result], bool]
    ) -> None:
        """Move what is at ``name`` (in ``parent``) out of the way, unless ``same`` says it
        already is what is restored there.

        A restore into a directory that is in use (``--to /`` to put files back) must not
        destroy what is there: a file that differs from the snapshot's (an edit made since,
        which may be the only copy), a symlink, or a directory where the snapshot has a file
        is moved under a ``.emberkeep-replaced-<time>-…`` directory with its snapshot path,
        and counted in the result. That directory is made (exclusively, 0700) at the top of
        the target's filesystem within the destination, so the move is a rename on the same
        disk, and away from programs that read every file of a directory (``sites-enabled/*``).
        """
        st = lstat_of(parent, name)
        if st is None:
            return
        try:
            if same(st):
                return  # nothing to keep; the caller replaces it
        except OSError:
            pass  # unreadable counts as differing
        aside, _ = self._aside_dir(parts_of(path), st.st_dev)
        parts = parts_of(path)
        with self.lock:  # two workers may make the same folders under the aside directory
            folder = make_dirs_at(aside, parts[:-1])
        try:
            os.rename(name, parts[-1], src_dir_fd=parent, dst_dir_fd=folder)
        except OSError as exc:
            raise StorageError(
                f"cannot move {self.root.path(parts)} aside to restore the snapshot's "
                f"{shown(path)} there ({exc.strerror}): is it a mount point or in use? "
                "Restore elsewhere with --to"
            ) from exc
        finally:
            os.close(folder)
        self.root.forget(parts)  # a directory moved aside: its handles no longer lead here
        with self.lock:
            self.result.replaced += 1

    def _aside_dir(self, parts: Parts, device: int) -> tuple[int, Parts]:
        """The directory kept entries go to on ``device``, made when first needed: in the
        directory nearest the destination's root, on the way to ``parts``, that lies on
        that filesystem (the destination itself, unless another disk is mounted below it)."""
        with self.lock:
            known = self._dirs.get(device)
            if known is not None:
                return known
            top: Parts = parts[:-1]
            for depth in range(len(parts)):
                with self.root.opened(parts[:depth]) as fd:
                    if os.fstat(fd).st_dev == device:
                        top = parts[:depth]
                        break
            stamp = time.strftime("%Y%m%dT%H%M%S")
            with self.root.opened(top) as fd:
                while True:
                    name = f".emberkeep-replaced-{stamp}-{secrets.token_hex(4)}"
                    try:
                        os.mkdir(name, PRIVATE_DIR, dir_fd=fd)
                        break
                    except FileExistsError:
                        continue  # never a name someone made or planted before
                aside_fd = open_dir(fd, name)
                os.fchmod(aside_fd, PRIVATE_DIR)
            self._dirs[device] = (aside_fd, (*top, name))
            self.result.kept_in.append(str(self.root.path((*top, name))))
            return self._dirs[device]
