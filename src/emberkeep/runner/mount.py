"""``emberkeep mount DIR``: a target's snapshots as a read-only FUSE file system.

Layout (README, "Browse a snapshot")::

    DIR/snapshots/<source>/<time>/...   each snapshot's tree (paths as backed up)
    DIR/snapshots/<source>/latest       a symlink to the newest
    DIR/ids/<short id>                  a symlink to the snapshot's directory

The snapshots are listed once, when the mount starts. Nothing is read before it is asked
for: a directory's listing when it is first listed or looked into (``engine.tree``'s
``decode_listing``: a forged entry is left out and reported on stderr, never shown, as a
restore refuses it), a file's blobs when its bytes are read. A file whose content cannot
be what its node says (its digest or its blob sizes, ``walk.file_problem``) opens with
EIO; every blob is re-hashed as it is read. The FUSE binding is ``mfusepy`` (pyproject: why).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clock import iso
from ..engine.tree import BadTree, Node, decode_listing, shown
from ..engine.walk import file_problem
from ..errors import EmberkeepError, IntegrityError, NotFound, UsageError
from ..repository import layout
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from ..site import Site

LISTINGS_CACHED = 1024  # decoded directory listings kept (least recently used dropped)
VIRTUAL_DIR = stat.S_IFDIR | 0o555

Warn = Callable[[str], None]


@dataclass
class _Open:
    node: Node
    ends: list[int]  # cumulative end offset of each blob
    last: tuple[int, bytes] | None = None  # the blob read last (sequential reads)


def snapshot_dirs(snapshots: list[Snapshot]) -> dict[str, dict[str, Snapshot]]:
    """Source -> directory name -> snapshot; the name is the time, with the short id added
    when two snapshots of a source share a second."""
    out: dict[str, dict[str, Snapshot]] = {}
    for snap in sorted(snapshots, key=lambda s: (s.time, s.id)):
        names = out.setdefault(snap.source, {})
        name = iso(snap.time)
        if name in names:
            name = f"{name}-{snap.short_id}"
        names[name] = snap
    return out


class SnapshotFS:
    """The file system's operations, over one repository (module docstring)."""

    def __init__(self, repo: Repository, snapshots: list[Snapshot], warn: Warn) -> None:
        self.repo = repo
        self.warn = warn
        self.by_source = snapshot_dirs(snapshots)
        self.ids = {
            snap.short_id: f"../snapshots/{source}/{name}"
            for source, names in self.by_source.items()
            for name, snap in names.items()
        }
        self._listings: OrderedDict[bytes, dict[str, Node]] = OrderedDict()
        self._open: dict[int, _Open] = {}
        self._next_fh = 1
        self._lock = threading.Lock()

    # -- resolving paths -----------------------------------------------------------------

    def listing(self, tree_id: bytes, where: str) -> dict[str, Node]:
        with self._lock:
            cached = self._listings.get(tree_id)
            if cached is not None:
                self._listings.move_to_end(tree_id)
                return cached
        try:
            listing = decode_listing(self.repo.read_tree(tree_id))
        except (IntegrityError, NotFound, BadTree) as exc:
            self.warn(f"{shown(where)}: its listing cannot be read: {exc}")
            raise OSError(errno.EIO, "unreadable listing") from None
        for bad in listing.bad:
            self.warn(f"{shown(where)}/{bad.name}: {bad.reason}; not shown")
        nodes = {n["name"]: n for n in listing.nodes}
        with self._lock:
            self._listings[tree_id] = nodes
            while len(self._listings) > LISTINGS_CACHED:
                self._listings.popitem(last=False)
        return nodes

    def resolve(self, path: str) -> tuple[str, Any]:
        """What ``path`` is: ('root'|'dir-list', names), ('link', target) or ('node', node)."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return "virtual", ["snapshots", "ids"]
        top, rest = parts[0], parts[1:]
        if top == "ids":
            if not rest:
                return "virtual", sorted(self.ids)
            if len(rest) == 1 and rest[0] in self.ids:
                return "link", self.ids[rest[0]]
            raise OSError(errno.ENOENT, path)
        if top != "snapshots":
            raise OSError(errno.ENOENT, path)
        if not rest:
            return "virtual", sorted(self.by_source)
        names = self.by_source.get(rest[0])
        if names is None:
            raise OSError(errno.ENOENT, path)
        if len(rest) == 1:
            return "virtual", [*names, "latest"]
        if rest[1] == "latest" and len(rest) == 2:
            return "link", list(names)[-1]
        snap = names.get(rest[1])
        if snap is None:
            raise OSError(errno.ENOENT, path)
        node: Node = {"type": "dir", "subtree": snap.tree, "mode": 0o555, "uid": os.getuid(),
                      "gid": os.getgid(), "mtime_ns": int(snap.time.timestamp() * 1e9)}  # fmt: skip
        where = f"/snapshots/{rest[0]}/{rest[1]}"
        for part in rest[2:]:
            if node["type"] != "dir":
                raise OSError(errno.ENOTDIR, path)
            child = self.listing(node["subtree"], where).get(part)
            if child is None:
                raise OSError(errno.ENOENT, path)
            node, where = child, f"{where}/{part}"
        return "node", node

    # -- the operations (mfusepy.Operations' names) --------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        kind, what = self.resolve(path)
        if kind == "virtual":
            return {"st_mode": VIRTUAL_DIR, "st_nlink": 2, "st_uid": os.getuid(),
                    "st_gid": os.getgid()}  # fmt: skip
        if kind == "link":
            return {"st_mode": stat.S_IFLNK | 0o777, "st_nlink": 1, "st_size": len(what),
                    "st_uid": os.getuid(), "st_gid": os.getgid()}  # fmt: skip
        node = what
        ns = node["mtime_ns"]  # times in nanoseconds (use_ns), exact as backed up
        attrs = {"st_uid": node["uid"], "st_gid": node["gid"], "st_mtime": ns,
                 "st_atime": ns, "st_ctime": ns, "st_nlink": 1}  # fmt: skip
        if node["type"] == "dir":
            attrs.update(st_mode=stat.S_IFDIR | node["mode"], st_nlink=2)
        elif node["type"] == "symlink":
            attrs.update(st_mode=stat.S_IFLNK | 0o777, st_size=len(os.fsencode(node["target"])))
        else:
            attrs.update(st_mode=stat.S_IFREG | node["mode"], st_size=node["size"])
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        kind, what = self.resolve(path)
        if kind == "virtual":
            return [".", "..", *what]
        if kind != "node" or what["type"] != "dir":
            raise OSError(errno.ENOTDIR, path)
        return [".", "..", *self.listing(what["subtree"], path)]

    def readlink(self, path: str) -> str:
        kind, what = self.resolve(path)
        if kind == "link":
            return str(what)
        if kind == "node" and what["type"] == "symlink":
            return str(what["target"])
        raise OSError(errno.EINVAL, path)

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise OSError(errno.EROFS, path)
        kind, node = self.resolve(path)
        if kind != "node" or node["type"] != "file":
            raise OSError(errno.EISDIR, path)
        problem = file_problem(self.repo, node)
        if problem:
            self.warn(f"{shown(path)}: {problem}; not readable")
            raise OSError(errno.EIO, path)
        ends, total = [], 0
        for blob_id in node["content"]:
            location = self.repo.index.find(blob_id)
            assert location is not None  # file_problem found every blob
            total += location.raw_length
            ends.append(total)
        with self._lock:
            fh, self._next_fh = self._next_fh, self._next_fh + 1
            self._open[fh] = _Open(node, ends)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._open.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, path)
        out = []
        end = min(offset + size, handle.ends[-1] if handle.ends else 0)
        while offset < end:
            number = bisect_right(handle.ends, offset)
            start = handle.ends[number - 1] if number else 0
            data = self._blob(handle, number, path)
            piece = data[offset - start : end - start]
            out.append(piece)
            offset += len(piece)
        return b"".join(out)

    def _blob(self, handle: _Open, number: int, path: str) -> bytes:
        if handle.last is not None and handle.last[0] == number:
            return handle.last[1]
        try:
            data = self.repo.read_blob(handle.node["content"][number], layout.BLOB_DATA)
        except EmberkeepError as exc:
            self.warn(f"{shown(path)}: {exc}")
            raise OSError(errno.EIO, path) from None
        handle.last = (number, data)
        return data

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._open.pop(fh, None)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


def run_mount(
    site: Site,
    mountpoint: Path,
    *,
    target: str | None = None,
    source: str | None = None,
    warn: Warn,
    on_ready: Callable[[SnapshotFS], None],
) -> None:
    """Mount, serve in the foreground until unmounted (``fusermount3 -u DIR``) or Ctrl-C."""
    if not mountpoint.is_dir():
        raise UsageError(f"mount point {mountpoint} is not a directory; create it first")
    if source is not None:
        site.config.source(source)  # a typo names the configured sources
    repo = site.repository(target, read=True)
    snapshots = [s for s in repo.snapshots() if source is None or s.source == source]
    try:
        import mfusepy  # type: ignore[import-untyped]
    except OSError as exc:  # libfuse itself is missing
        raise UsageError(f"mount needs libfuse 3 (Debian: apt-get install fuse3): {exc}") from None

    class Operations(SnapshotFS, mfusepy.Operations):
        """``SnapshotFS``'s methods for mfusepy, which calls those a subclass defines (an
        OSError raised is returned as its errno); the mount is read-only (``ro``), so the
        kernel answers every write with EROFS."""

        use_ns = True

        def init(self, path: str) -> None:
            on_ready(self)

    operations = Operations(repo, snapshots, warn)
    try:
        mfusepy.FUSE(
            operations, str(mountpoint), foreground=True, ro=True, nothreads=True,
            fsname=f"emberkeep:{site.config.site.name}", default_permissions=True,
        )  # fmt: skip
    except RuntimeError as exc:
        raise EmberkeepError(
            f"cannot mount {mountpoint}: {exc} (FUSE refused: is /dev/fuse there and "
            "fusermount3 installed? in a container it needs the FUSE device and CAP_SYS_ADMIN)"
        ) from None
