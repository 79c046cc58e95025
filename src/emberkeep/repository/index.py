"""The index: which pack holds each blob.

Index files are immutable and sealed with the index key, so a writer deduplicates
without an identity. In memory the whole index is a handful of flat arrays sorted by
blob id (52 bytes per blob), not one Python object per blob.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, islice
from operator import eq, itemgetter

import zstandard

from .. import crypto
from ..errors import IntegrityError
from .layout import INDEX_INFLATION, PACK_FOLDER, index_object
from .pack import ENTRY, BlobEntry

INDEX_AAD = b"emberkeep index"
PACK_HEADER = struct.Struct("<32sBQI")  # pack sha256, kind, pack size, blob count
# Format 2 adds each pack's key epoch (README, "Keys and team changes"); its own associated data
# keeps a file of one format from being read as the other. Format-1 files are epoch 0.
INDEX_AAD_V2 = b"emberkeep index v2"
PACK_HEADER_V2 = struct.Struct("<32sBQII")  # … blob count, key epoch
ID = 32
BUCKETS = 1 << 16


@dataclass(frozen=True)
class PackRecord:
    name: str  # object name, e.g. data/ab/ab12…
    kind: int
    size: int
    entries: tuple[BlobEntry, ...]
    epoch: int = 0  # the key epoch its data key is wrapped to (0: written before epochs)


@dataclass(frozen=True)
class Location:
    pack: str
    type: int
    offset: int
    length: int
    raw_length: int


def encode_index(packs: Iterable[PackRecord], index_key: bytes) -> tuple[str, bytes]:
    """Serialize pack records into one sealed index object; returns (name, bytes)."""
    parts = []
    for pack in packs:
        digest = bytes.fromhex(pack.name.rsplit("/", 1)[-1])
        parts.append(
            PACK_HEADER_V2.pack(digest, pack.kind, pack.size, len(pack.entries), pack.epoch)
        )
        parts.extend(
            ENTRY.pack(e.id, e.type, e.offset, e.length, e.raw_length) for e in pack.entries
        )
    plain = zstandard.ZstdCompressor(level=3).compress(b"".join(parts))
    sealed = crypto.encrypt(index_key, INDEX_AAD_V2, plain)
    return index_object(hashlib.sha256(sealed).hexdigest()), sealed


def decode_index(name: str, sealed: bytes, index_key: bytes) -> Iterator[PackRecord]:
    from .layout import pack_object

    if hashlib.sha256(sealed).hexdigest() != name.rsplit("/", 1)[-1]:
        raise IntegrityError(name, "content does not match its name (SHA-256 differs): damaged")
    header = PACK_HEADER_V2
    try:
        compressed = crypto.decrypt(index_key, INDEX_AAD_V2, sealed)
    except (crypto.InvalidTag, ValueError):
        header = PACK_HEADER  # written before key epochs
        try:
            compressed = crypto.decrypt(index_key, INDEX_AAD, sealed)
        except (crypto.InvalidTag, ValueError) as exc:
            raise IntegrityError(
                name, "index file fails authentication (damaged or wrong key)"
            ) from exc
    try:  # bounded: see layout.INDEX_INFLATION
        plain = crypto.inflate(compressed, INDEX_INFLATION * len(compressed) + (1 << 20))
    except crypto.TooLarge as exc:
        raise IntegrityError(name, f"index file {exc} (forged)") from exc
    pos = 0
    while pos < len(plain):
        if pos + header.size > len(plain):
            raise IntegrityError(name, "index file ends inside a pack record (forged)")
        digest, kind, size, count, *rest = header.unpack_from(plain, pos)
        epoch = rest[0] if rest else 0
        pos += header.size
        if kind not in PACK_FOLDER or pos + count * ENTRY.size > len(plain):
            raise IntegrityError(name, "index file holds a malformed pack record (forged)")
        entries = tuple(
            BlobEntry(*ENTRY.unpack_from(plain, pos + i * ENTRY.size)) for i in range(count)
        )
        pos += count * ENTRY.size
        yield PackRecord(pack_object(kind, digest.hex()), kind, size, entries, epoch)


class _SortedIds:
    """A read-only sequence view of concatenated 32-byte ids, for bisect."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw) // ID

    def __getitem__(self, i: int) -> bytes:
        return self.raw[i * ID : (i + 1) * ID]


def _bucket_table(ids: bytes) -> array[int]:
    """``table[p]`` is the first position whose id starts with the 16-bit prefix ``p``.

    Ids are uniformly random, so a lookup bisects only its own small bucket.
    """
    counts = array("I", bytes(4 * (BUCKETS + 1)))
    for position in range(0, len(ids), ID):
        counts[int.from_bytes(ids[position : position + 2], "big") + 1] += 1
    return array("I", accumulate(counts)) if ids else counts


def _copy(
    copies: list[tuple[bytes, int, BlobEntry]], names: list[str], exists: Callable[[str], bool]
) -> tuple[bytes, int, BlobEntry]:
    """Of one blob's index rows (preferred first), the first whose pack exists."""
    for row in copies:
        if exists(names[row[1]]):
            return row
    return copies[0]  # in no existing pack: lost, whichever is named


def _one_copy_each(
    rows: list[tuple[bytes, int, BlobEntry]], names: list[str], exists: Callable[[str], bool]
) -> list[tuple[bytes, int, BlobEntry]]:
    """Of rows sorted by id, one per blob (``_copy`` where a blob is in several packs)."""
    ids = [row[0] for row in rows]
    if not any(map(eq, ids, islice(ids, 1, None))):
        return rows  # the usual case, told by one pass in C: every blob in one pack
    chosen = []
    i = 0
    while i < len(rows):
        end = i + 1
        while end < len(rows) and rows[end][0] == rows[i][0]:
            end += 1
        chosen.append(rows[i] if end == i + 1 else _copy(rows[i:end], names, exists))
        i = end
    return chosen


class BlobIndex:
    """Blob id -> location, over every loaded index file plus the blobs of this session."""

    def __init__(self) -> None:
        self.packs: dict[str, PackRecord] = {}
        self.pack_sources: dict[str, str] = {}  # pack name -> index file that lists it
        self.files: dict[str, list[tuple[str, int]]] = {}  # index file -> (pack, entries)
        self._pack_names: list[str] = []
        self._ids = _SortedIds(b"")
        self._pack = array("I")
        self._offset = array("I")
        self._length = array("I")
        self._raw = array("I")
        self._type = array("B")
        self._session: dict[bytes, Location] = {}
        self._buckets = _bucket_table(b"")

    @classmethod
    def build(
        cls,
        records: Iterable[tuple[str, PackRecord]],
        avoid: frozenset[str] = frozenset(),
        exists: Callable[[str], bool] = lambda pack: True,
    ) -> BlobIndex:
        """Index every record. Of a blob stored in several packs, take a copy in a pack that
        ``exists`` (asked only then: an entry naming an absent pack is ignored where another
        copy exists), preferring one outside ``avoid``."""
        index = cls()
        rows: list[tuple[bytes, int, BlobEntry]] = []
        for index_file, pack in records:
            index.files.setdefault(index_file, []).append((pack.name, len(pack.entries)))
            if pack.name in index.packs:
                continue
            index.packs[pack.name] = pack
            index.pack_sources[pack.name] = index_file
            number = len(index._pack_names)
            index._pack_names.append(pack.name)
            rows.extend((e.id, number, e) for e in pack.entries)
        names = index._pack_names
        if avoid:
            rows.sort(key=lambda row: (row[0], names[row[1]] in avoid))
        else:  # the same order (the sort is stable), without a key tuple per blob
            rows.sort(key=itemgetter(0))
        chosen = _one_copy_each(rows, names, exists)
        index._ids = _SortedIds(b"".join([row[0] for row in chosen]))
        index._pack = array("I", [row[1] for row in chosen])
        index._offset = array("I", [row[2].offset for row in chosen])
        index._length = array("I", [row[2].length for row in chosen])
        index._raw = array("I", [row[2].raw_length for row in chosen])
        index._type = array("B", [row[2].type for row in chosen])
        index._buckets = _bucket_table(index._ids.raw)
        # The pack records' entries were only needed to build the arrays.
        index.packs = {
            name: PackRecord(p.name, p.kind, p.size, (), p.epoch) for name, p in index.packs.items()
        }
        return index

    def __len__(self) -> int:
        return len(self._ids) + len(self._session)

    def find(self, blob_id: bytes) -> Location | None:
        found = self._session.get(blob_id)
        if found is not None:
            return found
        i = self._position(blob_id)
        if i < 0:
            return None
        return Location(
            self._pack_names[self._pack[i]],
            self._type[i],
            self._offset[i],
            self._length[i],
            self._raw[i],
        )

    def pack_of(self, blob_id: bytes) -> str | None:
        """The pack holding ``blob_id``: ``find``'s answer without building a Location, for
        the checks a no-change backup makes for every blob of every file."""
        found = self._session.get(blob_id)
        if found is not None:
            return found.pack
        i = self._position(blob_id)
        return None if i < 0 else self._pack_names[self._pack[i]]

    def _position(self, blob_id: bytes) -> int:
        """Where ``blob_id`` is in the loaded arrays, or -1."""
        bucket = int.from_bytes(blob_id[:2], "big")
        lo, hi = self._buckets[bucket], self._buckets[bucket + 1]
        i = bisect_left(self._ids, blob_id, lo, hi)
        return i if i < hi and self._ids[i] == blob_id else -1

    def __contains__(self, blob_id: bytes) -> bool:
        return self.find(blob_id) is not None

    def add_pack(self, pack: PackRecord) -> None:
        """Record a pack written in this session (already uploaded)."""
        self.packs[pack.name] = PackRecord(pack.name, pack.kind, pack.size, (), pack.epoch)
        for e in pack.entries:
            self._session[e.id] = Location(pack.name, e.type, e.offset, e.length, e.raw_length)

    def epochs_of(self, blob_ids: Iterable[bytes]) -> set[int]:
        """The key epochs (their tags) of the packs holding these blobs: what reading them
        needs (``keys list``, ``keys check``)."""
        tags = set()
        for blob_id in blob_ids:
            where = self.find(blob_id)
            pack = self.packs.get(where.pack) if where else None
            if pack is not None:
                tags.add(pack.epoch)
        return tags

    def all_ids(self) -> Iterator[bytes]:
        yield from (self._ids[i] for i in range(len(self._ids)))
        yield from self._session

    def blobs_by_pack(self) -> dict[str, list[tuple[bytes, Location]]]:
        """Every blob grouped by pack (for check and prune; one pass, not per lookup)."""
        grouped: dict[str, list[tuple[bytes, Location]]] = {}
        for blob_id in self.all_ids():
            location = self.find(blob_id)
            assert location is not None
            grouped.setdefault(location.pack, []).append((blob_id, location))
        return grouped
