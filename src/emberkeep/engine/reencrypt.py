"""Copy one snapshot into another target of the site, re-encrypted (README, "Keys and team
changes": "A team member leaves").

``replicate`` copies packs verbatim, and with them the key epochs they are wrapped to
(repository/replicate.py): whoever kept a copy of an old epoch key reads them in the
destination too. This copy instead decrypts each blob the destination lacks from the
source (so it needs an identity) and seals it into NEW packs, with fresh data keys
wrapped to the destination's own current epoch, through the backup's pack writer
(engine/writer.py). No epoch of the source is shared. Blob ids stay the same (every
target of a site shares the writer key), so the snapshot's trees and its header, copied
verbatim, reference the new packs as they did the old ones.

The commit order and the lease discipline are a backup's (engine/backup.py): a shared
backup lease in the destination, then prune's marks, then its index; the new packs, ONE
index file for them, then the snapshot header last, the commit point. As for a backup, a
blob is never taken from a pack prune has condemned there: it is stored again, in a new
pack. Nor is one taken from a pack wrapped to an epoch the destination has from the
source (copied there verbatim by a plain replicate, or written before epochs): a removed
member's old key may open it. An interrupted copy leaves only whole packs no index lists;
the next run seals the blobs again (fresh keys, new names) and prune removes the
leftovers.

Memory stays bounded: the blobs are read in runs (one ranged read each, at most
``repo.RUN_SPAN`` bytes, ``WINDOW`` runs in flight) and the writer holds a few packs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..crashpoints import crash_point
from ..errors import AlreadyExists, IntegrityError
from ..repository import epochs, layout
from ..repository.index import BlobIndex, Location
from ..repository.lease import Lease
from ..repository.replicate import CopyStats, copy_site_configs, read_verified
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from .parallel import ordered_map
from .writer import BlobWriter

READERS = 2  # runs read (and decrypted) at once from the source
WINDOW = 4  # runs in flight: at most WINDOW x RUN_SPAN bytes read ahead


def reencrypt_snapshot(
    src: Repository,
    dst: Repository,
    snapshot: Snapshot,
    *,
    on_pack: Callable[[str, int], None] = lambda name, size: None,
    on_total: Callable[[int], None] = lambda size: None,
) -> CopyStats:
    """Copy ``snapshot`` (held by ``src``, read with its identities) into ``dst``,
    re-encrypted. ``on_total`` is told the sealed bytes about to be read, ``on_pack`` each
    run of them once read. A snapshot ``dst`` already holds is left alone.

    The stats count the new packs and the bytes sealed into them; ``packs_reused`` is
    always 0 (no pack of ``src`` is used).
    """
    stats = CopyStats()
    copy_site_configs(src, dst)
    name = layout.snapshot_object(snapshot.id)
    if dst.storage.stat(name) is not None:
        return stats
    src.require_identity("`emberkeep replicate --re-encrypt`")
    header = read_verified(src, name)
    with Lease(dst.storage, "backup") as lease:
        # After the lease: either prune sees this copy, or this copy sees its marks.
        condemned = frozenset(dst.condemned())
        dst_index = dst.reload_index(avoid=condemned)
        writer = BlobWriter(dst, skip_packs=condemned | _foreign_packs(src, dst_index))
        try:
            _copy_blobs(src, writer, snapshot, on_pack, on_total)
            packs = writer.finish()
        except BaseException:
            writer.abort()
            raise
        stats.packs_copied = len(packs)
        stats.bytes_copied = writer.stats.bytes_stored
        crash_point("reencrypt-before-header")
        lease.ensure_live(
            f"snapshot {snapshot.short_id} was not copied into {dst.storage.label} (a prune "
            "may have deleted packs it reuses); earlier snapshots there are intact; run "
            f"`emberkeep replicate --target {dst.storage.label} --re-encrypt` again"
        )
        with contextlib.suppress(AlreadyExists):  # another copy committed it meanwhile
            dst.storage.put(name, header)
    return stats


def _foreign_packs(src: Repository, dst_index: BlobIndex) -> frozenset[str]:
    """The packs of ``dst`` wrapped to an epoch it shares with ``src`` (or to none): their
    blobs are not reused, since a key ``src``'s past recipients held may open them."""
    record = src.key_record()
    shared = {epochs.LEGACY, *(e.tag for e in (record.epochs if record else ()))}
    return frozenset(name for name, pack in dst_index.packs.items() if pack.epoch in shared)


def _copy_blobs(
    src: Repository,
    writer: BlobWriter,
    snapshot: Snapshot,
    on_pack: Callable[[str, int], None],
    on_total: Callable[[int], None],
) -> None:
    """Every blob of ``snapshot`` that ``writer``'s repository lacks, read from ``src`` in
    pack order (adjacent blobs in one ranged read) and handed to the writer."""
    wanted = [blob_id for blob_id in snapshot.blob_ids() if not writer.known(blob_id)]
    for blob_id in wanted:
        if src.index.find(blob_id) is None:
            raise IntegrityError(
                f"{src.storage.label}/{layout.snapshot_object(snapshot.id)}",
                f"references blob {blob_id.hex()[:16]}, which no index lists (data lost or "
                f"index damaged); run `emberkeep check --target {src.storage.label}`",
            )
    wanted.sort(key=_place_in(src))
    on_total(sum(_location(src, b).length for b in wanted))
    src.prepare_read(wanted)
    with ThreadPoolExecutor(READERS, thread_name_prefix="reencrypt") as pool:
        for run, plaintexts in ordered_map(pool, _reader(src), src.runs(wanted), WINDOW):
            for blob_id, data in zip(run, plaintexts, strict=True):
                writer.copy_blob(blob_id, _location(src, blob_id).type, data)
            first = _location(src, run[0])
            on_pack(first.pack, sum(_location(src, b).length for b in run))


def _reader(src: Repository) -> Callable[[list[bytes]], tuple[list[bytes], list[bytes]]]:
    def read(run: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        return run, src.read_run(run, kind=None)  # each blob's type is its index entry's

    return read


def _place_in(src: Repository) -> Callable[[bytes], tuple[str, int]]:
    def place(blob_id: bytes) -> tuple[str, int]:
        where = _location(src, blob_id)
        return where.pack, where.offset

    return place


def _location(src: Repository, blob_id: bytes) -> Location:
    location = src.index.find(blob_id)
    if location is None:  # checked in _copy_blobs; the index does not change meanwhile
        raise IntegrityError(f"blob {blob_id.hex()[:16]}", "is not in the index")
    return location
