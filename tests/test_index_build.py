"""BlobIndex.build (repository/index.py): one location per blob, found for every blob; of
a blob in several packs, a copy in a pack that exists, preferring one not to avoid."""

from __future__ import annotations

import random

from emberkeep.repository.index import BlobIndex, PackRecord
from emberkeep.repository.pack import BlobEntry


def _pack(number: int, ids: list[bytes]) -> tuple[str, PackRecord]:
    entries = tuple(BlobEntry(i, 1, 100 * n, 100, 90) for n, i in enumerate(ids))
    return f"index/{number}", PackRecord(f"data/{number:064x}", 1, 1, entries, 0)


def test_every_blob_is_found_where_its_pack_says() -> None:
    rng = random.Random(7)
    packs = [_pack(p, [rng.randbytes(32) for _ in range(300)]) for p in range(20)]
    index = BlobIndex.build(packs)
    assert len(index) == 6000
    for _, pack in packs:
        for entry in pack.entries:
            found = index.find(entry.id)
            assert found is not None
            assert (found.pack, found.offset, found.raw_length) == (pack.name, entry.offset, 90)
            assert index.pack_of(entry.id) == pack.name
    assert index.find(rng.randbytes(32)) is None and index.pack_of(rng.randbytes(32)) is None


def test_a_blob_in_several_packs_gets_an_existing_copy_outside_avoid() -> None:
    rng = random.Random(8)
    shared = rng.randbytes(32)
    packs = [_pack(p, [rng.randbytes(32) for _ in range(50)] + [shared]) for p in range(3)]
    names = [pack.name for _, pack in packs]
    assert BlobIndex.build(packs).pack_of(shared) == names[0]  # the first listed
    assert BlobIndex.build(packs, avoid=frozenset(names[:2])).pack_of(shared) == names[2]
    gone = {names[0]}
    index = BlobIndex.build(packs, exists=lambda pack: pack not in gone)
    assert index.pack_of(shared) == names[1]
    assert len(index) == 151
