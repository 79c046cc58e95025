"""One backup: a source's events in, one committed snapshot out.

Commit order (docs/design.md): packs, then one index file, then the snapshot, the only
commit point. The run announces itself with a shared lease *before* it reads the index,
so a concurrent prune either sees the lease or has already marked its condemned packs,
which this run then never deduplicates against.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import clock
from ..repository import layout
from ..repository.lease import Lease
from ..repository.repo import Repository
from ..repository.snapshot import SeenBefore, Snapshot, Stamp, next_sequence, written_order
from .chunker import Chunker
from .events import Enter, Event, Leaf, Leave, LocalFile, Stream, Warning_
from .filescache import FilesCache
from .streams import StreamFanIn
from .tree import TreeBuilder
from .writer import BlobWriter

READ_RETRIES = 3
NOT_COMMITTED = (
    "a prune may meanwhile have deleted packs this backup reuses: the snapshot was not saved. "
    "Nothing was committed, earlier snapshots are intact, and the next backup stores the data "
    "again"
)


@dataclass
class Progress:
    """Callbacks the caller may watch; the defaults do nothing."""

    on_file: Callable[[str, int], None] = lambda path, size: None


@dataclass
class BackupResult:
    snapshot: Snapshot
    warnings: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # paths left out: an incomplete backup
    previous: list[Snapshot] = field(default_factory=list)  # headers read just before commit

    def to_json(self, target: str) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot.to_json(target),
            "warnings": self.warnings,
            "unreadable": self.unreadable,
        }


@dataclass
class _Run:
    repo: Repository
    writer: BlobWriter
    tree: TreeBuilder
    cache: FilesCache | None
    progress: Progress
    chunker: Chunker
    fan_in: StreamFanIn | None = None  # concurrent streams, when the source asks for them
    warnings: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    files: int = 0
    dirs: int = 0
    bytes_read: int = 0  # not "bytes": the name would shadow the type in this class
    bytes_from_cache: int = 0
    links: dict[tuple[int, int], tuple[str, list[bytes]]] = field(default_factory=dict)

    def consume(self, events: Iterable[Event]) -> None:
        try:
            for event in events:
                self._take(event)
            if self.fan_in is not None:
                self.fan_in.drain()
        except BaseException:
            if self.fan_in is not None:
                self.fan_in.cancel()
            raise

    def _take(self, event: Event) -> None:
        if self.fan_in is not None:
            if isinstance(event, Stream) and event.concurrent:
                self.tree.add(event.node)  # in order now; its content is filled in as it ends
                self.fan_in.start(event)
                return
            self.fan_in.drain()
        match event:
            case Enter(node):
                self.dirs += 1
                self.tree.enter(node)
            case Leave():
                self.tree.leave()
            case Leaf(node):
                self.tree.add(node)
            case LocalFile():
                self._file(event)
            case Stream():
                self._stream(event)
            case Warning_(path, message, unreadable):
                self.warnings.append({"path": path, "message": message})
                if unreadable:
                    self.unreadable.append(path)

    def _file(self, item: LocalFile) -> None:
        node, st = item.node, item.stat
        self.files += 1
        if st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                node.update(hardlink=first[0], size=st.st_size, content=first[1])
                self.tree.add(node)
                return
        ids = self.cache.lookup(item.path, st, self.writer.known) if self.cache else None
        if ids is not None:
            size = st.st_size
            self.bytes_from_cache += size
        else:
            ids, size, st = self._read(item)
            if ids is None:
                return
        node.update(size=size, content=ids)
        if st.st_nlink > 1:
            self.links[(st.st_dev, st.st_ino)] = (item.path, ids)
        if self.cache is not None and not node.get("changed_while_read"):
            self.cache.remember(item.path, st, ids)
        self.bytes_read += size
        self.tree.add(node)
        self.progress.on_file(item.path, size)

    def _stream(self, item: Stream) -> None:
        """Chunk a producer's output; its failure propagates, so no snapshot commits."""
        ids: list[bytes] = []
        size = 0
        with item.open() as handle:
            for chunk in self.chunker.chunks(handle):
                size += len(chunk)
                self.writer.submit(chunk, ids)
        self.tree.add(item.node)
        self.finish_stream(item, size, ids)

    def finish_stream(self, item: Stream, size: int, ids: list[bytes]) -> None:
        item.node.update(size=size, content=ids)
        self.files += 1
        self.bytes_read += size
        self.progress.on_file(item.node["name"], size)

    def _read(self, item: LocalFile) -> tuple[list[bytes] | None, int, os.stat_result]:
        """Read a file, retrying while it changes under us; never store it torn silently.

        The version read is the one the walk saw (``item.stat``) when the open file's stat
        after reading still matches it; otherwise the file is looked at again and re-read.
        """
        before = item.stat
        for attempt in range(READ_RETRIES):
            try:
                ids, size, after = self._read_once(item.path, before.st_size)
            except FileNotFoundError:
                self.warnings.append({"path": item.path, "message": "vanished; skipped"})
                return None, 0, before
            except OSError as exc:
                self.warnings.append(
                    {"path": item.path, "message": f"cannot read: {exc.strerror}; skipped"}
                )
                self.unreadable.append(item.path)
                return None, 0, before
            if _same_version(before, after) and size == after.st_size:
                return ids, size, after
            _take_metadata(item.node, after)
            if attempt == READ_RETRIES - 1:
                item.node["changed_while_read"] = True
                self.warnings.append(
                    {
                        "path": item.path,
                        "message": "changed while it was read, on every try; stored as read "
                        "and marked changed_while_read (back it up again when it is quiet)",
                    }
                )
                return ids, size, after
            before = after
        raise AssertionError("unreachable")

    def _read_once(self, path: str, expected: int) -> tuple[list[bytes], int, os.stat_result]:
        """Chunk and submit one file; returns its ids, bytes read and its stat afterwards."""
        ids: list[bytes] = []
        size = 0
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if expected < layout.CHUNK_MIN:
                data = _read_small(fd, expected)
                if data is not None:
                    if data:
                        self.writer.submit(data, ids)
                    return ids, len(data), os.fstat(fd)
                os.lseek(fd, 0, os.SEEK_SET)  # it grew past one chunk meanwhile: chunk it
            with os.fdopen(os.dup(fd), "rb", buffering=0) as handle:
                for chunk in self.chunker.chunks(handle):
                    size += len(chunk)
                    self.writer.submit(chunk, ids)
            return ids, size, os.fstat(fd)
        finally:
            os.close(fd)


def _read_small(fd: int, expected: int) -> bytes | None:
    """Read a file expected to be one chunk; None when it turns out larger."""
    parts: list[bytes] = []
    total = 0
    while True:
        block = os.read(fd, max(expected + 1 - total, 65536))
        if not block:
            return b"".join(parts) if len(parts) != 1 else parts[0]
        parts.append(block)
        total += len(block)
        if total > layout.CHUNK_MIN:
            return None


def _take_metadata(node: dict[str, Any], st: os.stat_result) -> None:
    node.update(
        mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns
    )


def _same_version(before: os.stat_result, after: os.stat_result) -> bool:
    def version(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    return version(before) == version(after)


@contextlib.contextmanager
def _announced(repo: Repository, after_commit: list[dict[str, str]]) -> Iterator[Lease]:
    """The backup's shared lease; once the body has committed, a failure to release it is a
    warning in ``after_commit``, never the backup's failure (the lease goes stale anyway)."""
    lease = Lease(repo.storage, "backup")
    lease.__enter__()
    try:
        yield lease
    except BaseException as exc:
        lease.__exit__(type(exc), exc, exc.__traceback__)
        raise
    try:
        lease.__exit__(None, None, None)
    except Exception as exc:
        after_commit.append(
            {"path": repo.storage.label, "message": f"its lease could not be released ({exc})"}
        )


def backup(
    repo: Repository,
    events: Iterable[Event],
    *,
    source: str,
    source_type: str,
    paths: list[str],
    now: datetime,
    tags: list[str] | None = None,
    cache: FilesCache | None = None,
    progress: Progress | None = None,
    workers: int = 2,
    streams: int = 1,
    extra: dict[str, Any] | None = None,
) -> BackupResult:
    """Store ``events`` as one snapshot; ``extra`` (source-specific header fields, such as
    a dump's point in time) is read after the events are consumed, so a source may fill
    it in as it ends. Up to ``streams`` concurrent ``Stream`` events are chunked at once.

    A ``cache`` is consulted and told what was read; the caller commits it once this
    returns (the snapshot is committed by then, so a cache that cannot be written is only
    a warning)."""
    started = time.monotonic()
    after_commit: list[dict[str, str]] = []
    with _announced(repo, after_commit) as lease:
        # After the lease: either prune sees this backup, or this backup sees its marks.
        condemned = frozenset(repo.condemned())
        repo.reload_index(avoid=condemned)
        writer = BlobWriter(repo, workers=workers, skip_packs=condemned)
        run = _Run(
            repo,
            writer,
            TreeBuilder(writer),
            cache,
            progress or Progress(),
            Chunker(repo.writer_key.chunker_seed),
        )
        if streams > 1:
            run.fan_in = StreamFanIn(
                writer, repo.writer_key.chunker_seed, streams, run.finish_stream
            )
        try:
            run.consume(events)
            root = run.tree.finish()
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        if cache is not None and (problem := cache.problem()):
            run.warnings.append({"path": str(cache.path), "message": problem})
        # Read last, for the seq: as close to the commit as can be; only headers this host
        # has not seen (usually none): the others are in what it remembers.
        seen = repo.seen_before
        previous = repo.snapshots(skip=seen.ids)
        run.warnings.extend(_clock_behind(previous, seen, source, now))
        snapshot = Snapshot(
            source=source,
            source_type=source_type,
            time=now,
            host=socket.gethostname(),
            tree=root,
            blobs=b"".join(sorted(run.tree.referenced)),
            tags=sorted(tags or []),
            paths=paths,
            summary={
                "files": run.files,
                "dirs": run.dirs,
                "bytes": run.bytes_read,
                "bytes_from_cache": run.bytes_from_cache,
                "bytes_new": writer.stats.bytes_new,
                "bytes_stored": writer.stats.bytes_stored,
                "blobs_new": writer.stats.blobs_new,
                "packs_new": writer.stats.packs,
                "warnings": len(run.warnings),
                "unreadable": len(run.unreadable),
                "seconds": round(time.monotonic() - started, 3),
            },
            extra=dict(extra or {}),
            seq=next_sequence(previous, seen.floor),
        )
        lease.ensure_live(NOT_COMMITTED)  # a prune may have deleted packs it reuses
        repo.save_snapshot(snapshot)
    for warning in after_commit:
        warning["message"] = f"snapshot {snapshot.short_id} is committed, but {warning['message']}"
    return BackupResult(snapshot, run.warnings + after_commit, run.unreadable, previous)


def _clock_behind(
    previous: list[Snapshot], seen: SeenBefore, source: str, now: datetime
) -> list[dict[str, str]]:
    """A warning when ``now`` is earlier than the newest snapshot of ``source`` says."""
    mine: list[Snapshot | Stamp] = [s for s in previous if s.source == source]
    if source in seen.newest:
        mine.append(seen.newest[source])
    if not mine:
        return []
    newest = max(mine, key=written_order)
    if newest.time <= now:
        return []
    return [
        {
            "path": "clock",
            "message": (
                f"this host's clock ({clock.iso(now)}) is behind the newest snapshot of source "
                f"{source} ({newest.id[:12]}, dated {clock.iso(newest.time)}): check the clocks "
                "of this host and of the one that wrote it (NTP). `latest` still means the "
                "snapshot written last, this one"
            ),
        }
    ]
