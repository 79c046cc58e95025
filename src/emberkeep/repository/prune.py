"""Prune: forget snapshots, then free the packs no snapshot needs.

Runs under the exclusive lease, in two phases so a concurrent backup never loses a blob:

1. *Condemn.* Packs that hold no blob a kept snapshot needs, and packs no index lists
   (leftovers of a crash, or a running backup's fresh packs), get a marker
   ``trash/<pack>`` holding the time. Backups read the markers after announcing
   themselves with a lease, and never deduplicate against a condemned pack. A marked
   pack that a snapshot needs again is pardoned (its marker removed).
2. *Delete.* A condemned pack is deleted once its mark is older than the grace period
   and no live backup may still use it.

Why that is safe. Each marked pack has a time by which its marker was certainly
visible: for markers of earlier runs, the start of this run (only prune writes markers,
under the exclusive lease); for markers written now, a clock reading taken after writing
them. A backup whose lease began after that time read the markers and left the pack
alone. A backup whose lease began at or before it may have deduplicated against the
pack: if it still runs, its lease is live and the pack waits; if it has finished, its
snapshot exists, so snapshots are listed again after the leases and any snapshot that
appeared meanwhile pardons the packs it uses. (Leases and markers use one clock, so
hosts writing one repository need synchronised clocks, as NTP gives.)

A blob stored twice (a backup re-stores blobs of condemned packs) is counted once, in a
pack that is not condemned where one exists, so the fresh copy is kept.

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
from ..durations import format_duration
from ..errors import EmberkeepError
from ..storage.base import ObjectLocked, locked_until, until_text
from . import layout
from .index import PackRecord
from .lease import Lease, live_backups, read_leases
from .repo import Repository
from .snapshot import Snapshot, by_id_prefix

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
    incomplete_removed: int = 0
    bytes_in_partly_used_packs: int = 0
    messages: list[str] = field(default_factory=list)
    locked: dict[str, datetime | None] = field(default_factory=dict)  # Object Lock: name -> until

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
            "incomplete_writes_removed": self.incomplete_removed,
            "objects_locked": len(self.locked),
            "messages": self.messages,
        }


STOPPED = (
    "prune stopped before deleting anything more; what it did so far is safe, and the next "
    "prune goes on from there"
)


def resolve_ids(snapshots: list[Snapshot], wanted: list[str]) -> set[str]:
    """Full ids for the given ids or unique prefixes."""
    return {by_id_prefix(snapshots, prefix, "the repository").id for prefix in wanted}


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
        lease.ensure_live(STOPPED)
        for snapshot, decision in zip(snapshots, result.decisions, strict=True):
            name = f"{layout.SNAPSHOTS}/{snapshot.id}"
            if snapshot.id not in kept_ids and not _delete_unless_locked(repo, name, result):
                kept.append(snapshot)  # still there: what it references stays too
                decision["action"] = "keep"
                decision["reason"] = f"locked by S3 Object Lock {until_text(result.locked[name])}"
        _collect(repo, kept, {s.id for s in snapshots}, grace, result, lease)
        if result.locked:
            ends = [until for until in result.locked.values() if until is not None]
            result.messages.append(
                f"{len(result.locked)} objects are still under S3 Object Lock "
                f"{until_text(max(ends) if ends else None)}"
                f"{' at the latest' if len(ends) > 1 else ''}: prune left them (and what they "
                "reference) in place; a prune after that date removes what is no longer needed"
            )
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
    repo: Repository,
    kept: list[Snapshot],
    seen: set[str],
    grace: timedelta,
    result: PruneResult,
    lease: Lease,
) -> None:
    """Condemn what ``kept`` does not need and delete what is safe to delete (see above).

    Before deleting, the exclusive lease must still be live: a prune whose lease others may
    have seen stale could be racing another prune (repository/lease.py)."""
    run_start = clock.now()
    marks = _read_marks(repo)
    holders = _holders(repo)
    referenced = {blob_id for snapshot in kept for blob_id in snapshot.blob_ids()}
    needed = _needed_packs(holders, referenced, avoid=set(marks))
    stored = {
        info.name: info.size
        for folder in (layout.DATA, layout.META)
        for info in repo.storage.list(f"{folder}/")
    }
    packs = _pack_contents(holders)
    unused = (set(stored) | set(packs)) - needed
    for pack in needed:
        spare = [b for b in packs.get(pack, ()) if b not in referenced]
        result.bytes_in_partly_used_packs += _blob_bytes(repo, pack, spare)

    visible_since: dict[str, datetime] = {}
    for pack in sorted(set(marks) - unused):
        _pardon(repo, pack, marks, result)
    for pack in marks:
        visible_since[pack] = run_start
    fresh = sorted(unused - set(marks))
    for pack in fresh:
        marker = json.dumps({"time": run_start.isoformat()}).encode()
        repo.storage.put(f"{layout.TRASH}/{pack}", marker, overwrite=True)
        marks[pack] = run_start
        result.packs_condemned += 1
    marked_at = clock.now()
    visible_since.update({pack: marked_at for pack in fresh})

    now = clock.now()
    backups = live_backups(repo.storage, now)
    for pack in sorted(_needed_by_late_snapshots(repo, seen, set(marks))):
        _pardon(repo, pack, marks, result)

    deletable = []
    for pack, marked in sorted(marks.items()):
        waiting_for_grace = now - marked < grace
        may_be_in_use = any(b.started <= visible_since[pack] for b in backups)
        if waiting_for_grace or may_be_in_use:
            result.packs_deferred += 1
        else:
            deletable.append(pack)
    if result.packs_deferred:
        why = (
            f"a backup is running ({backups[0].describe()})"
            if backups
            else f"the grace period ({format_duration(grace)}) has not passed"
        )
        result.messages.append(
            f"{result.packs_deferred} condemned packs wait: {why}; a later prune deletes them"
        )
    if deletable or not backups:
        lease.ensure_live(STOPPED)
    if deletable:
        _delete_packs(repo, set(deletable), stored, result)
    if not backups:
        _remove_leftovers(repo, now, result)


def _holders(repo: Repository) -> dict[bytes, set[str]]:
    """Every pack holding each blob, from every index file (all copies, not one)."""
    holders: dict[bytes, set[str]] = {}
    for name in repo.index_files():
        for record in repo.read_index_file(name):
            for entry in record.entries:
                holders.setdefault(entry.id, set()).add(record.name)
    return holders


def _pack_contents(holders: dict[bytes, set[str]]) -> dict[str, list[bytes]]:
    contents: dict[str, list[bytes]] = {}
    for blob_id, packs in holders.items():
        for pack in packs:
            contents.setdefault(pack, []).append(blob_id)
    return contents


def _needed_packs(
    holders: dict[bytes, set[str]], referenced: set[bytes], avoid: set[str]
) -> set[str]:
    """One pack per referenced blob, preferring packs that are not condemned."""
    needed: set[str] = set()
    for blob_id in referenced:
        copies = holders.get(blob_id)
        if not copies:
            continue  # lost already; check reports it
        if copies & needed:
            continue
        preferred = sorted(copies - avoid) or sorted(copies)
        needed.add(preferred[0])
    return needed


def _blob_bytes(repo: Repository, pack: str, blob_ids: list[bytes]) -> int:
    total = 0
    for blob_id in blob_ids:
        location = repo.index.find(blob_id)
        if location is not None and location.pack == pack:
            total += location.length
    return total


def _needed_by_late_snapshots(repo: Repository, seen: set[str], marked: set[str]) -> set[str]:
    """Marked packs holding blobs of snapshots committed since this prune listed them."""
    late = [name for name in repo.snapshot_names() if layout.leaf(name) not in seen]
    if not late:
        return set()
    wanted: set[bytes] = set()
    for name in late:
        wanted.update(repo.load_snapshot(name).blob_ids())
    holders = _holders(repo)  # again: the late backup wrote an index file of its own
    return {pack for blob_id in wanted for pack in holders.get(blob_id, ()) if pack in marked}


def _pardon(repo: Repository, pack: str, marks: dict[str, datetime], result: PruneResult) -> None:
    repo.storage.delete(f"{layout.TRASH}/{pack}")
    del marks[pack]
    result.packs_pardoned += 1


def _remove_leftovers(repo: Repository, now: datetime, result: PruneResult) -> None:
    """With no backup running: interrupted writes' temp files and stale leases go.

    The temp files are listed before the leases are looked at again: a backup's lease is
    visible before it writes any temp file, so a temp file listed while no lease is live
    belongs to a run that is gone. Temp files under ``locks/`` are left alone: one may be
    the lease a backup is writing this very moment, not yet visible.
    """
    unfinished = [n for n in repo.storage.incomplete() if not n.startswith(f"{layout.LOCKS}/")]
    if live_backups(repo.storage, now):
        return
    for name in unfinished:
        repo.storage.delete(name)
        result.incomplete_removed += 1
    for lease in read_leases(repo.storage):
        if lease.kind == "backup" and lease.is_stale(now):
            repo.storage.delete(lease.name)
            result.messages.append(f"removed a stale lease: {lease.describe()}")


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
    """Delete ``doomed`` packs and rewrite the index without them.

    Objects under S3 Object Lock cannot be deleted before their retention ends: a locked pack
    is kept (still indexed, still condemned: a later prune deletes it), and so is every pack a
    locked index file lists, so no index entry ever names a deleted pack. Locked index files
    are left as they are, not folded into the new one again at every prune.
    """
    old_files = repo.index_files()
    held = {name for name in [*old_files, *sorted(doomed)] if _still_locked(repo, name, result)}
    doomed = doomed - held
    records = {name: repo.read_index_file(name) for name in old_files}
    for name in old_files:
        if name in held:
            doomed -= {record.name for record in records[name]}
    survivors = [
        record
        for name in old_files
        if name not in held
        for record in records[name]
        if record.name not in doomed
    ]
    new_file = repo.save_index(_dedupe(survivors)) if survivors else None
    for name in old_files:
        if name != new_file and name not in held and not _delete_unless_locked(repo, name, result):
            doomed -= {record.name for record in records[name]}  # refused: it still lists them
    for pack in sorted(doomed):
        if not _delete_unless_locked(repo, pack, result):
            continue  # unindexed now, as if deleted; its marker stays for a later prune
        repo.storage.delete(f"{layout.TRASH}/{pack}")
        result.packs_deleted += 1
        result.bytes_freed += stored.get(pack, 0)
    repo.reload_index()


def _still_locked(repo: Repository, name: str, result: PruneResult) -> bool:
    """Whether the target says ``name`` is under Object Lock (recorded in ``result``)."""
    until = locked_until(repo.storage, name)
    if until is not None:
        result.locked[name] = until
    return until is not None


def _delete_unless_locked(repo: Repository, name: str, result: PruneResult) -> bool:
    """Delete ``name``; False, recorded in ``result``, when the server refuses: it is locked."""
    try:
        repo.storage.delete(name)
    except ObjectLocked as exc:
        result.locked[name] = exc.until
        return False
    return True


def _dedupe(records: list[PackRecord]) -> list[PackRecord]:
    seen: dict[str, PackRecord] = {}
    for record in records:
        seen.setdefault(record.name, record)
    return sorted(seen.values(), key=lambda r: r.name)
