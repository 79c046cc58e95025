"""Point-in-time recovery for a mongodb source: the oplog archiver and the restore to a point.

The archiver (``emberkeep oplog run``) seals the server's oplog into slices
(``sources/mongodb/pitr.py``), each one snapshot written through ``engine.backup``, so a
slice is encrypted, deduplicated, packed and committed like every backup: a slice is
there whole once its header is saved, and not at all before. Its state is the repository:
a restarted archiver (after a SIGKILL, say) goes on from the last committed slice, so it
neither skips nor repeats an entry. What it keeps on this host is only what ``status``
shows of the server (``pitr/<source>.json``: the newest entry seen, the lag), written
atomically after every look.

Where the chain cannot go on (the oplog no longer holds its last entry: it rolled over
while the archiver was stopped, or rolled back), the archiver says so (the journal row
fails, which alerts), and a new chain starts from a base backup taken for it, unless one
newer than the chain's end is still covered by the oplog. The first slice of the new
chain records the gap, which ``status`` reports.

A restore to a point (``restore --at TIME`` or ``--at-op T:I``) takes the newest base
snapshot whose point is at or before the one asked for and whose chain reaches it, and
replays the chain's entries after the base's point up to the one asked for, inclusive.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bson import Timestamp

from .. import clock
from ..config import MongoSource
from ..engine.backup import backup
from ..engine.events import bytes_stream, made_node
from ..engine.walk import walk_tree
from ..errors import EmberkeepError, UsageError
from ..fsutil import make_dirs, write_atomic
from ..monitor.pitr import (
    PitrStatus,
    archived_chains,
    base_points,
    covered_windows,
    op_time,
    pitr_of,
    state_path,
    status_of,
)
from ..repository.repo import Repository
from ..repository.snapshot import SeenBefore, Snapshot, Stamp
from ..site import Site
from ..sources.mongodb.optime import ts_from_json, ts_json
from ..sources.mongodb.pitr import (
    SLICE_TYPE,
    ChainBroken,
    OplogTail,
    PointExtension,
    SliceInfo,
    entry_digest,
    op_text,
    slice_source,
)
from ..sources.mongodb.record import OPLOG

MAX_SLICE_BYTES = 16 << 20  # a slice is sealed at this size whatever its age
POLL_SECONDS = 1.0
# Test seam (tests/test_pitr.py): "STEP:N" kills this process with SIGKILL the N-th time
# the archiver reaches STEP ("read", "sealing", "committed"): deterministic crash points.
KILL_ENV = "EMBERKEEP_TEST_PITR_KILL"


def mongo_source(site: Site, name: str | None) -> MongoSource:
    """The named mongodb source, or the only one."""
    if name:
        source = site.config.source(name)
        if not isinstance(source, MongoSource):
            raise UsageError(f"source {name} is of type {source.type}; PITR is for mongodb")
        return source
    found = [s for s in site.config.sources if isinstance(s, MongoSource)]
    if len(found) != 1:
        names = ", ".join(s.name for s in found) or "none"
        raise UsageError(f"name the mongodb source with --source (the config has: {names})")
    return found[0]


# -- the archiver ------------------------------------------------------------------------


@dataclass
class Cursor:
    """Where the chain being written stands."""

    chain: str
    n: int  # the next slice's number
    point: Timestamp  # the last entry committed (the next slice's start)
    digest: str | None
    gap: dict[str, Any] | None = None  # for the next slice, the first of a chain


@dataclass
class SliceOutcome:
    snapshot: str
    info: SliceInfo

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, **self.info.to_json()}


@dataclass
class Archiver:
    site: Site
    source: MongoSource
    on_slice: Callable[[SliceOutcome], None] = lambda outcome: None
    on_gap: Callable[[str], None] = lambda message: None
    sleep: Callable[[float], None] = time.sleep
    kills: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pitr = pitr_of(self.source)
        self.who = f"oplog archiver of source {self.source.name}"
        step, _, count = os.environ.get(KILL_ENV, "").partition(":")
        if step and count.isdigit():
            self.kill_at = (step, int(count))
        else:
            self.kill_at = ("", 0)

    def _reached(self, step: str) -> None:
        self.kills[step] = self.kills.get(step, 0) + 1
        if self.kill_at == (step, self.kills[step]):
            os.kill(os.getpid(), signal.SIGKILL)

    def run(self, *, once: bool = False, stop: Callable[[], bool] = lambda: False) -> int:
        """Archive until ``stop()`` (or, ``once``: what is settled now, one slice). Returns
        the number of slices sealed."""
        from ..sources.mongodb.connection import client_for

        target = self.site.config.targets[0].name
        repo = self.site.repository_to_write(target)
        sealed = 0
        with client_for(self.source.uri, self.who) as client:
            tail = OplogTail(client, self.who)
            cursor = self._resume(repo, tail)
            buffer: list[bytes] = []
            size = 0
            first: Timestamp | None = None  # the oldest entry waiting in ``buffer``
            last_seal = time.monotonic()
            read_from = cursor.point
            idle = self.pitr.max_lag_delta.total_seconds() / 2  # an empty slice this often
            while True:
                try:
                    tail.check_holds(cursor.point, cursor.digest)
                except ChainBroken as gap:
                    cursor = self._after_gap(repo, tail, cursor, gap)
                    buffer, size, first, read_from = [], 0, None, cursor.point
                polled = time.monotonic()
                settled = tail.settled()
                newest: Timestamp | None = None
                end = read_from
                for ts, raw in tail.entries_after(read_from):
                    newest = ts
                    if ts > settled:
                        break
                    buffer.append(raw)
                    size += len(raw)
                    end = read_from = ts
                    first = ts if first is None else first
                    if len(buffer) >= self.pitr.max_entries or size >= MAX_SLICE_BYTES:
                        cursor = self._seal(repo, cursor, buffer, end)
                        sealed += 1
                        buffer, size, first = [], 0, None
                        last_seal = time.monotonic()
                self._reached("read")
                now = time.monotonic()
                # due by the server's clock: `slice` after the oldest waiting entry was written
                waited = settled.time + 1 - first.time if first is not None else 0
                sealing = bool(buffer) and (once or waited >= self.pitr.slice_seconds)
                # nothing written up to the settled point: an empty slice says so, now and then
                empty = not buffer and settled > cursor.point and (once or now - last_seal >= idle)
                if sealing or empty:
                    cursor = self._seal(repo, cursor, buffer, end if buffer else settled)
                    sealed += 1
                    buffer, size, first, last_seal = [], 0, None, now
                read_from = max(read_from, cursor.point)
                self._remember(tail, newest, cursor)
                if once or stop():
                    return sealed
                self.sleep(max(0.0, polled + POLL_SECONDS - time.monotonic()))

    def _resume(self, repo: Repository, tail: OplogTail) -> Cursor:
        """The chain to go on with: the newest, if the oplog still holds its end; else a new
        one from a base (``_new_chain``)."""
        snapshots = repo.snapshots()
        chains_ = archived_chains(snapshots, self.source.name)
        if chains_:
            last = chains_[-1]
            newest = last.slices[-1]
            cursor = Cursor(last.base, newest.n + 1, last.end, newest.end_digest)
            try:
                tail.check_holds(cursor.point, cursor.digest)
                return cursor
            except ChainBroken as gap:
                return self._after_gap(repo, tail, cursor, gap)
        return self._new_chain(repo, tail, snapshots, after=None, gap=None)

    def _after_gap(
        self, repo: Repository, tail: OplogTail, cursor: Cursor, gap: ChainBroken
    ) -> Cursor:
        message = f"{gap}; a new chain starts from a new base backup"
        self._journal_gap(message)
        self.on_gap(message)
        found = {
            "chain": cursor.chain,
            "after": ts_json(cursor.point),
            "oldest": ts_json(gap.oldest),
            "found": clock.iso(clock.now()),
        }
        return self._new_chain(repo, tail, repo.snapshots(), after=cursor.point, gap=found)

    def _begin(self, repo: Repository, cursor: Cursor) -> Cursor:
        """A new chain's first slice, empty, at once: the chain (and a gap before it) is in
        the repository from now on, whatever happens next."""
        return self._seal(repo, cursor, [], cursor.point)

    def _new_chain(
        self,
        repo: Repository,
        tail: OplogTail,
        snapshots: list[Snapshot],
        *,
        after: Timestamp | None,
        gap: dict[str, Any] | None,
    ) -> Cursor:
        """From the newest base whose point the oplog still holds (newer than ``after``),
        else from a base backup taken now."""
        oldest = tail.oldest()
        for point, snap in reversed(base_points(snapshots, self.source.name)):
            if (after is None or point > after) and (oldest is None or oldest <= point):
                return self._begin(repo, Cursor(snap.id, 0, point, None, gap))
        from .backup import run_backup

        outcome = run_backup(self.site, self.source.name, tags=["pitr-base"])
        snap = outcome.result.snapshot
        base_point = ts_from_json(snap.extra.get("mongodb", {}).get("oplog_end"))
        if base_point is None:
            raise EmberkeepError(
                f"{self.who}: the base backup {snap.short_id} has no oplog point; "
                "point-in-time archiving needs a server with an oplog"
            )
        return self._begin(repo, Cursor(snap.id, 0, base_point, None, gap))

    def _journal_gap(self, message: str) -> None:
        from ..monitor.jobs import watch

        with watch(self.site, "oplog", source=self.source.name) as job:
            job.fail(message)

    def _seal(
        self, repo: Repository, cursor: Cursor, entries: list[bytes], end: Timestamp
    ) -> Cursor:
        """One slice, committed through the engine like any snapshot."""
        digest = entry_digest(entries[-1]) if entries else None
        info = SliceInfo(
            cursor.chain, cursor.n, cursor.point, end, len(entries), digest, cursor.gap
        )
        data = b"".join(entries)

        def events() -> Iterator[Any]:
            yield bytes_stream(made_node(OPLOG), data)
            self._reached("sealing")

        result = backup(
            repo,
            events(),
            source=slice_source(self.source.name),
            source_type=SLICE_TYPE,
            paths=[self.source.name],
            now=clock.now(),
            extra={"pitr": info.to_json()},
        )
        self._reached("committed")
        self._saw(repo, result.snapshot)
        info.id = result.snapshot.id
        self.on_slice(SliceOutcome(result.snapshot.id, info))
        return Cursor(cursor.chain, cursor.n + 1, end, digest)

    @staticmethod
    def _saw(repo: Repository, snapshot: Snapshot) -> None:
        """The slice just written is known to this host: the next seal reads no header it
        wrote itself (otherwise every seal would read all the slices of the run again)."""
        seen = repo.seen_before
        repo.seen_before = SeenBefore(
            ids=seen.ids | {snapshot.id},
            floor=max(seen.floor, snapshot.seq or 0),
            newest={**seen.newest, snapshot.source: Stamp.of(snapshot)},
        )

    def _remember(self, tail: OplogTail, newest: Timestamp | None, cursor: Cursor) -> None:
        """What status shows of the server: the newest entry, the lag, the oplog's window."""
        server_newest = max(newest or cursor.point, cursor.point)
        state = {
            "polled": clock.iso(clock.now()),
            "server_newest": ts_json(server_newest),
            "server_oldest": ts_json(tail.oldest()),
            "archived": ts_json(cursor.point),
            "lag_seconds": max(0, server_newest.time - cursor.point.time),
            "chain": cursor.chain,
        }
        path = state_path(self.site, self.source.name)
        make_dirs(path.parent)
        write_atomic(path, json.dumps(state).encode(), mode=0o600)


# -- restore to a point ------------------------------------------------------------------


@dataclass
class PointPlan:
    base: Snapshot
    base_point: Timestamp
    point: Timestamp
    extension: PointExtension


def plan_point(repo: Repository, source: str, point: Timestamp) -> PointPlan:
    """The base and slices that restore ``point`` exactly; a point no chain covers is
    refused with the covered windows printed."""
    snapshots = repo.snapshots()
    chains_ = archived_chains(snapshots, source)
    bases = base_points(snapshots, source)
    for chain in reversed(chains_):
        if not chain.start <= point <= chain.end:
            continue
        usable = [(p, s) for p, s in bases if chain.start <= p <= point]
        if not usable:
            continue
        base_point, base = usable[-1]
        wanted = [s for s in chain.slices if s.end > base_point and s.start < point]
        by_id = {s.id: s for s in snapshots}
        slices = [(info, _oplog_node(repo, by_id[info.id])) for info in wanted]
        return PointPlan(base, base_point, point, PointExtension(repo, slices, base_point, point))
    windows = covered_windows(snapshots, source)
    shown = "; ".join(
        f"{op_time(a)} ({op_text(a)}) to {op_time(b)} ({op_text(b)})" for a, b in windows
    )
    raise UsageError(
        f"{op_text(point)} ({op_time(point)}) is outside what the archived oplog of source "
        f"{source} covers ({shown or 'nothing yet: run `emberkeep oplog run`'}); give a point "
        "inside a window"
    )


def _oplog_node(repo: Repository, snap: Snapshot) -> Any:
    for path, node in walk_tree(repo, snap.tree):
        if path == f"/{OPLOG}":
            return node if node.get("content") else None
    return None


# -- status --------------------------------------------------------------------------------


def pitr_status(site: Site, source: MongoSource, repo: Repository | None = None) -> PitrStatus:
    """The archive's status (monitor/pitr.py) from the primary target, for ``oplog status``."""
    repo = repo or site.repository(site.config.targets[0].name)
    snapshots = repo.snapshots()
    return status_of(site, source, snapshots)
