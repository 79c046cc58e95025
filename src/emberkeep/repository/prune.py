"""Prune: forget snapshots, then free the packs no snapshot needs.

Runs under the exclusive lease, in two phases so a concurrent backup never loses a blob:

1. *Condemn.* Packs that hold no blob a kept snapshot needs, and packs no index lists
   (leftovers of a crash, or a running backup's fresh packs), get a marker
   ``trash/<pack>`` holding the time. Backups read the markers after announcing
   themselves with a lease, and never deduplicate against a condemned pack. A marked
   pack that a snapshot needs again is pardoned (its marker removed).
2. *Delete.* A condemned pack is deleted once its mark is older than the grace period
   and no live backup may still use it.

Why that is safe. Each marked pack has a moment by which its marker was certainly
visible: for markers of earlier runs, when this run listed them (only prune writes markers,
under the exclusive lease); for markers written now, when they were written. Right after
each of those moments prune lists the live backup leases. A backup whose lease is not in
that list took it later, then read the markers, and left the pack alone. A backup whose
lease is in it may have deduplicated against the pack: if it still runs, its lease is live
and the pack waits; if it has finished, its snapshot exists, so snapshots are listed again
after the leases and any snapshot that appeared meanwhile pardons the packs it uses. No
clock of one host is compared with another's: leases are judged as repository/lease.py
says, and a lease is known by its name.

Only packs that exist count. An index entry naming a pack that is not in the target (a
deleted pack, or an index file listing packs never written) holds nothing: a blob is kept
by a copy in an existing pack, and the entries of absent packs are condemned like unused
packs, so a later prune rewrites the index without them. While a kept snapshot references
a blob that lies in no existing pack (its pack or index file deleted or damaged), prune
deletes nothing at all: the packs that blob may still lie in would look unused.

A blob stored twice (a backup re-stores blobs of condemned packs) is counted once, in a
pack that is not condemned where one exists, so the fresh copy is kept.

Deletion order: a new index without the deleted packs, then the old index files, then
the packs, then their markers. A crash at any point leaves a repository check passes.
Packs that are partly used are kept whole; rewriting them needs an identity (the blobs
are encrypted to the recipients), and the bytes they hold are reported.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .. import clock
from ..durations import format_duration
from ..errors import EmberkeepError
from ..storage.base import ObjectLocked, locked_until, until_text
from . import epochs, forgotten, layout
from . import recipients as recipient_set
from .index import PackRecord
from .lease import Lease, LeaseWatch, abandoned_writes, live_backups, read_leases
from .repo import Repository
from .snapshot import FUTURE_TOLERANCE, Snapshot, by_id_prefix, is_future

# Decides which snapshots go: (snapshots of the target, now) -> {snapshot id: reason kept}
RetentionFn = Callable[[list[Snapshot], datetime], dict[str, str]]
# Around the deletion of snapshots: (snapshots listed, those to delete) -> a context held
# while they are deleted, giving notes for the result (the host's memory, seen.py)
SnapshotGuard = Callable[[list[Snapshot], list[Snapshot]], AbstractContextManager[list[str]]]


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
    forgotten_record: str | None = None  # the record of the snapshots deleted (forgotten.py)
    records_expired: int = 0

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
            "forgotten_record": self.forgotten_record,
            "forgotten_records_expired": self.records_expired,
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
    watch: LeaseWatch | None = None,
    guard: SnapshotGuard | None = None,
) -> PruneResult:
    """Remove what ``retention`` does not keep (and ``forget``), then free unused packs.

    ``watch`` judges other processes' leases (repository/lease.py); the runner gives one
    kept in the state dir, and a ``guard`` for the deletion of snapshots."""
    result = PruneResult(dry_run=dry_run)
    with Lease(repo.storage, "exclusive", watch) as lease:
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
        _note_future(snapshots, now, result)
        holders = _holders(repo)
        _refuse_if_unrestorable(repo, kept, holders, _stored_packs(repo))
        if dry_run:
            return result
        kept_ids = {s.id for s in kept}
        lease.ensure_live(STOPPED)
        doomed = [s for s in snapshots if s.id not in kept_ids]
        with guard(snapshots, doomed) if guard else contextlib.nullcontext([]) as notes:
            result.messages.extend(notes)
            # before any deletion: other hosts then accept these as gone (forgotten.py)
            result.forgotten_record = forgotten.record(repo, [s.id for s in doomed], now)
            for snapshot, decision in zip(snapshots, result.decisions, strict=True):
                name = f"{layout.SNAPSHOTS}/{snapshot.id}"
                if snapshot.id not in kept_ids and not _delete_unless_locked(repo, name, result):
                    kept.append(snapshot)  # still there: what it references stays too
                    decision["action"] = "keep"
                    decision["reason"] = (
                        f"locked by S3 Object Lock {until_text(result.locked[name])}"
                    )
        _collect(repo, kept, holders, {s.id for s in snapshots}, grace, result, lease)
        _expire_records(repo, now, result)
        lease.ensure_live(STOPPED)
        _drop_epochs(repo, result)
        if result.locked:
            ends = [until for until in result.locked.values() if until is not None]
            result.messages.append(
                f"{len(result.locked)} objects are still under S3 Object Lock "
                f"{until_text(max(ends) if ends else None)}"
                f"{' at the latest' if len(ends) > 1 else ''}: prune left them (and what they "
                "reference) in place; a prune after that date removes what is no longer needed"
            )
    return result


def _expire_records(repo: Repository, now: datetime, result: PruneResult) -> None:
    """Delete the records of deleted snapshots older than ``forgotten.KEEP``; name the
    ones that do not verify (planted by the storage side, or damaged), kept as they are."""
    try:
        records = forgotten.load(repo)
        result.records_expired = len(forgotten.expire(repo, records, now))
    except EmberkeepError as exc:  # the prune is done; a later one expires them
        result.messages.append(f"records of pruned snapshots not expired this time: {exc}")
        return
    for name, why in records.refused:
        result.messages.append(
            f"target {repo.storage.label}: {name}: {why}; it excuses no deleted snapshot"
        )


def _drop_epochs(repo: Repository, result: PruneResult) -> None:
    """Forget the key epochs no indexed pack uses any more (README, "Keys and team changes"); the
    current one always stays. The record goes first (the commit point), then the files:
    a file left behind by a crash is listed by nothing and removed by the next prune."""
    repo.forget_keys()
    record = repo.key_record()
    if record is None or not record.epochs:
        return
    used = {pack.epoch for pack in repo.reload_index().packs.values()}
    used.add(record.current or 0)
    gone = [e for e in record.epochs if e.tag not in used]
    if gone:
        kept = tuple(e for e in record.epochs if e.tag in used)
        recipient_set.write(repo.storage, repo.writer_key, replace(record, epochs=kept))
        repo.forget_keys()
        numbers = ", ".join(str(e.number) for e in gone)
        result.messages.append(
            f"key epoch {numbers} dropped: no pack left needs it"
            if len(gone) == 1
            else f"key epochs {numbers} dropped: no pack left needs them"
        )
    listed = {epochs.epoch_object(e.tag) for e in record.epochs if e.tag in used}
    for info in repo.storage.list("keys/"):
        if info.name.startswith(epochs.EPOCH_PREFIX) and info.name not in listed:
            _delete_unless_locked(repo, info.name, result)
    if epochs.LEGACY not in used and repo.storage.stat(epochs.LEGACY_TABLE) is not None:
        _delete_unless_locked(repo, epochs.LEGACY_TABLE, result)


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
        "seq": snapshot.seq,
        "source": snapshot.source,
        "action": "keep" if keep else "remove",
        "reason": reason,
        "tags": list(snapshot.tags),
    }


def _note_future(snapshots: list[Snapshot], now: datetime, result: PruneResult) -> None:
    """Say so when snapshots are dated in the future: retention counts them for nothing."""
    future = [s for s in snapshots if is_future(s, now)]
    if future:
        result.messages.append(
            f"{len(future)} snapshots are dated more than {format_duration(FUTURE_TOLERANCE)} "
            f"after now (the first {future[0].short_id}, {clock.iso(future[0].time)}): they "
            "are kept and count for no retention rule until then; check the clock of the host "
            f"that wrote them ({future[0].host}) and of this one"
        )


def _stored_packs(repo: Repository) -> dict[str, int]:
    """Every data and meta pack in the target: name -> size."""
    return {
        info.name: info.size
        for folder in (layout.DATA, layout.META)
        for info in repo.storage.list(f"{folder}/")
    }


def _refuse_if_unrestorable(
    repo: Repository, kept: list[Snapshot], holders: dict[bytes, set[str]], stored: dict[str, int]
) -> None:
    """Raise while a kept snapshot references a blob in no existing pack (module docstring)."""
    broken = []
    for snapshot in kept:
        lost = sum(1 for b in snapshot.blob_ids() if not holders.get(b, set()) & stored.keys())
        if lost:
            broken.append((snapshot, lost))
    if not broken:
        return
    snapshot, lost = broken[0]
    others = f" (and {len(broken) - 1} more snapshots)" if len(broken) > 1 else ""
    raise EmberkeepError(
        f"target {repo.storage.label}: prune deletes nothing: snapshot {snapshot.short_id} "
        f"(source {snapshot.source}, {clock.iso(snapshot.time)}){others} references {lost} "
        "blobs that lie in no pack in the target (a pack or an index file was deleted or "
        "damaged), and packs holding them could look unused. Run `emberkeep check` to see what "
        "is lost; put the missing objects back if a copy exists, or remove the snapshot with "
        f"`emberkeep prune --forget {snapshot.short_id}`"
    )


def _collect(
    repo: Repository,
    kept: list[Snapshot],
    holders: dict[bytes, set[str]],
    seen: set[str],
    grace: timedelta,
    result: PruneResult,
    lease: Lease,
) -> None:
    """Condemn what ``kept`` does not need and delete what is safe to delete (see above).

    ``holders``: every pack each blob is indexed in. Before deleting, the exclusive lease
    must still be live: a prune whose lease others may have seen stale could be racing
    another prune (repository/lease.py)."""
    run_start = clock.now()
    marks = _read_marks(repo)
    # Leases live once the old marks were visible: a backup not among them read the marks.
    before = {b.name for b in live_backups(repo.storage, lease.watch)}
    stored = _stored_packs(repo)
    present = {blob: packs & stored.keys() for blob, packs in holders.items()}
    referenced = {blob_id for snapshot in kept for blob_id in snapshot.blob_ids()}
    needed = _needed_packs(present, referenced, avoid=set(marks))
    packs = _pack_contents(holders)  # absent packs too: their entries go with the index
    unused = (set(stored) | set(packs)) - needed
    for pack in needed:
        spare = [b for b in packs.get(pack, ()) if b not in referenced]
        result.bytes_in_partly_used_packs += _blob_bytes(repo, pack, spare)

    for pack in sorted(set(marks) - unused):
        _pardon(repo, pack, marks, result)
    old_marks = set(marks)
    fresh = sorted(unused - set(marks))
    for pack in fresh:
        marker = json.dumps({"time": run_start.isoformat()}).encode()
        repo.storage.put(f"{layout.TRASH}/{pack}", marker, overwrite=True)
        marks[pack] = run_start
        result.packs_condemned += 1

    now = clock.now()
    backups = live_backups(repo.storage, lease.watch)  # listed after the fresh marks
    for pack in sorted(_needed_by_late_snapshots(repo, seen, set(marks))):
        _pardon(repo, pack, marks, result)

    early = [b for b in backups if b.name in before]
    deletable = []
    for pack, marked in sorted(marks.items()):
        waiting_for_grace = now - marked < grace
        may_be_in_use = bool(early) if pack in old_marks else bool(backups)
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
        _remove_leftovers(repo, lease.watch, result)


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


def _remove_leftovers(repo: Repository, watch: LeaseWatch, result: PruneResult) -> None:
    """With no backup running: interrupted writes' temp files and stale leases go.

    The temp files are listed before the leases are looked at again: a backup's lease is
    visible before it writes any temp file, so a temp file listed while no lease is live
    belongs to a run that is gone. Temp files under ``locks/`` are not covered by that
    argument (one may be the lease a backup is writing this very moment, not yet visible):
    each is judged by the lease it holds (``lease.abandoned_writes``).
    """
    unfinished: list[str] = []
    in_locks: list[str] = []
    for name in repo.storage.incomplete():
        (in_locks if name.startswith(f"{layout.LOCKS}/") else unfinished).append(name)
    if live_backups(repo.storage, watch):
        return
    for name in unfinished + abandoned_writes(repo.storage, in_locks, watch):
        repo.storage.delete(name)
        result.incomplete_removed += 1
    for lease in read_leases(repo.storage):
        if lease.kind == "backup" and watch.is_stale(repo.storage.label, lease):
            repo.storage.delete(lease.name)
            result.messages.append(f"removed a stale lease: {lease.describe()}")
    watch.save()


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
