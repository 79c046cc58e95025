"""What this host has seen of each target's snapshots, so deletion and rollback are noticed.

Whoever runs a target can delete snapshots, or put back an older copy of the whole target,
and the repository cannot show it: what is left is consistent. So the host remembers, per
target (``state_dir/snapshots-seen.json``, mode 0600), every snapshot it wrote or saw there
(so also how many) and the newest of each source, and every backup,
check, status and prune compares the target with that (README, How it keeps data safe):
a remembered snapshot that is gone was deleted, and when it is the newest of its source,
what the target holds now is older than remembered (a rollback, or a deletion).

The memory only grows: a look adds what the target holds, and takes out only what this
host's own prune deletes (before deleting) and what another host's prune recorded as
deleted (``repository/forgotten.py``: a record sealed with the writer key, read only when
something is gone; an unsealed or altered one is reported and excuses nothing). So a
snapshot gone otherwise is reported at every look until the operator accepts it:
``emberkeep status --accept-missing`` lists what is gone and forgets it.

Every comparison and update runs under a lock of the host (``snapshots-seen.lock``)
around a fresh listing of the target's snapshot names, and prune holds it while it
deletes snapshots, so a look that overlaps a prune never remembers a snapshot the prune
is deleting. A damaged file is reported and rebuilt from what the targets hold now.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import clock, statefile
from .errors import EmberkeepError
from .fsutil import write_atomic
from .repository import forgotten, layout
from .repository.snapshot import SeenBefore, Snapshot, Stamp, written_order

if TYPE_CHECKING:
    from .repository.prune import SnapshotGuard
    from .repository.repo import Repository


class HasStateDir(Protocol):
    """What this module needs of a ``Site``: its state folder (the Site calls in here)."""

    @property
    def state_dir(self) -> Path: ...


FILE = "snapshots-seen.json"
LOCK = "snapshots-seen.lock"
FORMAT = 1
LOCK_WAIT = 60.0  # seconds a look waits for another process's (a prune deleting snapshots)


def _stamp_json(stamp: Stamp) -> dict[str, Any]:
    return {"id": stamp.id, "time": stamp.time.isoformat(), "seq": stamp.seq}


@dataclass
class TargetMemory:
    repository: str
    ids: set[str] = field(default_factory=set)  # every snapshot seen there
    newest: dict[str, Stamp] = field(default_factory=dict)  # per source


class Memory:
    """The file's content: target name -> what was seen there (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.targets: dict[str, TargetMemory] = {}
        self.problem: str | None = None  # why the file was rebuilt, once

    @classmethod
    def load(cls, path: Path, *, move_aside: bool = True) -> Memory:
        """The memory; a damaged file is reported once (``problem``), moved aside and
        rebuilt (``statefile``). ``move_aside`` False: a reader before the look that
        rebuilds it (a backup's ``seen_before``), which leaves it for that look to report."""
        memory = cls(path)

        def problem(message: str) -> None:
            memory.problem = message

        memory.targets = statefile.load(
            path, lambda data: _parse(json.loads(data)), dict, problem, move_aside=move_aside,
            what="a record of the snapshots seen in each target",
            then="rebuilt from what the targets hold now: a snapshot deleted before now "
            "cannot be noticed",
        )  # fmt: skip
        return memory

    def entry(self, target: str, repository: str) -> TargetMemory | None:
        """What was seen in ``target``, if it was the same repository then."""
        found = self.targets.get(target)
        return found if found is not None and found.repository == repository else None

    def findings(
        self, target: str, repository: str, names: set[str], known: list[Snapshot]
    ) -> list[str]:
        """What is gone from ``target`` (holding the snapshots ``names``) since it was seen."""
        seen = self.entry(target, repository)
        if seen is None:
            return []
        gone = seen.ids - names
        found = []
        for source, newest in sorted(seen.newest.items()):
            if newest.id not in gone:
                continue
            gone.discard(newest.id)
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
        if gone:
            listed = ", ".join(sorted(i[:12] for i in gone)[:5])
            found.append(
                f"target {target}: {len(gone)} {'more ' if found else ''}snapshots this host "
                f"wrote or saw there are gone ({listed}{', …' if len(gone) > 5 else ''}), "
                f"deleted by something other than this host's prune. {self._advice()}"
            )
        return found

    def _advice(self) -> str:
        return (
            "Check who can write to the target, and back up again; if they were deleted on "
            "purpose, `emberkeep status --accept-missing` accepts the target as it is"
        )

    def missing(self, target: str, repository: str, names: set[str]) -> set[str]:
        """The remembered snapshots of ``target`` that it does not hold now."""
        seen = self.entry(target, repository)
        return seen.ids - names if seen is not None else set()

    def forget(
        self, target: str, repository: str, ids: set[str], names: set[str], known: list[Snapshot]
    ) -> None:
        """Take ``ids`` (gone from ``target``, which holds ``names``) out of its memory; the
        newest of a source among them gives way to the newest of ``known`` held there."""
        seen = self.entry(target, repository)
        if seen is None or not ids:
            return
        seen.ids -= ids
        for source, newest in list(seen.newest.items()):
            if newest.id not in ids:
                continue
            left = _newest(known, names, source)
            if left is not None:
                seen.newest[source] = Stamp.of(left)
            else:
                del seen.newest[source]

    def observe(self, target: str, repository: str, names: set[str], known: list[Snapshot]) -> None:
        """Add the snapshots of ``known`` that ``target`` holds (``names``) to the memory,
        never taking anything out. Only snapshots whose headers were read are added: a
        backup skips the headers of those remembered, and takes its seq from the newest."""
        seen = self.entry(target, repository)
        if seen is None:
            seen = self.targets[target] = TargetMemory(repository)
        for snapshot in known:
            if snapshot.id not in names:
                continue
            seen.ids.add(snapshot.id)
            held = seen.newest.get(snapshot.source)
            if held is None or written_order(snapshot) > written_order(held):
                seen.newest[snapshot.source] = Stamp.of(snapshot)

    def pruned(
        self, target: str, repository: str, deleted: list[Snapshot], remaining: list[Snapshot]
    ) -> None:
        """Take what this host's prune is about to delete out of the memory of ``target``."""
        seen = self.entry(target, repository)
        if seen is None:
            return
        doomed = {s.id for s in deleted}
        seen.ids -= doomed
        for source, newest in list(seen.newest.items()):
            if newest.id not in doomed:
                continue
            left = [s for s in remaining if s.source == source]
            if left:
                seen.newest[source] = Stamp.of(max(left, key=written_order))
            else:
                del seen.newest[source]

    def floor(self, repository: str) -> int:
        """The highest snapshot seq this host saw in any target of ``repository``."""
        return max(
            (
                newest.seq or 0
                for seen in self.targets.values()
                if seen.repository == repository
                for newest in seen.newest.values()
            ),
            default=0,
        )

    def save(self) -> None:
        data = {
            "format": FORMAT,
            "targets": {
                name: {
                    "repository": seen.repository,
                    "snapshots": sorted(seen.ids),
                    "newest": {s: _stamp_json(n) for s, n in sorted(seen.newest.items())},
                }
                for name, seen in sorted(self.targets.items())
            },
        }
        write_atomic(self.path, json.dumps(data, indent=1).encode(), mode=0o600)


def _parse(raw: Any) -> dict[str, TargetMemory]:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"not format {FORMAT}")
    targets = {}
    for name, seen in raw["targets"].items():
        ids = seen["snapshots"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"target {name}: snapshots {str(ids)[:40]}")
        newest = {}
        for source, item in seen["newest"].items():
            seq = item.get("seq")
            if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
                raise ValueError(f"target {name}: seq {seq!r}")
            newest[str(source)] = Stamp(str(item["id"]), clock.parse_time(str(item["time"])), seq)
        targets[str(name)] = TargetMemory(str(seen["repository"]), set(ids), newest)
    return targets


def _newest(known: list[Snapshot], names: set[str], source: str) -> Snapshot | None:
    held = [s for s in known if s.source == source and s.id in names]
    return max(held, key=written_order) if held else None


@dataclass
class Findings:
    """What a look found: snapshots ``gone``, and ``notes`` on the memory itself (and on
    the target's records of pruned snapshots); ``accepted``: ids forgotten on request."""

    gone: list[str]
    notes: list[str]
    accepted: list[str] = field(default_factory=list)

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


def _excuse_pruned(
    memory: Memory, target: str, repo: Repository, names: set[str], known: list[Snapshot]
) -> list[str]:
    """Forget the missing snapshots that a verified prune record names (module docstring);
    notes on records that do not verify. Reads the records only when something is gone."""
    repository = repo.writer_key.repo_id
    missing = memory.missing(target, repository, names)
    if not missing:
        return []
    records = forgotten.load(repo)
    memory.forget(target, repository, missing & records.ids, names, known)
    return [
        f"target {target}: {name}: {why}; the snapshots it names are not taken as pruned"
        for name, why in records.refused
    ]


def look(
    site: HasStateDir,
    target: str,
    repo: Repository,
    known: list[Snapshot] | None = None,
    wrote: Snapshot | None = None,
    *,
    accept: bool = False,
) -> Findings:
    """Compare ``target`` with the memory, then remember what it holds; the findings.

    ``known``: snapshot headers already read there (what "newest" is learnt from), and
    ``wrote``, one this run just committed. ``accept``: the operator accepts the target as
    it is: what is gone is listed in ``accepted`` and forgotten. Never raises: a memory
    that cannot be used is itself a finding."""
    known = [*(known or []), *([wrote] if wrote else [])]
    repository = repo.writer_key.repo_id
    accepted: list[str] = []
    try:
        with _held(site.state_dir) as memory:
            names = _names(repo)
            notes = _excuse_pruned(memory, target, repo, names, known)
            found = memory.findings(target, repository, names, known)
            if accept:
                gone = memory.missing(target, repository, names)
                memory.forget(target, repository, gone, names, known)
                accepted, found = sorted(gone), []
            memory.observe(target, repository, names, known)
            memory.save()
    except (OSError, EmberkeepError) as exc:
        return Findings([], [_cannot(target, exc)])
    return Findings(found, [*([memory.problem] if memory.problem else []), *notes], accepted)


def seen_before(site: HasStateDir, target: str, repo: Repository) -> SeenBefore:
    """What a backup into ``target`` need not read again (repository/snapshot.py)."""
    memory = Memory.load(site.state_dir / FILE, move_aside=False)
    repository = repo.writer_key.repo_id
    seen = memory.entry(target, repository)
    if seen is None:
        return SeenBefore(floor=memory.floor(repository))
    return SeenBefore(frozenset(seen.ids), memory.floor(repository), dict(seen.newest))


def prune_guard(site: HasStateDir, target: str, repo: Repository) -> SnapshotGuard:
    """For ``prune``: compare first, then take out of the memory what prune deletes, holding
    the lock until the deletions are done (module docstring). A memory that cannot be
    updated stops prune before it deletes a snapshot: else the deletion would later look
    like someone else's."""
    repository = repo.writer_key.repo_id

    @contextlib.contextmanager
    def guard(listed: list[Snapshot], doomed: list[Snapshot]) -> Iterator[list[str]]:
        with _held(site.state_dir) as memory:
            names = _names(repo)
            notes = _excuse_pruned(memory, target, repo, names, listed)
            notes += memory.findings(target, repository, names, listed)
            memory.observe(target, repository, names, listed)
            gone = {s.id for s in doomed}
            remaining = [s for s in listed if s.id not in gone]
            memory.pruned(target, repository, doomed, remaining)
            memory.save()
            yield [*([memory.problem] if memory.problem else []), *notes]

    return guard
