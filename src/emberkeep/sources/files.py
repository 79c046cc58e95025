"""The files source: media and configuration trees.

Walks the configured paths depth-first in name order. The snapshot holds each path at
its absolute location (``/etc/nginx/…``), with the ancestors of each configured path as
directories carrying their own metadata, so a restore recreates the layout. Symlinks are
stored, not followed; sockets, fifos and devices are skipped with a warning.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..engine.events import Enter, Event, Leaf, Leave, LocalFile, Warning_
from ..errors import EmberkeepError


def node_meta(name: str, st: os.stat_result) -> dict[str, Any]:
    return {
        "name": name,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
    }


class FilesWalker:
    def __init__(self, paths: list[Path], exclude: list[str]) -> None:
        self.roots = _outermost(sorted({os.path.normpath(str(p)) for p in paths}))
        self.exclude = exclude

    def check_paths(self) -> None:
        missing = [r for r in self.roots if not os.path.lexists(r)]
        if missing:
            raise EmberkeepError(
                f"source path {missing[0]} does not exist; fix `paths` in the config "
                "or restore the path"
            )

    def _excluded(self, path: str, name: str) -> bool:
        for pattern in self.exclude:
            subject = path if "/" in pattern else name
            if fnmatch.fnmatchcase(subject, pattern):
                return True
        return False

    def walk(self) -> Iterator[Event]:
        """Depth-first, names in byte order, iteratively (deep trees cost no recursion)."""
        stack: list[Iterator[tuple[str, str, bool]]] = [self._listing("/", whole="/" in self.roots)]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                if stack:
                    yield Leave()
                continue
            path, name, included = entry
            if included and self._excluded(path, name):
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                yield Warning_(path, "vanished while the backup ran; skipped")
                continue
            except OSError as exc:
                yield Warning_(path, f"cannot stat: {exc.strerror}; skipped", unreadable=True)
                continue
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                node = node_meta(name, st)
                node["type"] = "dir"
                yield Enter(node)
                try:
                    stack.append(self._listing(path, whole=included))
                except OSError as exc:
                    yield Warning_(
                        path,
                        f"cannot list directory: {exc.strerror}; stored empty",
                        unreadable=True,
                    )
                    stack.append(iter(()))
            elif not included:
                continue  # an ancestor of a configured path that is not a directory
            elif stat.S_ISREG(mode):
                node = node_meta(name, st)
                node["type"] = "file"
                yield LocalFile(node, st, path)
            elif stat.S_ISLNK(mode):
                try:
                    target = os.readlink(path)
                except OSError as exc:
                    yield Warning_(
                        path, f"cannot read link: {exc.strerror}; skipped", unreadable=True
                    )
                    continue
                node = node_meta(name, st)
                node.update(type="symlink", target=target)
                yield Leaf(node)
            else:
                yield Warning_(
                    path, f"{_special_kind(mode)} skipped (special files are not backed up)"
                )

    def _listing(self, directory: str, *, whole: bool) -> Iterator[tuple[str, str, bool]]:
        """(path, name, included) of a directory's children to visit, in byte order."""
        prefix = directory.rstrip("/") + "/"
        if whole:
            names = os.listdir(directory)
            return ((prefix + n, n, True) for n in sorted(names, key=os.fsencode))
        below = {r[len(prefix) :].split("/", 1)[0] for r in self.roots if r.startswith(prefix)}
        return ((prefix + n, n, prefix + n in self.roots) for n in sorted(below, key=os.fsencode))


def _special_kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "device"
    return "special file"


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths that lie inside another configured path."""
    kept: list[str] = []
    for path in paths:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def scan_size(paths: list[Path], exclude: list[str]) -> int:
    """Total bytes of regular files a walk would read (for a progress bar's total)."""
    return sum(
        e.stat.st_size for e in FilesWalker(paths, exclude).walk() if isinstance(e, LocalFile)
    )
