"""Copy one snapshot from one repository of a site to another, verbatim.

Every target of a site shares one writer key, so objects need no re-encryption: packs,
index records and the snapshot header are valid in any of the site's repositories, and
their content-addressed names stay the same (the snapshot id too).

The copy follows a backup's commit order and lease discipline (engine/backup.py): a
shared backup lease in the destination first, then prune's marks, then the index; the
packs the destination lacks, then ONE index file for the packs its index does not list,
then the snapshot header last, the commit point. An interrupted copy leaves only whole
packs (puts are atomic) that no snapshot references; the next copy finds them by name and
does not send them again, and prune removes them if no copy ever completes.

Prune's marks. A backup never uses a blob in a condemned pack: it stores the blob again,
in a new pack with a new name. A copy cannot: a pack copied verbatim keeps its name, and
that name may be condemned in the destination (a ``copies = "monthly"`` target forgets
last month's snapshot, prune condemns its packs, and this month's snapshot needs some of
them again). Using such a pack, present or sent afresh, is safe when no prune is running
once this copy's lease is visible: any later prune sees the lease (it began before the
prune did, so every marked pack waits while it lives), and once the snapshot is committed
the prune pardons every pack it needs, as for a backup's late snapshot. A prune running
when the lease was taken may delete marked packs at any moment, so then a copy that needs
a condemned pack stops before it writes anything and asks to be run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ..errors import AlreadyExists, IntegrityError, LockedError, NotFound
from . import epochs, layout
from .index import BlobIndex, PackRecord
from .lease import DEFAULT_WATCH, EXCLUSIVE, Lease, read_leases
from .pack import verify_pack_hash
from .repo import Repository
from .snapshot import Snapshot

STAT_EACH_UP_TO = 32  # packs: more than this, and one listing costs fewer round trips
WORKERS = 2  # packs in flight at once (each held whole in memory while it is sent)


@dataclass
class CopyStats:
    packs_copied: int = 0
    packs_reused: int = 0  # already in the destination by name (an earlier, interrupted copy)
    bytes_copied: int = 0

    def add(self, other: CopyStats) -> None:
        self.packs_copied += other.packs_copied
        self.packs_reused += other.packs_reused
        self.bytes_copied += other.bytes_copied

    def to_json(self) -> dict[str, Any]:
        return {
            "packs_copied": self.packs_copied,
            "packs_reused": self.packs_reused,
            "bytes_copied": self.bytes_copied,
        }


def copy_snapshot(
    src: Repository,
    dst: Repository,
    snapshot: Snapshot,
    *,
    on_pack: Callable[[str, int], None] = lambda name, size: None,
    on_total: Callable[[int], None] = lambda size: None,
) -> CopyStats:
    """Copy ``snapshot`` (held by ``src``) into ``dst``, sending only what ``dst`` lacks.

    ``on_total`` is told the bytes about to be sent, ``on_pack`` each pack once sent. A
    snapshot ``dst`` already holds is left alone.
    """
    stats = CopyStats()
    copy_site_configs(src, dst)
    name = layout.snapshot_object(snapshot.id)
    if dst.storage.stat(name) is not None:
        return stats
    header = read_verified(src, name)
    with Lease(dst.storage, "backup") as lease:
        # After the lease: a prune that starts from now on sees it (module docstring).
        prune_running = _prune_running(dst)
        condemned = frozenset(dst.condemned())
        dst_index = dst.reload_index(avoid=condemned)
        needed = _packs_needed(src, dst_index, snapshot, condemned)
        if prune_running and needed & condemned:
            raise LockedError(
                f"target {dst.storage.label} is being pruned ({prune_running}) and snapshot "
                f"{snapshot.short_id} needs packs that prune has condemned there; run "
                "`emberkeep replicate` again when the prune has finished"
            )
        present = _present(dst, needed)
        missing = sorted(needed - present)
        stats.packs_reused = len(present)
        on_total(sum(src.index.packs[pack].size for pack in missing))
        unlisted = needed - set(dst_index.packs)
        _share_epochs(src, dst, unlisted)
        _send_packs(src, dst, missing, stats, on_pack)
        if unlisted:
            dst.save_index(_pack_records(src, unlisted))
        lease.ensure_live(  # a prune may have deleted packs this copy reuses
            f"snapshot {snapshot.short_id} was not copied into {dst.storage.label}; earlier "
            "snapshots there are intact; run `emberkeep replicate` again"
        )
        with contextlib.suppress(AlreadyExists):  # another copy committed it meanwhile
            dst.storage.put(name, header)
    return stats


def _share_epochs(src: Repository, dst: Repository, packs: set[str]) -> None:
    """The key epochs of ``packs`` (README, "Keys and team changes") into ``dst`` before the packs
    and their index records: a pack there is never without its epoch key."""
    record = src.key_record()
    if record is None or not record.epochs or not packs:
        return
    tags = {src.index.packs[pack].epoch for pack in packs}
    epochs.share(src.storage, record, dst.storage, dst.writer_key, tags)
    dst.forget_keys()


def copy_site_configs(src: Repository, dst: Repository) -> int:
    """The stored site configs ``dst`` lacks (small; ``recover`` reads them from any target)."""
    prefix = f"{layout.SITE_CONFIG}/"
    have = {info.name for info in dst.storage.list(prefix)}
    copied = 0
    for info in src.storage.list(prefix):
        if info.name not in have:
            with contextlib.suppress(AlreadyExists):
                dst.storage.put(info.name, src.storage.get(info.name))
                copied += 1
    return copied


def read_verified(src: Repository, name: str) -> bytes:
    """An object of ``src`` whose name is the SHA-256 of its bytes, checked before it spreads."""
    data = src.storage.get(name)
    if hashlib.sha256(data).hexdigest() != layout.leaf(name):
        raise IntegrityError(
            f"{src.storage.label}/{name}",
            "content does not match its name (damaged); run `emberkeep check` on that target",
        )
    return data


def _prune_running(dst: Repository) -> str | None:
    """Who holds ``dst``'s exclusive lease, if it may be live.

    Read after this copy's lease is visible. A prune that took its lease later would see
    this copy's and wait, but no clock is compared here: any prune not known to be gone
    counts (repository/lease.py).
    """
    for lease in read_leases(dst.storage):
        if lease.name == EXCLUSIVE and not DEFAULT_WATCH.is_stale(dst.storage.label, lease):
            return lease.describe()
    return None


def _packs_needed(
    src: Repository, dst_index: BlobIndex, snapshot: Snapshot, condemned: frozenset[str]
) -> set[str]:
    """The packs of ``src`` holding the blobs of ``snapshot`` that ``dst`` lacks.

    A blob counts as held only in a pack prune has not condemned (as for a backup).
    """
    needed: set[str] = set()
    for blob_id in snapshot.blob_ids():
        held = dst_index.find(blob_id)
        if held is not None and held.pack not in condemned:
            continue
        found = src.index.find(blob_id)
        if found is None:
            raise IntegrityError(
                f"{src.storage.label}/{layout.snapshot_object(snapshot.id)}",
                f"references blob {blob_id.hex()[:16]}, which no index lists (data lost or "
                f"index damaged); run `emberkeep check --target {src.storage.label}`",
            )
        needed.add(found.pack)
    return needed


def _present(dst: Repository, packs: set[str]) -> set[str]:
    """Which of ``packs`` ``dst`` already holds, whole (puts are atomic), by name."""
    if len(packs) <= STAT_EACH_UP_TO:
        return {pack for pack in packs if dst.storage.stat(pack) is not None}
    stored = {
        info.name
        for folder in (layout.DATA, layout.META)
        for info in dst.storage.list(f"{folder}/")
    }
    return packs & stored


def _send_packs(
    src: Repository,
    dst: Repository,
    packs: list[str],
    stats: CopyStats,
    on_pack: Callable[[str, int], None],
) -> None:
    """Copy ``packs`` verbatim, ``WORKERS`` at a time; the first failure stops the rest."""
    lock = threading.Lock()

    def send(pack: str) -> None:
        try:
            data = src.storage.get(pack)
        except NotFound as exc:
            raise IntegrityError(
                f"{src.storage.label}/{pack}",
                "pack is missing (listed in the index); run `emberkeep check` on that target",
            ) from exc
        verify_pack_hash(f"{src.storage.label}/{pack}", data)
        try:
            dst.storage.put(pack, data)
        except AlreadyExists:  # a concurrent copy sent the same bytes meanwhile
            with lock:
                stats.packs_reused += 1
            return
        with lock:
            stats.packs_copied += 1
            stats.bytes_copied += len(data)
        on_pack(pack, len(data))

    if not packs:
        return
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="copy") as pool:
        futures = [pool.submit(send, pack) for pack in packs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in done:
            failure = future.exception()
            if failure is not None:
                raise failure


def _pack_records(src: Repository, packs: Iterable[str]) -> list[PackRecord]:
    """The full index records of ``packs``, read from the ``src`` index files that list them."""
    wanted = set(packs)
    files = sorted({src.index.pack_sources[pack] for pack in wanted})
    records: dict[str, PackRecord] = {}
    for index_file in files:
        for record in src.read_index_file(index_file):
            if record.name in wanted:
                records.setdefault(record.name, record)
    return [records[pack] for pack in sorted(records)]
