"""A destination directory written only through directory handles, never through a symlink.

A restore creates what a snapshot lists, and a snapshot may be forged (README, "How it
keeps data safe"). Joining its names into paths would let a symlink restored earlier, or
one planted at the destination, carry a later write anywhere. So every directory is
opened relative to its parent's handle with ``O_NOFOLLOW | O_DIRECTORY`` (a symlink or a
file in its place is an error, never followed), and entries are created, renamed, linked
and given their metadata relative to those handles (the ``dir_fd`` forms of the calls).
Nothing above the destination is ever opened for writing or changed.

Handles are kept open in a small cache (parents of what is written next are reused, deep
trees cost no path walk per file); a handle in use by another thread is never closed
under it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from ..fsutil import make_dirs

PRIVATE_DIR = 0o700
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
Parts = tuple[str, ...]


def parts_of(path: str) -> Parts:
    """A snapshot path (``/a/b``) as the parts a ``Destination`` opens (``("a", "b")``)."""
    return tuple(path.strip("/").split("/"))


class NotADir(OSError):
    """A component of a path under the destination is not a real directory (a symlink or a
    file is where the snapshot has a directory)."""


def open_dir(parent: int, name: str) -> int:
    """The directory ``name`` in ``parent``; ``NotADir`` if it is a symlink or not a dir."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotADir(exc.errno, "is a symlink or not a directory", name) from None
        raise


def make_dir(parent: int, name: str, mode: int = PRIVATE_DIR) -> tuple[int, bool]:
    """Open the directory ``name`` in ``parent``, made with exactly ``mode`` (whatever the
    umask) when missing; returns (handle, whether it was made)."""
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        return open_dir(parent, name), False
    fd = open_dir(parent, name)
    os.fchmod(fd, mode)
    return fd, True


def make_dirs_at(base: int, parts: Parts, mode: int = PRIVATE_DIR) -> int:
    """Open (making what is missing) the directory ``parts`` below ``base``; the caller
    closes the handle returned."""
    fd = os.dup(base)
    for part in parts:
        try:
            child, _ = make_dir(fd, part, mode)
        finally:
            os.close(fd)
        fd = child
    return fd


class _Handle:
    __slots__ = ("evicted", "fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0
        self.evicted = False


class Destination:
    """The directory a restore writes under, and open handles of directories inside it.

    ``root`` is made (with its missing parents, each 0700) if it does not exist; an
    existing one is used as it is. Paths below it are tuples of names, each one path
    component (``engine.tree`` checked them).
    """

    def __init__(self, root: Path, *, keep_open: int = 64) -> None:
        make_dirs(root, mode=PRIVATE_DIR)
        self.root = root
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._keep_open = keep_open
        self._lock = threading.Lock()
        self._handles: OrderedDict[Parts, _Handle] = OrderedDict()

    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                if handle.users == 0:
                    os.close(handle.fd)
                else:
                    handle.evicted = True  # closed by its last user
            self._handles.clear()
        os.close(self.root_fd)

    def path(self, parts: Parts) -> Path:
        """Where ``parts`` lies, for messages only (never opened by this path)."""
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def opened(self, parts: Parts) -> Iterator[int]:
        """A handle of the directory ``parts`` (the root for ``()``), valid in the block.

        Each component is opened without following symlinks: ``NotADir`` when one is not a
        real directory.
        """
        if not parts:
            yield self.root_fd
            return
        handle = self._acquire(parts)
        try:
            yield handle.fd
        finally:
            self._release(handle)

    def forget(self, parts: Parts) -> None:
        """Drop cached handles of ``parts`` and below (it was moved aside or replaced)."""
        with self._lock:
            for key in [k for k in self._handles if k[: len(parts)] == parts]:
                handle = self._handles.pop(key)
                handle.evicted = True
                if handle.users == 0:
                    os.close(handle.fd)

    def _acquire(self, parts: Parts) -> _Handle:
        with self._lock:
            handle = self._handles.get(parts)
            if handle is not None:
                handle.users += 1
                self._handles.move_to_end(parts)
                return handle
        with self.opened(parts[:-1]) as parent:
            fd = open_dir(parent, parts[-1])
        with self._lock:
            handle = self._handles.get(parts)
            if handle is not None:  # another thread opened it meanwhile
                os.close(fd)
            else:
                handle = self._handles[parts] = _Handle(fd)
                self._evict()
            handle.users += 1
            return handle

    def _release(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            if handle.evicted and handle.users == 0:
                os.close(handle.fd)

    def _evict(self) -> None:
        """Close the least recently used handles no thread holds, down to ``keep_open``."""
        for key in list(self._handles):
            if len(self._handles) <= self._keep_open:
                return
            handle = self._handles[key]
            if handle.users == 0:
                del self._handles[key]
                os.close(handle.fd)
