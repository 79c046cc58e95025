"""Prune: forget snapshots, then free the packs no snapshot needs.

Runs under the exclusive lease, in two phases so a concurrent backup never loses a blob:

1. *Condemn.* Packs with no referenced blob, and packs no index lists (leftovers of a
   crash, or a running backup's fresh packs), get a marker ``trash/<pack>`` holding the
   time. Backups that start later never deduplicate against condemned packs. A marked
   pack that a snapshot references again is pardoned (its marker removed).
2. *Delete.* A condemned pack is deleted once its mark is older than the grace period
   and no live backup lease began before the mark: such a backup may have read the
   index before the mark and may yet commit a snapshot that uses the pack.

Deletion order: a new index without the deleted packs, then the old index files, then
the packs, then their markers. A crash at any point leaves a repository check passes.

Packs that are partly used are kept whole; rewriting them needs an identity (the blobs
are encrypted to the recipients), and the bytes they hold are reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .. import clock
from ..errors import EmberkeepError, UsageError
from . import layout
from .index import PackRecord
from .lease import Lease, live_backups
from .repo import Repository
from .snapshot import Snapshot

# Decides which snapshots go: (snapshots of the target, now) -> {snapshot id: reason kept}
RetentionFn = Callable[[list[Snapshot], datetime], dict[str, str]]


@dataclass
class PruneResult:
    dry_run: bool
    decisions: list[dict[str, Any]] = field(default_factory=list)  # one per snapshot
    packs_condemned: int = 0
    packs_pardoned: int = 0
    packs_deleted: int = 0
    bytes_freed: int = 0
    packs_deferred: int = 0
    bytes_in_partly_used_packs: int = 0
    messages: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "snapshots": self.decisions,
            "packs_condemned": self.packs_condemned,
            "packs_pardoned": self.packs_pardoned,
            "packs_deleted": self.packs_deleted,
            "packs_deferred": self.packs_deferred,
            "bytes_freed": self.bytes_freed,
            "bytes_in_partly_used_packs": self.bytes_in_partly_used_packs,
            "messages": self.messages,
        }


def resolve_ids(snapshots: list[Snapshot], wanted: list[str]) -> set[str]:
    """Full ids for the given ids or unique prefixes."""
    chosen = set()
    for prefix in wanted:
        matches = [s.id for s in snapshots if s.id.startswith(prefix.lower())]
        if not matches:
            raise UsageError(
                f"no snapshot with id {prefix!r}; list them with `emberkeep snapshots`"
            )
        if len(matches) > 1:
            raise UsageError(f"snapshot id {prefix!r} is ambiguous; give more characters")
        chosen.add(matches[0])
    return chosen


def prune(
    repo: Repository,
    *,
    forget: list[str] | None = None,
    retention: RetentionFn | None = None,
    grace: timedelta = timedelta(hours=1),
    dry_run: bool = False,
) -> PruneResult:
    result = PruneResult(dry_run=dry_run)
    with Lease(repo.storage, "exclusive") as lease:
        for broken in lease.broken:
            result.messages.append(f"broke a stale lease: {broken.describe()}")
        repo.damage.clear()
        snapshots = repo.snapshots()
        repo.reload_index()
        if repo.damage:
            names = ", ".join(d.obj for d in repo.damage[:3])
            raise EmberkeepError(
                f"target {repo.storage.label}: prune refuses to run while objects are damaged "
                f"({names}): it could not know what they reference. Run `emberkeep check` "
                "and repair first"
            )
        now = clock.now()
        drop = resolve_ids(snapshots, forget or [])
        kept_by = (
            retention(snapshots, now)
            if retention
            else {s.id: "not named by --forget" for s in snapshots}
        )
        kept: list[Snapshot] = []
        for snapshot in snapshots:
            keep = snapshot.id not in drop and snapshot.id in kept_by
            if keep:
                kept.append(snapshot)
            result.decisions.append(_decision(snapshot, keep, kept_by, drop))
        if dry_run:
            return result
        kept_ids = {s.id for s in kept}
        for snapshot in snapshots:
            if snapshot.id not in kept_ids:
                repo.storage.delete(f"{layout.SNAPSHOTS}/{snapshot.id}")
        _collect(repo, kept, grace, now, result)
    return result


def _decision(
    snapshot: Snapshot, keep: bool, kept_by: dict[str, str], drop: set[str]
) -> dict[str, Any]:
    if keep:
        reason = kept_by[snapshot.id]
    else:
        reason = "--forget" if snapshot.id in drop else "no retention rule keeps it"
    return {
        "id": snapshot.id,
        "time": clock.iso(snapshot.time),
        "source": snapshot.source,
        "action": "keep" if keep else "remove",
        "reason": reason,
    }


def _collect(
    repo: Repository, kept: list[Snapshot], grace: timedelta, now: datetime, result: PruneResult
) -> None:
    referenced: set[bytes] = set()
    for snapshot in kept:
        referenced.update(snapshot.blob_ids())
    index = repo.index
    by_pack = index.blobs_by_pack()
    stored = {
        info.name: info.size
        for folder in (layout.DATA, layout.META)
        for info in repo.storage.list(f"{folder}/")
    }
    unused = set(stored) - set(index.packs)  # leftovers, or a running backup's new packs
    for name in index.packs:
        blobs = by_pack.get(name, [])
        used = sum(1 for blob_id, _ in blobs if blob_id in referenced)
        if used == 0:
            unused.add(name)
        elif used < len(blobs):
            result.bytes_in_partly_used_packs += sum(
                loc.length for blob_id, loc in blobs if blob_id not in referenced
            )

    marks = _read_marks(repo)
    for pack in set(marks) - unused:
        repo.storage.delete(f"{layout.TRASH}/{pack}")
        result.packs_pardoned += 1
        del marks[pack]
    for pack in sorted(unused - set(marks)):
        repo.storage.put(
            f"{layout.TRASH}/{pack}", json.dumps({"time": now.isoformat()}).encode(), overwrite=True
        )
        marks[pack] = now
        result.packs_condemned += 1

    backups = live_backups(repo.storage, now)
    deletable = []
    for pack, marked in sorted(marks.items()):
        if now - marked < grace or any(b.started <= marked for b in backups):
            result.packs_deferred += 1
            continue
        deletable.append(pack)
    if result.packs_deferred:
        why = (
            f"a backup is running ({backups[0].describe()})"
            if backups
            else f"the grace period ({grace}) has not passed"
        )
        result.messages.append(
            f"{result.packs_deferred} condemned packs wait: {why}; a later prune deletes them"
        )
    if deletable:
        _delete_packs(repo, set(deletable), stored, result)


def _read_marks(repo: Repository) -> dict[str, datetime]:
    marks = {}
    for pack, marker in repo.condemned().items():
        try:
            marks[pack] = clock.parse_time(json.loads(repo.storage.get(marker))["time"])
        except Exception:
            marks[pack] = clock.now()  # unreadable marker: start its grace period again
    return marks


def _delete_packs(
    repo: Repository, doomed: set[str], stored: dict[str, int], result: PruneResult
) -> None:
    old_files = repo.index_files()
    survivors: list[PackRecord] = []
    for name in old_files:
        for record in repo.read_index_file(name):
            if record.name not in doomed:
                survivors.append(record)
    new_file = repo.save_index(_dedupe(survivors)) if survivors else None
    for name in old_files:
        if name != new_file:
            repo.storage.delete(name)
    for pack in sorted(doomed):
        repo.storage.delete(pack)
        repo.storage.delete(f"{layout.TRASH}/{pack}")
        result.packs_deleted += 1
        result.bytes_freed += stored.get(pack, 0)
    repo.reload_index()


def _dedupe(records: list[PackRecord]) -> list[PackRecord]:
    seen: dict[str, PackRecord] = {}
    for record in records:
        seen.setdefault(record.name, record)
    return sorted(seen.values(), key=lambda r: r.name)
