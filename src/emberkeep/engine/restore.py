"""Restore a files snapshot (or chosen paths of it) under a directory.

Files are written under a temp name and renamed into place, so an interrupted restore
never leaves a half-written file under a real name. Nothing is readable by others before
its final mode is set: temp files are created 0600 and directories 0700, and a directory
gets its own mode only at the end, once everything inside it is in place. Blobs of one
file are fetched and decrypted in parallel (bounded), files in order. Ownership is
restored when running as root; directory times are set last, deepest first, since
writing into a directory changes its mtime.

What a snapshot lists may be forged by whoever holds a writer key (README, "How it keeps
data safe"), so a restore is confined and checks what it writes:

- every tree entry is validated (``engine.tree``): a bad name or a malformed node is
  refused, and so is what lies below it;
- everything is created through directory handles, never following a symlink
  (``engine.confined``): a symlink restored earlier, or one already at the destination,
  is never written through; nothing above ``--to`` (nor ``--to`` itself, which no node
  describes: it is made 0700 when missing, else left as it is) has its mode, owner or
  times set;
- a hardlink is made only to a file this restore wrote (the same inode it created);
- setuid and setgid bits of a file are kept only when its owner is restored too (as
  root), and every such file is listed (``setid``); a directory keeps its setgid bit,
  which only makes new entries inherit its group;
- a file's content must give the digest its node records (``tree.content_problem``),
  and the bytes written must be as many as its node says; each blob is re-hashed as it
  is read, so a file that passes is what the backup read.

An entry that fails any of these is not restored, and is listed in ``refused`` with its
path and the reason; the rest restores (the caller exits 1).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, NotFound, UsageError
from ..fsutil import temp_name
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from .aside import Asides, lstat_of, same_file
from .confined import PRIVATE_DIR, Destination, NotADir, make_dir, open_dir, parts_of
from .fetch import read_in_order
from .tree import Node, content_problem, content_size_differs, shown
from .walk import walk_tree

PRIVATE_FILE = 0o600  # modes while restoring; the snapshot's are set once a file is complete
SETID = stat.S_ISUID | stat.S_ISGID
SMALL_GROUP_BYTES = 4 << 20  # consecutive small files restored together by one worker
SMALL_GROUP_FILES = 128


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)
    replaced: int = 0  # entries at the destination that differed, moved aside (engine/aside.py)
    kept_in: list[str] = field(default_factory=list)  # where: one directory per filesystem
    refused: list[dict[str, str]] = field(default_factory=list)  # not restored: path, reason
    setid: list[dict[str, Any]] = field(default_factory=list)  # setuid/setgid files

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RestoreIncomplete(IntegrityError):
    """Some entries were refused; everything else is restored."""

    def __init__(self, where: str, refused: list[dict[str, str]]) -> None:
        first = "; ".join(f"{r['path']}: {r['reason']}" for r in refused[:3])
        more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
        super().__init__(where, f"{len(refused)} entries not restored: {first}{more}")
        self.refused = refused


def _selected(path: str, includes: list[str]) -> bool:
    """True when ``path`` is one of the includes, inside one, or an ancestor of one."""
    if not includes:
        return True
    for inc in includes:
        if path == inc or path.startswith(inc + "/") or inc.startswith(path + "/"):
            return True
    return False


def _inside(path: str, includes: list[str]) -> bool:
    return not includes or any(path == i or path.startswith(i + "/") for i in includes)


class _Refused(Exception):
    """An entry this restore will not write (the reason is the message)."""


class Restorer:
    """Restores files in parallel: small files in groups per worker, large ones blob by blob.

    A group's blobs, like a large file's, are read in runs (``engine.fetch``): files backed
    up one after the other lie back to back in a pack, so a remote target serves a group
    with a few requests instead of one per file. At most ``2 * workers`` groups are in
    flight, so memory stays flat. Second names of hardlinked files are linked at the end,
    once their first name exists.
    """

    def __init__(
        self,
        repo: Repository,
        dest: Path,
        *,
        workers: int = 3,
        on_file: Callable[[str, int], None] = lambda path, size: None,
        on_thaw: Callable[[Any], None] | None = None,
    ) -> None:
        self.repo = repo
        self.on_thaw = on_thaw
        self.dest = dest
        self.workers = workers
        self.on_file = on_file
        self.result = RestoreResult()
        self.as_root = os.geteuid() == 0
        self._lock = threading.Lock()
        self._created: dict[str, tuple[int, int]] = {}  # path -> (dev, ino) of files written
        self._root: Destination | None = None
        self._aside: Asides | None = None

    @property
    def root(self) -> Destination:
        assert self._root is not None, "restore() opens the destination"
        return self._root

    @property
    def aside(self) -> Asides:
        assert self._aside is not None, "restore() opens the destination"
        return self._aside

    def restore(self, snapshot: Snapshot, includes: list[str] | None = None) -> RestoreResult:
        includes = [("/" + p.strip("/")) if p.strip("/") else "/" for p in (includes or [])]
        includes = [] if "/" in includes else includes
        self.repo.require_identity("restore")
        self._thaw(snapshot, includes)
        self._root = Destination(self.dest)
        self._aside = Asides(self._root, self._lock, self.result)
        try:
            self._restore(snapshot, includes)
        finally:
            self._aside.close()
            self._aside = None
            self._root.close()
            self._root = None
        return self.result

    def _restore(self, snapshot: Snapshot, includes: list[str]) -> None:
        dirs: list[tuple[str, Node]] = []
        links: list[tuple[str, Node]] = []
        found: set[str] = set()
        queued: set[str] = set()  # regular files handed to a worker
        skip = ""  # a directory refused: nothing below it is restored
        with ThreadPoolExecutor(self.workers, thread_name_prefix="restore") as pool:
            files: deque[Future[None]] = deque()
            small: list[tuple[str, Node]] = []
            small_bytes = 0
            for path, node in walk_tree(self.repo, snapshot.tree, on_refused=self._refuse):
                if skip and path.startswith(skip):
                    continue
                if not _selected(path, includes):
                    continue
                found.update(i for i in includes if path == i)
                if node["type"] == "dir":
                    if self._dir(path):
                        dirs.append((path, node))
                        self.result.dirs += 1
                    else:
                        skip = path + "/"
                    continue
                if not _inside(path, includes):
                    continue
                if node["type"] == "symlink":
                    self._symlink(path, node)
                    continue
                if node.get("hardlink") in queued:
                    links.append((path, node))
                    continue
                problem = content_problem(node)  # its size is checked as it is written
                if problem:
                    self._refuse(path, f"{problem}; not restored")
                    continue
                queued.add(path)
                if len(node["content"]) > 1:
                    if small:
                        files.append(pool.submit(self._small_files, small))
                        small, small_bytes = [], 0
                    self._drain(files, 0)  # a large file has the pool to itself
                    self._file(path, node, pool)
                    continue
                small.append((path, node))
                small_bytes += node["size"]
                if small_bytes >= SMALL_GROUP_BYTES or len(small) >= SMALL_GROUP_FILES:
                    files.append(pool.submit(self._small_files, small))
                    small, small_bytes = [], 0
                    self._drain(files, 2 * self.workers)
            if small:
                files.append(pool.submit(self._small_files, small))
            self._drain(files, 0)
        refused = [r["path"] for r in self.result.refused]
        missing = [
            i
            for i in includes
            if i not in found and not any(i == r or i.startswith(r + "/") for r in refused)
        ]
        if missing:
            raise UsageError(f"path {missing[0]} is not in snapshot {snapshot.short_id}")
        for path, node in links:
            self._link(path, node)
        for path, node in reversed(dirs):
            self._dir_metadata(path, node)

    def _thaw(self, snapshot: Snapshot, includes: list[str]) -> None:
        """On a cold target, ask for every pack the restore reads at once, and wait once."""
        if not hasattr(self.repo.storage, "prepare_read"):
            return  # not walking the tree twice for backends that need nothing
        ids = (
            blob_id
            for path, node in walk_tree(self.repo, snapshot.tree, on_refused=lambda p, r: None)
            if node["type"] == "file" and _inside(path, includes)
            for blob_id in node["content"]
        )
        self.repo.prepare_read(ids, self.on_thaw)

    @staticmethod
    def _drain(files: deque[Future[None]], keep: int) -> None:
        while len(files) > keep:
            files.popleft().result()

    def _refuse(self, path: str, reason: str) -> None:
        with self._lock:
            self.result.refused.append({"path": shown(path), "reason": reason})

    # -- files ---------------------------------------------------------------------------

    def _small_files(self, group: list[tuple[str, Node]]) -> None:
        """Files of one blob (or none), their blobs read in runs; on damage, file by file,
        so the refusal names the file."""
        ids = [blob_id for _, node in group for blob_id in node["content"]]
        try:
            blobs = iter(list(read_in_order(self.repo, ids)))
        except (IntegrityError, NotFound):
            for path, node in group:
                self._file(path, node, None)
            return
        for path, node in group:
            self._write(path, node, [next(blobs) for _ in node["content"]])

    def _file(self, path: str, node: Node, pool: ThreadPoolExecutor | None) -> None:
        self._write(path, node, read_in_order(self.repo, node["content"], pool, self.workers))

    def _write(self, path: str, node: Node, blobs: Iterable[bytes]) -> None:
        """Write under a temp name, check its length, set metadata, rename into place."""
        parts = parts_of(path)
        name = parts[-1]
        try:
            with self.root.opened(parts[:-1]) as parent:
                temp = temp_name(Path(name)).name
                fd = os.open(
                    temp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    PRIVATE_FILE,
                    dir_fd=parent,
                )
                try:
                    with open(fd, "wb", closefd=False) as out:
                        for data in blobs:
                            out.write(data)
                    written = os.fstat(fd).st_size
                    if written != node["size"]:
                        raise _Refused(content_size_differs(written, node))
                    self._file_metadata(path, fd, node)
                    st = os.fstat(fd)
                    os.close(fd)
                    fd = -1
                    self.aside.keep_aside(
                        path, parent, name, lambda st: same_file(st, parent, name, parent, temp)
                    )
                    os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
                except BaseException:
                    if fd >= 0:
                        os.close(fd)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp, dir_fd=parent)
                    raise
        except (IntegrityError, NotFound) as exc:
            self._refuse(path, f"cannot be restored: {exc}")
            return
        except _Refused as exc:
            self._refuse(path, f"{exc}; not restored")
            return
        except NotADir as exc:
            self._refuse(path, f"a parent directory {exc.strerror}; not restored")
            return
        with self._lock:
            self._created[path] = (st.st_dev, st.st_ino)
        self._count_file(path, node)

    def _file_metadata(self, path: str, fd: int, node: Node) -> None:
        """Owner (as root), mode and mtime of a file written, through its open handle.

        Setuid/setgid bits are kept only with the owner they were given for: as root, once
        the chown worked; otherwise they are dropped. Either way the file is listed."""
        mode = node["mode"]
        owned = self.as_root and self._chown(path, lambda: os.fchown(fd, node["uid"], node["gid"]))
        if mode & SETID:
            kept = bool(owned)
            mode = mode if kept else mode & ~SETID
            entry = {
                "path": shown(path),
                "mode": f"{node['mode']:04o}",
                "owner": f"{node['uid']}:{node['gid']}",
                "kept": kept,
            }
            with self._lock:
                self.result.setid.append(entry)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(node["mtime_ns"], node["mtime_ns"]))

    def _chown(self, path: str, chown: Callable[[], None]) -> bool:
        try:
            chown()
        except OSError as exc:
            warning = {"path": shown(path), "message": f"chown: {exc.strerror}"}
            with self._lock:
                self.result.warnings.append(warning)
            return False
        return True

    def _link(self, path: str, node: Node) -> None:
        """A second name of a file this restore wrote: linked only to that very inode."""
        first = node["hardlink"]
        made = self._created.get(first)
        if made is None:
            self._refuse(path, f"hardlink to {shown(first)}, which was not restored")
            return
        src, dst = parts_of(first), parts_of(path)
        try:
            with self.root.opened(src[:-1]) as src_dir, self.root.opened(dst[:-1]) as dst_dir:
                st = lstat_of(src_dir, src[-1])
                if st is None or (st.st_dev, st.st_ino) != made:
                    self._refuse(path, f"hardlink to {shown(first)}, no longer the file restored")
                    return
                self.aside.keep_aside(
                    path,
                    dst_dir,
                    dst[-1],
                    lambda st: same_file(st, dst_dir, dst[-1], src_dir, src[-1]),
                )
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dst[-1], dir_fd=dst_dir)
                os.link(
                    src[-1], dst[-1], src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False
                )
        except NotADir as exc:
            self._refuse(path, f"a parent directory {exc.strerror}; not restored")
            return
        self._count_file(path, node)

    def _count_file(self, path: str, node: Node) -> None:
        with self._lock:
            self.result.files += 1
            self.result.bytes += node["size"]
        self.on_file(path, node["size"])

    # -- directories and symlinks (on the walking thread) --------------------------------

    def _dir(self, path: str) -> bool:
        """Make the directory (0700 until its final mode) unless a real one is there; what
        is in its place is kept aside. False when it is refused."""
        parts = parts_of(path)
        try:
            with self.root.opened(parts[:-1]) as parent:
                st = lstat_of(parent, parts[-1])
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    self.aside.keep_aside(path, parent, parts[-1], lambda _: False)
                fd, _ = make_dir(parent, parts[-1], PRIVATE_DIR)
                os.close(fd)
        except NotADir as exc:
            self._refuse(path, f"a parent directory {exc.strerror}; not restored")
            return False
        return True

    def _dir_metadata(self, path: str, node: Node) -> None:
        parts = parts_of(path)
        try:
            with self.root.opened(parts[:-1]) as parent:
                fd = open_dir(parent, parts[-1])
        except (NotADir, FileNotFoundError):
            self._refuse(path, "is no longer the directory restored; its metadata is not set")
            return
        try:
            if self.as_root:
                self._chown(path, lambda: os.fchown(fd, node["uid"], node["gid"]))
            os.fchmod(fd, node["mode"])
            os.utime(fd, ns=(node["mtime_ns"], node["mtime_ns"]))
        finally:
            os.close(fd)

    def _symlink(self, path: str, node: Node) -> None:
        parts = parts_of(path)
        name, target = parts[-1], node["target"]

        def same(st: os.stat_result) -> bool:
            return stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=parent) == target

        try:
            with self.root.opened(parts[:-1]) as parent:
                self.aside.keep_aside(path, parent, name, same)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=parent)
                os.symlink(target, name, dir_fd=parent)
                if self.as_root:
                    uid, gid = node["uid"], node["gid"]
                    self._chown(
                        path, lambda: os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
                    )
                mtime = node["mtime_ns"]
                os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
        except NotADir as exc:
            self._refuse(path, f"a parent directory {exc.strerror}; not restored")
            return
        self.result.symlinks += 1
