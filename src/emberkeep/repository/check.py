"""Check a repository.

Structural (writer key only): every snapshot and index file authenticates, every blob a
snapshot references is indexed, every indexed pack exists with the size the index says.
With ``read_data`` (needs an identity): every selected pack is read whole, its SHA-256
matches its name, its table matches the index, and every blob decrypts to the content
its keyed id names. Packs that no index lists are leftovers of an interrupted backup:
reported, not errors; prune removes them.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import clock, statefile
from ..durations import format_duration
from ..errors import (
    EmberkeepError,
    IdentityRequired,
    IntegrityError,
    NotFound,
    UsageError,
    WrongIdentity,
)
from ..fsutil import write_atomic
from . import keycheck, layout
from .index import BlobIndex, Location
from .pack import PackTable, read_table, verify_pack_hash
from .recipients import RecipientsChanged
from .repo import Repository
from .snapshot import FUTURE_TOLERANCE, Snapshot, is_future


@dataclass
class CheckResult:
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # packs no index lists
    incomplete: list[str] = field(default_factory=list)  # temp files of interrupted writes
    notes: list[dict[str, str]] = field(default_factory=list)  # not damage: repairs made, …
    warnings: list[str] = field(default_factory=list)  # not damage, but worth a look

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, obj: str, message: str) -> None:
        self.errors.append({"object": obj, "error": message})

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "snapshots": self.snapshots,
            "packs": self.packs,
            "blobs": self.blobs,
            "packs_read": self.packs_read,
            "bytes_read": self.bytes_read,
            "errors": self.errors,
            "leftovers": self.leftovers,
            "incomplete_writes": self.incomplete,
            "notes": self.notes,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Subset:
    """``N%`` (least recently verified first) or ``n/t`` (the n-th of t fixed slices)."""

    percent: float | None = None
    slice_n: int = 0
    slice_t: int = 0

    @classmethod
    def parse(cls, spec: str) -> Subset:
        if m := re.fullmatch(r"(\d+(?:\.\d+)?)%", spec.strip()):
            percent = float(m.group(1))
            if 0 < percent <= 100:
                return cls(percent=percent)
        if m := re.fullmatch(r"(\d+)/(\d+)", spec.strip()):
            n, t = int(m.group(1)), int(m.group(2))
            if 1 <= n <= t:
                return cls(slice_n=n, slice_t=t)
        raise UsageError(
            f"{spec!r}: give a percentage like 10% or a slice like 2/7 (the 2nd of 7 parts)"
        )


class VerifiedLog:
    """When each pack was last read and verified, so partial checks cover every pack."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.problems: list[str] = []  # the file was damaged: reported by the caller
        self.times: dict[str, str] = {}
        if path is not None:
            self.times = statefile.load(
                path, statefile.typed(dict[str, str]), dict, self.problems.append,
                what="a log of verified packs (pack -> time)",
                then="every pack counts as never verified: the next partial checks read "
                "them from the start",
            )  # fmt: skip

    def choose(self, packs: list[str], subset: Subset) -> list[str]:
        if subset.slice_t:
            return [
                p
                for p in packs
                if int(layout.leaf(p)[:8], 16) % subset.slice_t == subset.slice_n - 1
            ]
        # rounded up, so N% a run reaches every pack within ceil(100 / N) runs
        count = max(1, math.ceil(len(packs) * (subset.percent or 100) / 100)) if packs else 0
        shuffled = random.sample(packs, len(packs))
        shuffled.sort(key=lambda p: self.times.get(p, ""))  # never verified first
        return shuffled[:count]

    def mark(self, pack: str, when: datetime) -> None:
        self.times[pack] = when.isoformat()

    def save(self, existing: set[str]) -> None:
        if self.path is None:
            return
        self.times = {p: t for p, t in self.times.items() if p in existing}
        write_atomic(self.path, json.dumps(self.times).encode(), mode=0o600)


def check(
    repo: Repository,
    *,
    read_data: bool = False,
    subset: Subset | None = None,
    verified: VerifiedLog | None = None,
    now: datetime | None = None,
    on_pack: Callable[[str, int], None] = lambda name, size: None,
    on_total: Callable[[int], None] = lambda size: None,
    workers: int = 2,
) -> CheckResult:
    result = CheckResult()
    _check_key_objects(repo, result)
    repo.damage.clear()
    index = repo.reload_index()
    snapshots = repo.snapshots()
    for damaged in repo.damage:
        result.error(damaged.obj, damaged.detail)
    result.snapshots = len(snapshots)

    stored = {
        info.name: info.size
        for folder in (layout.DATA, layout.META)
        for info in repo.storage.list(f"{folder}/")
    }
    by_pack = index.blobs_by_pack()
    result.packs = len(index.packs)
    result.blobs = len(index)
    _absent_packs(index, stored, result)
    for name, record in index.packs.items():
        size = stored.get(name)
        if size is not None and size != record.size:
            result.error(
                name, f"pack size is {size}, the index says {record.size} (truncated or damaged)"
            )
    result.leftovers = sorted(set(stored) - set(index.packs))
    result.incomplete = repo.storage.incomplete()

    for snapshot in snapshots:
        missing = sum(1 for blob_id in snapshot.blob_ids() if index.find(blob_id) is None)
        if missing:
            result.error(
                f"{layout.SNAPSHOTS}/{snapshot.id}",
                f"{missing} referenced blobs are not in any readable index "
                "(data lost or index damaged)",
            )
        _in_absent_packs(snapshot, index, stored, result)
    if now is not None:
        _future_dated(snapshots, now, result)

    if read_data:
        repo.require_identity("check --read-data")
        # a pack whose size is not the index's is damage (above), and is not read: a pack
        # the storage side grew to any size would else be fetched whole into memory
        candidates = sorted(p for p, r in index.packs.items() if stored.get(p) == r.size)
        log = verified or VerifiedLog(None)
        chosen = log.choose(candidates, subset) if subset else candidates
        on_total(sum(stored[name] for name in chosen))
        with ThreadPoolExecutor(workers, thread_name_prefix="check") as pool:
            futures = {
                name: pool.submit(_verify_pack, repo, name, by_pack.get(name, []), stored[name])
                for name in chosen
            }
            for name, future in futures.items():
                try:
                    size = future.result()
                except IntegrityError as exc:
                    result.error(exc.obj, exc.detail)
                    continue
                except (WrongIdentity, IdentityRequired):
                    raise  # not damage: the identity given cannot read this repository
                except EmberkeepError as exc:
                    result.error(name, str(exc))
                    continue
                result.packs_read += 1
                result.bytes_read += size
                if now is not None:
                    log.mark(name, now)
                on_pack(name, size)
        log.save(set(index.packs))
    return result


def _check_key_objects(repo: Repository, result: CheckResult) -> None:
    """``config``, ``keys/recipients`` and ``keys/writer.age``: what recover needs before
    any snapshot (``keycheck.py``). On a host holding the writer key, what is damaged is
    repaired from it, and said (as notes)."""
    findings = keycheck.inspect(repo)
    repaired: list[keycheck.Finding] = []
    if repo.writer_key_held and any(f.error for f in findings):
        # a damaged record, or one naming others: reported, nothing is written over it
        with contextlib.suppress(RecipientsChanged, IntegrityError):
            repaired = keycheck.upkeep(repo, None)
    for finding in findings:
        if finding.error:
            result.error(finding.obj, finding.message)
        else:
            result.notes.append({"object": finding.obj, "note": finding.message})
    for finding in repaired:
        result.notes.append({"object": finding.obj, "note": finding.message})


def _absent_packs(index: BlobIndex, stored: dict[str, int], result: CheckResult) -> None:
    """Each index file that lists packs the target does not hold: their entries are
    ignored (a copy in an existing pack is used), and the file is named (docs/design.md,
    "Check")."""
    for index_file, packs in sorted(index.files.items()):
        absent = [(pack, entries) for pack, entries in packs if pack not in stored]
        if not absent:
            continue
        entries = sum(count for _pack, count in absent)
        named = ", ".join(pack for pack, _count in absent[:3])
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        result.error(
            index_file,
            f"lists {len(absent)} packs that are not in the target ({named}{more}): its "
            f"{entries} blob entries in them are ignored. A pack was deleted, or the index "
            "file lists packs never written (forged by a host holding the writer key); "
            "`emberkeep prune` drops those entries",
        )


def _in_absent_packs(
    snapshot: Snapshot, index: BlobIndex, stored: dict[str, int], result: CheckResult
) -> None:
    """A snapshot some of whose blobs are indexed only in packs the target does not hold."""
    lost = 0
    for blob_id in snapshot.blob_ids():
        location = index.find(blob_id)
        if location is not None and location.pack not in stored:
            lost += 1
    if lost:
        result.error(
            f"{layout.SNAPSHOTS}/{snapshot.id}",
            f"{lost} referenced blobs lie only in packs that are not in the target (data "
            "lost); it cannot be restored whole",
        )


def _future_dated(snapshots: list[Snapshot], now: datetime, result: CheckResult) -> None:
    """Snapshots dated more than ``FUTURE_TOLERANCE`` after ``now`` (repository/snapshot.py)."""
    for snapshot in snapshots:
        if is_future(snapshot, now):
            result.warnings.append(
                f"snapshot {snapshot.short_id} of source {snapshot.source} is dated "
                f"{clock.iso(snapshot.time)}, more than {format_duration(FUTURE_TOLERANCE)} "
                "after now: it counts for no RPO and no retention rule until then. Check the "
                f"clock of host {snapshot.host}, which wrote it, and of this one"
            )


def _verify_pack(
    repo: Repository, name: str, blobs: list[tuple[bytes, Location]], size: int
) -> int:
    """Read one pack, at most the ``size`` the index gives it (one replaced since the
    listing by a larger object is read no further), and verify all of it."""
    try:
        data = repo.storage.get(name, 0, size)
    except NotFound as exc:
        raise IntegrityError(name, "pack is missing from the target") from exc
    if len(data) != size:
        raise IntegrityError(name, f"pack holds {len(data)} bytes, the index says {size}")
    verify_pack_hash(name, data)
    table = _read_table(repo, name, data)
    listed = {e.id: e for e in table.entries}
    for blob_id, location in blobs:
        entry = listed.get(blob_id)
        if entry is None or (entry.offset, entry.length) != (location.offset, location.length):
            raise IntegrityError(
                name, f"blob {blob_id.hex()[:16]}: the pack's table and the index disagree"
            )
        repo.open_blob(blob_id, location, data[location.offset : location.offset + location.length])
    return len(data)


def _read_table(repo: Repository, name: str, data: bytes) -> PackTable:
    """The pack's table, sealed with the index key of its writer generation (the likeliest
    is tried first; the current key's failure is the one reported)."""
    first, *others = repo.table_keys(name)
    try:
        return read_table(name, data, first)
    except IntegrityError as exc:
        for index_key in others:
            try:
                return read_table(name, data, index_key)
            except IntegrityError:
                continue
        raise exc from None
