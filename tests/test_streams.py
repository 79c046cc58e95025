"""Concurrent streams: the engine chunks several producers at once (``engine.streams``).

Producers here are our own seam (a ``Stream`` event), so these are unit tests: a real
repository on disk, real chunking, sealing and restore; fake sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Site
from test_concurrency import _repo

from emberkeep import clock
from emberkeep.engine.backup import backup as engine_backup
from emberkeep.engine.events import Enter, Event, Leave, Stream, bytes_stream, made_node
from emberkeep.engine.restore import Restorer

MiB = 1024 * 1024


class Producer:
    """A stream of seeded random bytes; halfway it may wait at a barrier (every producer
    half-read before any goes on) or for an event; it may fail at ``fail_at``."""

    def __init__(
        self,
        seed: int,
        size: int,
        barrier: threading.Barrier | None = None,
        fail_at: int = -1,
        halfway: threading.Event | None = None,
    ) -> None:
        self.data = random.Random(seed).randbytes(size)
        self.barrier = barrier
        self.fail_at = fail_at
        self.halfway = halfway
        self.failed = threading.Event()
        self.pos = 0
        self.exited_with: BaseException | str | None = "open"

    def readinto(self, buf: Any) -> int:
        half = len(self.data) // 2
        if self.barrier is not None and self.pos >= half:
            self.barrier.wait()
            self.barrier = None
        if self.halfway is not None and self.pos >= half:
            assert self.halfway.wait(20)
            self.halfway = None
        if 0 <= self.fail_at <= self.pos:
            self.failed.set()
            raise OSError("the producer broke")
        end = len(self.data) if self.pos >= half else half
        n = min(len(buf), end - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n

    @contextlib.contextmanager
    def open(self) -> Iterator[Any]:
        try:
            yield self
        except BaseException as exc:
            self.exited_with = exc
            raise
        self.exited_with = None


def _node(name: str, kind: str = "file") -> dict[str, Any]:
    return made_node(name, kind) | {"mtime_ns": 0}  # the same tree from the same streams


def _events(producers: dict[str, Producer], *, concurrent: bool) -> Iterator[Event]:
    yield Enter(_node("db", "dir"))
    for name, producer in producers.items():
        yield bytes_stream(_node(f"{name}.meta"), name.encode(), concurrent=concurrent)
        yield Stream(_node(f"{name}.bin"), producer.open, concurrent=concurrent)
    yield Leave()
    yield bytes_stream(_node("record.json"), b"{}")


def _backup(site: Site, producers: dict[str, Producer], *, streams: int, concurrent: bool) -> Any:
    return engine_backup(
        _repo(site),
        _events(producers, concurrent=concurrent),
        source="db",
        source_type="mongodb",
        paths=["db"],
        now=clock.now(),
        streams=streams,
    )


def _init(site: Site) -> None:
    site.keygen()
    site.write_config([site.root])  # a files source the config needs; not backed up here
    site.run("init")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_streams_are_chunked_at_once_and_restore_in_tree_order(site: Site, tmp_path: Path) -> None:
    _init(site)
    barrier = threading.Barrier(3, timeout=20)
    producers = {
        f"c{i}": Producer(i, size, barrier)
        for i, size in enumerate((9 * MiB, 3 * MiB + 17, 12 * MiB))
    }
    result = _backup(site, producers, streams=3, concurrent=True)  # would hang alone

    dest = tmp_path / "out"
    repo = _repo(site, read=True)
    Restorer(repo, dest).restore(result.snapshot)
    names = sorted(os.listdir(dest / "db"))
    assert names == sorted(f"{n}.{ext}" for n in producers for ext in ("bin", "meta"))
    for name, producer in producers.items():
        assert _sha((dest / "db" / f"{name}.bin").read_bytes()) == _sha(producer.data)
        assert (dest / "db" / f"{name}.meta").read_bytes() == name.encode()
        assert producer.exited_with is None
    assert result.snapshot.summary["files"] == 7
    assert (
        result.snapshot.summary["bytes"] == sum(len(p.data) for p in producers.values()) + 2 * 3 + 2
    )


def test_the_same_streams_make_the_same_snapshot_tree_either_way(site: Site) -> None:
    _init(site)
    sizes = (5 * MiB, 2 * MiB, 7 * MiB, MiB // 3)
    one = _backup(site, {f"c{i}": Producer(i, s) for i, s in enumerate(sizes)}, streams=1,
                  concurrent=False)  # fmt: skip
    four = _backup(site, {f"c{i}": Producer(i, s) for i, s in enumerate(sizes)}, streams=4,
                   concurrent=True)  # fmt: skip
    assert one.snapshot.tree == four.snapshot.tree  # same names, order, chunks, metadata
    assert four.snapshot.summary["blobs_new"] == 0


def test_a_failing_stream_stops_the_others_and_commits_nothing(site: Site) -> None:
    _init(site)
    repo = _repo(site)
    before = [s.id for s in repo.snapshots()]
    bad = Producer(2, 6 * MiB, fail_at=3 * MiB)
    producers = {"good": Producer(1, 60 * MiB, halfway=bad.failed), "bad": bad}
    with pytest.raises(OSError, match="the producer broke"):
        _backup(site, producers, streams=3, concurrent=True)
    assert [s.id for s in _repo(site).snapshots()] == before
    assert isinstance(producers["good"].exited_with, BaseException)  # cancelled, not finished
    assert producers["good"].pos < len(producers["good"].data)
