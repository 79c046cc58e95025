"""Restore a files snapshot (or chosen paths of it) under a directory.

Files are written under a temp name and renamed into place, so an interrupted restore
never leaves a half-written file under a real name. Nothing is readable by others before
its final mode is set: temp files are created 0600 and directories 0700, and a directory
gets its own mode only at the end, once everything inside it is in place. Blobs of one
file are fetched and decrypted in parallel (bounded), files in order. Ownership is
restored when running as root; directory times are set last, deepest first, since
writing into a directory changes its mtime.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import stat
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, NotFound, StorageError, UsageError
from ..fsutil import create_new, make_dirs, temp_name
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from .fetch import read_in_order
from .tree import Node, decode_tree


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)
    replaced: int = 0  # entries at the destination that differed, moved aside (_keep_aside)
    kept_in: list[str] = field(default_factory=list)  # where: one directory per filesystem

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def walk_tree(repo: Repository, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Every node of a snapshot tree with its absolute snapshot path, parents first."""
    for node in decode_tree(repo.read_blob(tree_id)):
        path = f"{prefix}/{node['name']}"
        yield path, node
        if node["type"] == "dir":
            yield from walk_tree(repo, node["subtree"], path)


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


PRIVATE_FILE = 0o600  # modes while restoring; the snapshot's are set once a file is complete
PRIVATE_DIR = 0o700  # and once a directory's whole subtree is
SMALL_GROUP_BYTES = 4 << 20  # consecutive small files restored together by one worker
SMALL_GROUP_FILES = 128


def _same_content(
    target: Path, st: os.stat_result, restored: Path | None, link_to: str | None
) -> bool:
    """Whether ``target`` already holds what is restored there; unreadable counts as not."""
    try:
        if restored is not None and stat.S_ISREG(st.st_mode):
            return filecmp.cmp(target, restored, shallow=False)
        if link_to is not None and stat.S_ISLNK(st.st_mode):
            return os.readlink(target) == link_to
    except OSError:
        pass
    return False


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
        self._asides: dict[int, Path] = {}  # per filesystem (st_dev): see _keep_aside

    def restore(self, snapshot: Snapshot, includes: list[str] | None = None) -> RestoreResult:
        includes = [("/" + p.strip("/")) if p.strip("/") else "/" for p in (includes or [])]
        includes = [] if "/" in includes else includes
        self.repo.require_identity("restore")
        self._thaw(snapshot, includes)
        self.dest.mkdir(parents=True, exist_ok=True)
        dirs: list[tuple[str, Node]] = []
        links: list[tuple[str, Node]] = []
        found: set[str] = set()
        restored: set[str] = set()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="restore") as pool:
            files: deque[Future[None]] = deque()
            small: list[tuple[str, Node, Path]] = []
            small_bytes = 0
            for path, node in walk_tree(self.repo, snapshot.tree):
                if not _selected(path, includes):
                    continue
                found.update(i for i in includes if path == i)
                target = self.dest / path.lstrip("/")
                if node["type"] == "dir":
                    if target.is_symlink() or (target.exists() and not target.is_dir()):
                        self._keep_aside(path, target)  # a file where the snapshot has a dir
                    make_dirs(target, mode=PRIVATE_DIR)
                    dirs.append((path, node))
                    self.result.dirs += 1
                elif not _inside(path, includes):
                    continue
                elif node["type"] == "symlink":
                    self._symlink(node, target)
                elif node.get("hardlink") in restored:
                    links.append((path, node))
                else:
                    restored.add(path)
                    if len(node["content"]) > 1:
                        if small:
                            files.append(pool.submit(self._small_files, small))
                            small, small_bytes = [], 0
                        self._drain(files, 0)  # a large file has the pool to itself
                        self._file(path, node, target, pool)
                        continue
                    small.append((path, node, target))
                    small_bytes += node.get("size", 0)
                    if small_bytes >= SMALL_GROUP_BYTES or len(small) >= SMALL_GROUP_FILES:
                        files.append(pool.submit(self._small_files, small))
                        small, small_bytes = [], 0
                        self._drain(files, 2 * self.workers)
            if small:
                files.append(pool.submit(self._small_files, small))
            self._drain(files, 0)
        missing = [i for i in includes if i not in found]
        if missing:
            raise UsageError(f"path {missing[0]} is not in snapshot {snapshot.short_id}")
        for path, node in links:
            self._link(path, node)
        for path, node in reversed(dirs):
            self._metadata(self.dest / path.lstrip("/"), node)
        return self.result

    def _thaw(self, snapshot: Snapshot, includes: list[str]) -> None:
        """On a cold target, ask for every pack the restore reads at once, and wait once."""
        if not hasattr(self.repo.storage, "prepare_read"):
            return  # not walking the tree twice for backends that need nothing
        ids = (
            blob_id
            for path, node in walk_tree(self.repo, snapshot.tree)
            if node["type"] == "file" and _inside(path, includes)
            for blob_id in node["content"]
        )
        self.repo.prepare_read(ids, self.on_thaw)

    @staticmethod
    def _drain(files: deque[Future[None]], keep: int) -> None:
        while len(files) > keep:
            files.popleft().result()

    def _small_files(self, group: list[tuple[str, Node, Path]]) -> None:
        """Files of one blob (or none), their blobs read in runs; on damage, file by file,
        so the error names the file."""
        ids = [blob_id for _, node, _ in group for blob_id in node["content"]]
        try:
            blobs = iter(list(read_in_order(self.repo, ids)))
        except (IntegrityError, NotFound):
            for path, node, target in group:
                self._file(path, node, target, None)
            return
        for path, node, target in group:
            self._write(path, node, target, [next(blobs) for _ in node["content"]])

    def _file(self, path: str, node: Node, target: Path, pool: ThreadPoolExecutor | None) -> None:
        self._write(
            path, node, target, read_in_order(self.repo, node["content"], pool, self.workers)
        )

    def _write(self, path: str, node: Node, target: Path, blobs: Iterable[bytes]) -> None:
        """Write under a temp name, set metadata, rename into place; damage names the file."""
        make_dirs(target.parent, mode=PRIVATE_DIR)
        tmp = temp_name(target)
        try:
            with open(create_new(tmp, PRIVATE_FILE), "wb") as out:
                for data in blobs:
                    out.write(data)
            self._metadata(tmp, node)
            self._keep_aside(path, target, tmp)
            os.replace(tmp, target)
        except (IntegrityError, NotFound) as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise IntegrityError(path, f"cannot be restored: {exc}") from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self._count_file(path, node)

    def _link(self, path: str, node: Node) -> None:
        target = self.dest / path.lstrip("/")
        first = self.dest / node["hardlink"].lstrip("/")
        make_dirs(target.parent, mode=PRIVATE_DIR)
        self._keep_aside(path, target, first)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        os.link(first, target)
        self._count_file(path, node)

    def _keep_aside(
        self, path: str, target: Path, restored: Path | None = None, link_to: str | None = None
    ) -> None:
        """Move what is at ``target`` out of the way, unless it already equals what is restored
        there (the file ``restored``, or a symlink to ``link_to``).

        A restore into a directory that is in use (``--to /`` to put files back) must not
        destroy what is there: a file that differs from the snapshot's (an edit made since,
        which may be the only copy), a symlink, or a directory where the snapshot has a file
        is moved under a ``.emberkeep-replaced-<time>-…`` directory with its snapshot path,
        and counted in the result. That directory is made (exclusively, 0700) at the top of
        the target's filesystem within the destination, so the move is a rename on the same
        disk, and away from programs that read every file of a directory (``sites-enabled/*``).
        """
        try:
            st = target.lstat()
        except FileNotFoundError:
            return
        if _same_content(target, st, restored, link_to):
            return  # nothing to keep; the caller replaces it
        aside = self._aside_dir(target, st.st_dev) / path.lstrip("/")
        make_dirs(aside.parent, mode=PRIVATE_DIR)
        try:
            os.rename(target, aside)
        except OSError as exc:
            raise StorageError(
                f"cannot move {target} aside to restore the snapshot's {path} there "
                f"({exc.strerror}): is it a mount point or in use? Restore elsewhere with --to"
            ) from exc
        with self._lock:
            self.result.replaced += 1

    def _aside_dir(self, target: Path, device: int) -> Path:
        """The directory kept entries go to on ``target``'s filesystem, made when first needed."""
        with self._lock:
            aside = self._asides.get(device)
            if aside is None:
                top = self._top_on(device, target)
                stamp = time.strftime("%Y%m%dT%H%M%S")
                aside = Path(tempfile.mkdtemp(prefix=f".emberkeep-replaced-{stamp}-", dir=top))
                self._asides[device] = aside
                self.result.kept_in.append(str(aside))
            return aside

    def _top_on(self, device: int, target: Path) -> Path:
        """The directory nearest the destination's root, on the way to ``target``, that lies
        on ``device`` (the destination itself, unless another disk is mounted below it)."""
        here = self.dest
        for part in target.relative_to(self.dest).parent.parts:
            if os.lstat(here).st_dev == device:
                return here
            here = here / part
        return here

    def _count_file(self, path: str, node: Node) -> None:
        with self._lock:
            self.result.files += 1
            self.result.bytes += node.get("size", 0)
        self.on_file(path, node.get("size", 0))

    def _symlink(self, node: Node, target: Path) -> None:
        make_dirs(target.parent, mode=PRIVATE_DIR)
        self._keep_aside(str(target.relative_to(self.dest)), target, link_to=node["target"])
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        os.symlink(node["target"], target)
        self._metadata(target, node)
        self.result.symlinks += 1

    def _metadata(self, target: Path, node: Node) -> None:
        if self.as_root:
            try:
                os.chown(target, node["uid"], node["gid"], follow_symlinks=False)
            except OSError as exc:
                with self._lock:
                    self.result.warnings.append(
                        {"path": str(target), "message": f"chown: {exc.strerror}"}
                    )
        if node["type"] != "symlink":
            os.chmod(target, node["mode"])
        mtime = node["mtime_ns"]
        os.utime(target, ns=(mtime, mtime), follow_symlinks=False)
