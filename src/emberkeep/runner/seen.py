"""What this host has seen of each target's snapshots, so deletion and rollback are noticed.

Whoever runs a target can delete snapshots, or put back an older copy of the whole target,
and the repository cannot show it: what is left is consistent. So the host remembers, per
target (``state_dir/snapshots-seen.json``, mode 0600), the newest snapshot of each source it
wrote or saw there and how many snapshots the target held, and every backup, check, status
and prune compares the target with that (README, How it keeps data safe):

- the newest snapshot remembered for a source is gone (deleted, or the target rolled back to
  an older state; what is there now is older than remembered);
- the target holds fewer snapshots than remembered.

The memory only moves forward: a look raises it to what the target holds, and only this
host's own prune lowers it, by what it deletes (before deleting). So a finding is repeated
until it no longer holds: until a newer snapshot of that source is written (the next
backup, which reports the finding too) or the target holds as many snapshots again.
Snapshots that another host prunes look deleted to this one: if that is intended, deleting
the file accepts the targets as they are.

Every comparison and update runs under a lock of the host (``snapshots-seen.lock``)
around a fresh listing of the target's snapshot names, and prune holds it while it
deletes snapshots, so a look that overlaps a prune never counts deleted snapshots as held.
A damaged file is reported and rebuilt from what the targets hold now.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import clock
from ..errors import EmberkeepError
from ..fsutil import write_atomic
from ..repository import layout
from ..repository.prune import SnapshotGuard
from ..repository.snapshot import Snapshot, written_order

if TYPE_CHECKING:
    from ..repository.repo import Repository
    from .site import Site

FILE = "snapshots-seen.json"
LOCK = "snapshots-seen.lock"
FORMAT = 1
LOCK_WAIT = 60.0  # seconds a look waits for another process's (a prune deleting snapshots)


@dataclass(frozen=True)
class Newest:
    """The newest snapshot of a source that this host wrote or saw in a target."""

    id: str
    time: datetime
    seq: int | None

    @classmethod
    def of(cls, snapshot: Snapshot) -> Newest:
        return cls(snapshot.id, snapshot.time, snapshot.seq)

    def order(self) -> tuple[bool, int, datetime, str]:
        """Comparable with ``written_order`` of a snapshot."""
        return (self.seq is not None, self.seq or 0, self.time, self.id)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time.isoformat(), "seq": self.seq}


@dataclass
class TargetMemory:
    repository: str
    count: int = 0
    newest: dict[str, Newest] | None = None

    def sources(self) -> dict[str, Newest]:
        if self.newest is None:
            self.newest = {}
        return self.newest


class Memory:
    """The file's content: target name -> what was seen there (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.targets: dict[str, TargetMemory] = {}
        self.problem: str | None = None  # why the file was rebuilt, once

    @classmethod
    def load(cls, path: Path) -> Memory:
        memory = cls(path)
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return memory
        except (OSError, ValueError) as exc:
            memory.problem = _rebuilt(path, str(exc))
            return memory
        try:
            memory.targets = _parse(raw)
        except (ValueError, TypeError, KeyError, AttributeError, EmberkeepError) as exc:
            memory.problem = _rebuilt(path, f"{type(exc).__name__}: {exc}")
        return memory

    def entry(self, target: str, repository: str) -> TargetMemory | None:
        """What was seen in ``target``, if it was the same repository then."""
        found = self.targets.get(target)
        return found if found is not None and found.repository == repository else None

    def findings(
        self, target: str, repository: str, names: set[str], known: list[Snapshot]
    ) -> list[str]:
        """What is gone from ``target`` (holding snapshot ids ``names``) since it was seen."""
        seen = self.entry(target, repository)
        if seen is None:
            return []
        found = []
        for source, newest in sorted(seen.sources().items()):
            if newest.id in names:
                continue
            now_newest = _newest(known, names, source)
            there = (
                f"; the newest there now is {now_newest.short_id} from {clock.iso(now_newest.time)}"
                if now_newest is not None
                else "; no snapshot of it is left there"
            )
            found.append(
                f"target {target}: snapshot {newest.id[:12]} of source {source} (from "
                f"{clock.iso(newest.time)}), the newest this host wrote or saw there, is gone"
                f"{there}: deleted, or the target was rolled back to an older state. "
                f"{self._advice()}"
            )
        if len(names) < seen.count:
            found.append(
                f"target {target} holds {len(names)} snapshots, {seen.count - len(names)} "
                f"fewer than this host saw there ({seen.count}) less what its own prunes "
                f"deleted. {self._advice()}"
            )
        return found

    def _advice(self) -> str:
        return (
            "Only this host's prune should delete snapshots: check who can write to the "
            "target, and back up again. If another host pruned them, delete "
            f"{self.path} to accept the target as it is"
        )

    def observe(self, target: str, repository: str, names: set[str], known: list[Snapshot]) -> None:
        """Raise the memory of ``target`` to what it holds (never lower it)."""
        seen = self.entry(target, repository)
        if seen is None:
            seen = self.targets[target] = TargetMemory(repository)
        seen.count = max(seen.count, len(names))
        sources = seen.sources()
        for snapshot in known:
            if snapshot.id not in names:
                continue
            held = sources.get(snapshot.source)
            if held is None or written_order(snapshot) > held.order():
                sources[snapshot.source] = Newest.of(snapshot)

    def pruned(
        self,
        target: str,
        repository: str,
        names: set[str],
        deleted: list[Snapshot],
        remaining: list[Snapshot],
    ) -> None:
        """Lower the memory of ``target`` by what this host's prune is about to delete."""
        seen = self.entry(target, repository)
        if seen is None:
            return
        doomed = {s.id for s in deleted if s.id in names}
        seen.count = max(0, seen.count - len(doomed))
        sources = seen.sources()
        for source, newest in list(sources.items()):
            if newest.id not in doomed:
                continue
            left = [s for s in remaining if s.source == source]
            if left:
                sources[source] = Newest.of(max(left, key=written_order))
            else:
                del sources[source]

    def floor(self, repository: str) -> int:
        """The highest snapshot seq this host saw in any target of ``repository``."""
        return max(
            (
                newest.seq or 0
                for seen in self.targets.values()
                if seen.repository == repository
                for newest in seen.sources().values()
            ),
            default=0,
        )

    def save(self) -> None:
        data = {
            "format": FORMAT,
            "targets": {
                name: {
                    "repository": seen.repository,
                    "count": seen.count,
                    "newest": {s: n.to_json() for s, n in sorted(seen.sources().items())},
                }
                for name, seen in sorted(self.targets.items())
            },
        }
        write_atomic(self.path, json.dumps(data, indent=1).encode(), mode=0o600)


def _rebuilt(path: Path, why: str) -> str:
    return (
        f"{path} is damaged ({why}): rebuilt from what the targets hold now; a snapshot "
        "deleted before now cannot be noticed"
    )


def _parse(raw: Any) -> dict[str, TargetMemory]:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"not format {FORMAT}")
    targets = {}
    for name, seen in raw["targets"].items():
        count = seen["count"]
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"target {name}: count {count!r}")
        sources = {}
        for source, newest in seen["newest"].items():
            seq = newest.get("seq")
            if seq is not None and not isinstance(seq, int):
                raise ValueError(f"target {name}: seq {seq!r}")
            sources[str(source)] = Newest(
                str(newest["id"]), clock.parse_time(str(newest["time"])), seq
            )
        targets[str(name)] = TargetMemory(str(seen["repository"]), count, sources)
    return targets


def _newest(known: list[Snapshot], names: set[str], source: str) -> Snapshot | None:
    held = [s for s in known if s.source == source and s.id in names]
    return max(held, key=written_order) if held else None


@dataclass
class Findings:
    """What a look found: snapshots ``gone``, and ``notes`` on the memory itself."""

    gone: list[str]
    notes: list[str]

    def all(self) -> list[str]:
        return [*self.notes, *self.gone]


class Busy(EmberkeepError):
    """Another process holds the memory longer than a look waits."""


@contextlib.contextmanager
def _held(state_dir: Path) -> Iterator[Memory]:
    """The memory, loaded under the host's lock (held until the block ends)."""
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Busy(
                        f"another emberkeep process held {state_dir / LOCK} for over "
                        f"{LOCK_WAIT:.0f}s"
                    ) from None
                time.sleep(0.1)
        yield Memory.load(state_dir / FILE)
    finally:
        os.close(fd)


def _names(repo: Repository) -> set[str]:
    return {layout.leaf(name) for name in repo.snapshot_names()}


def _cannot(target: str, exc: Exception) -> str:
    return (
        f"target {target}: could not compare it with what this host saw there before ({exc}); "
        "a deleted snapshot would go unnoticed this time"
    )


def look(
    site: Site,
    target: str,
    repo: Repository,
    known: list[Snapshot] | None = None,
    wrote: Snapshot | None = None,
) -> Findings:
    """Compare ``target`` with the memory, then remember what it holds; the findings.

    ``known``: snapshot headers already read there (the source of "newest"); ``wrote``: a
    snapshot this run just committed, left out of the comparison (it was not there
    before). Never raises: a memory that cannot be used is itself a finding."""
    known = [*(known or []), *([wrote] if wrote else [])]
    repository = repo.writer_key.repo_id
    try:
        with _held(site.state_dir) as memory:
            names = _names(repo)
            before = names - {wrote.id} if wrote is not None else names
            found = memory.findings(target, repository, before, known)
            memory.observe(target, repository, names, known)
            memory.save()
    except (OSError, EmberkeepError) as exc:
        return Findings([], [_cannot(target, exc)])
    return Findings(found, [memory.problem] if memory.problem else [])


def sequence_floor(site: Site, repository: str) -> int:
    """The highest snapshot seq this host remembers in any target (0 when none)."""
    with contextlib.suppress(OSError):
        return Memory.load(site.state_dir / FILE).floor(repository)
    return 0


def prune_guard(site: Site, target: str, repo: Repository) -> SnapshotGuard:
    """For ``prune``: compare first, then lower the memory by what prune deletes, holding
    the lock until the deletions are done (module docstring)."""
    repository = repo.writer_key.repo_id

    @contextlib.contextmanager
    def guard(listed: list[Snapshot], doomed: list[Snapshot]) -> Iterator[list[str]]:
        try:
            held = _held(site.state_dir)
            memory = held.__enter__()
        except (OSError, EmberkeepError) as exc:
            yield [_cannot(target, exc)]
            return
        try:
            names = _names(repo)
            notes = memory.findings(target, repository, names, listed)
            memory.observe(target, repository, names, listed)
            gone = {s.id for s in doomed}
            remaining = [s for s in listed if s.id not in gone]
            memory.pruned(target, repository, names, doomed, remaining)
            memory.save()
            yield [*([memory.problem] if memory.problem else []), *notes]
        finally:
            held.__exit__(None, None, None)

    return guard
