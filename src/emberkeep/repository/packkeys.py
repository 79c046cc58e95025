"""Whether every pack's data key opens, reading only each pack's wrapped key (``keys check``).

A pack ends with its table frame and trailer (``pack.py``): ``u16(len(wrapped)) wrapped
sealed_table u32(len(frame)) "EKP1"``. With the size the index records, two ranged reads
per pack suffice, on every backend (file, sftp, s3 ``Range``): the 8-byte trailer, then the
first ``2 + HEAD`` bytes of the frame, which hold the wrapped key (about 200-400 bytes
wrapped to one epoch key, with age's random grease stanza; a third read fetches the rest of a
longer one, e.g. a pack from before epochs wrapped to many recipients). No blob is read.

Each pack's key is opened with the epoch key its index record names, so a pack whose key
is wrapped to another epoch than the index says is reported too. What this cannot tell:
a wrapped key that opens but is not the key the blobs were sealed with (only a writer
with the repository's epoch key could make one); ``check --read-data`` reads the blobs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyrage

from .. import keys
from ..errors import IntegrityError, WrongIdentity
from . import epochs
from .index import PackRecord
from .pack import read_wrapped_key
from .repo import Repository

WORKERS = 8  # packs read at once: each read is small, so round trips dominate


@dataclass
class EpochPacks:
    """One key epoch's packs: how many the index lists, how many opened."""

    tag: int
    number: int | None  # None: an epoch the record does not list
    packs: int = 0
    opened: int = 0


@dataclass(frozen=True)
class Failure:
    pack: str
    tag: int
    reason: str


@dataclass
class PackKeys:
    packs: int = 0
    bytes_read: int = 0
    reads: int = 0
    epochs: dict[int, EpochPacks] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def check(repo: Repository) -> PackKeys:
    """Every pack the index lists, its data key opened with the identity's epoch keys."""
    ring = repo.keyring()
    index = repo.reload_index()
    numbers = {e.tag: e.number for e in ring.record.epochs} if ring.record else {}
    by_tag = {t: pyrage.x25519.Identity.from_str(s) for t, s in ring.secrets.items()}
    result = PackKeys()
    packs = sorted(index.packs.values(), key=lambda p: p.name)
    for pack in packs:
        counted = result.epochs.setdefault(
            pack.epoch, EpochPacks(pack.epoch, numbers.get(pack.epoch))
        )
        counted.packs += 1
    result.packs = len(packs)

    def one(pack: PackRecord) -> tuple[PackRecord, str | None, int, int]:
        if pack.epoch == epochs.LEGACY and pack.name in ring.legacy:
            return pack, None, 0, 0  # its key is in keys/legacy.age, opened already
        if pack.epoch in by_tag and pack.epoch != epochs.LEGACY:
            identities = [by_tag[pack.epoch]]
        elif pack.epoch == epochs.LEGACY:
            identities = list(repo.identities)  # wrapped to the recipients of its day
        else:
            return pack, ring.why_not(pack.epoch), 0, 0
        try:
            wrapped, size, reads = read_wrapped_key(repo.storage, pack.name, pack.size)
        except IntegrityError as exc:
            return pack, exc.detail, 0, 0
        try:
            key = keys.unwrap(wrapped, identities, f"pack {pack.name}")
        except WrongIdentity:
            return pack, _not_opened(pack.epoch, numbers), size, reads
        except IntegrityError as exc:
            return pack, f"its wrapped data key is {exc.detail}", size, reads
        if len(key) != 32:
            return pack, "its wrapped data key is not a 32-byte key (forged)", size, reads
        return pack, None, size, reads

    with ThreadPoolExecutor(WORKERS, thread_name_prefix="keys-check") as pool:
        for pack, reason, size, reads in pool.map(one, packs):
            result.bytes_read += size
            result.reads += reads
            if reason is None:
                result.epochs[pack.epoch].opened += 1
            else:
                result.failures.append(Failure(pack.name, pack.epoch, reason))
    return result


def _not_opened(tag: int, numbers: dict[int, int]) -> str:
    if tag == epochs.LEGACY and tag not in numbers:
        return "its data key is not wrapped to the identity given (written before key epochs)"
    return (
        f"its data key is not wrapped to key epoch {numbers.get(tag, '?')}, which the index "
        "names (damaged, or wrapped to a key foreign to this repository)"
    )
