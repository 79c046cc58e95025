"""Packs: many sealed blobs in one object, and a table at the end saying where each is.

```
pack   = blob* table_frame u32(len(table_frame)) "EKP1"
table_frame = u16(len(wrapped)) wrapped sealed_table
wrapped      = the pack's random data key, age-encrypted to the current key epoch
               (epochs.py; to every recipient in a pack from before epochs)
sealed_table = AES-GCM(index key, entries)   entries = (id, type, offset, length, raw)*
```
The writer forgets the data key once the pack is sealed: only an identity can read
the blobs again, while the table (sealed with the index key) lets a writer rebuild
the index without one.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

import pyrage

from .. import crypto
from ..errors import IntegrityError, NotFound
from ..storage.base import Storage
from .layout import pack_object

MAGIC = b"EKP1"
ENTRY = struct.Struct("<32sBIII")  # id, type, offset, length, raw length
TRAILER = struct.Struct("<I4s")
WRAPPED_HEAD = 2048  # bytes of the wrapped key read with its length (read_wrapped_key)
TABLE_AAD = b"emberkeep pack table"


def blob_aad(blob_id: bytes, blob_type: int) -> bytes:
    return blob_id + bytes([blob_type])


@dataclass(frozen=True)
class BlobEntry:
    id: bytes
    type: int
    offset: int
    length: int
    raw_length: int


@dataclass
class PackWriter:
    """Collects sealed blobs for one pack; ``finish`` returns the pack's parts and name.

    The pack is kept as a list of buffers (one per blob), written out with one gathered
    write, so filling a pack never copies or reallocates blob bytes.
    """

    kind: int
    data_key: bytes = field(default_factory=lambda: os.urandom(32))
    parts: list[bytes | bytearray] = field(default_factory=list)
    size: int = 0
    entries: list[BlobEntry] = field(default_factory=list)
    submitted: int = 0  # bytes promised to this pack by chunks still being sealed

    def add(
        self, blob_id: bytes, blob_type: int, sealed: bytes | bytearray, raw_length: int
    ) -> None:
        self.entries.append(BlobEntry(blob_id, blob_type, self.size, len(sealed), raw_length))
        self.parts.append(sealed)
        self.size += len(sealed)

    def seal(self, blob_id: bytes, blob_type: int, data: bytes | memoryview) -> bytearray:
        return crypto.seal(self.data_key, blob_aad(blob_id, blob_type), data)

    def finish(
        self, recipients: list[pyrage.x25519.Recipient], index_key: bytes
    ) -> tuple[str, list[bytes | bytearray], list[BlobEntry]]:
        wrapped = pyrage.encrypt(self.data_key, recipients)
        table = b"".join(
            ENTRY.pack(e.id, e.type, e.offset, e.length, e.raw_length) for e in self.entries
        )
        sealed_table = crypto.encrypt(index_key, TABLE_AAD, table)
        frame = struct.pack("<H", len(wrapped)) + wrapped + sealed_table
        self.parts.append(frame + TRAILER.pack(len(frame), MAGIC))
        self.size += len(self.parts[-1])
        self.data_key = b""  # forgotten: from here on only an identity reads this pack
        digest = hashlib.sha256()
        for part in self.parts:
            digest.update(part)
        return pack_object(self.kind, digest.hexdigest()), self.parts, self.entries


@dataclass(frozen=True)
class PackTable:
    wrapped_key: bytes
    entries: list[BlobEntry]


def read_table(name: str, tail: bytes, index_key: bytes) -> PackTable:
    """Parse the table from the end of a pack (``tail`` must hold at least the table frame)."""
    if len(tail) < TRAILER.size:
        raise IntegrityError(name, "pack is too short to hold its table")
    frame_len, magic = TRAILER.unpack(tail[-TRAILER.size :])
    if magic != MAGIC or frame_len + TRAILER.size > len(tail):
        raise IntegrityError(name, "pack trailer is damaged (bad magic or table length)")
    frame = tail[len(tail) - TRAILER.size - frame_len : -TRAILER.size]
    if len(frame) < 2:
        raise IntegrityError(name, "pack trailer is damaged (table too short)")
    (wrapped_len,) = struct.unpack_from("<H", frame)
    if 2 + wrapped_len > len(frame):
        raise IntegrityError(name, "pack trailer is damaged (wrapped key length)")
    wrapped = frame[2 : 2 + wrapped_len]
    try:
        table = crypto.decrypt(index_key, TABLE_AAD, frame[2 + wrapped_len :])
    except (crypto.InvalidTag, ValueError) as exc:
        raise IntegrityError(name, "pack table fails authentication (damaged)") from exc
    if len(table) % ENTRY.size:
        raise IntegrityError(name, "pack table is not a whole number of entries (forged)")
    entries = [BlobEntry(*fields) for fields in ENTRY.iter_unpack(table)]
    return PackTable(wrapped, entries)


def read_wrapped_key(storage: Storage, name: str, size: int) -> tuple[bytes, int, int]:
    """A pack's wrapped data key, read from its end without reading a blob: the bytes read
    and the number of reads come with it. ``size`` is the pack's (the index's record or a
    stat). Two ranged reads: the 8-byte trailer, then the first ``2 + WRAPPED_HEAD`` bytes
    of the table frame, which hold the key (a few hundred bytes wrapped to one epoch key);
    a third fetches the rest of a longer one (a pack from before epochs, wrapped to many
    recipients)."""
    if size < TRAILER.size:
        raise IntegrityError(name, f"{size} bytes: too short to hold its table")
    try:
        trailer = storage.get(name, size - TRAILER.size, TRAILER.size)
    except NotFound:
        raise IntegrityError(name, "missing from the target (the index lists it)") from None
    if len(trailer) != TRAILER.size:
        raise IntegrityError(name, "shorter than the index records (cut short?)")
    frame_len, magic = TRAILER.unpack(trailer)
    if magic != MAGIC or not 2 <= frame_len <= size - TRAILER.size:
        raise IntegrityError(
            name, "its trailer is damaged, or the pack is not the size the index records"
        )
    start = size - TRAILER.size - frame_len
    head = storage.get(name, start, min(frame_len, 2 + WRAPPED_HEAD))
    reads = 2
    if len(head) < 2:
        raise IntegrityError(name, "shorter than the index records (cut short?)")
    (wrapped_len,) = struct.unpack_from("<H", head)
    if 2 + wrapped_len > frame_len:
        raise IntegrityError(name, "its trailer is damaged (wrapped key length)")
    if 2 + wrapped_len > len(head):
        head += storage.get(name, start + len(head), 2 + wrapped_len - len(head))
        reads += 1
    if 2 + wrapped_len > len(head):
        raise IntegrityError(name, "shorter than the index records (cut short?)")
    return head[2 : 2 + wrapped_len], TRAILER.size + len(head), reads


def verify_pack_hash(name: str, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1]:
        raise IntegrityError(name, "content does not match its name (SHA-256 differs): damaged")
