"""Restores read adjacent blobs of a pack with one ranged read (``Repository.runs``)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from conftest import Site
from test_concurrency import _repo

from emberkeep.engine.restore import Restorer
from emberkeep.repository import layout
from emberkeep.repository.repo import RUN_SPAN

MiB = 1024 * 1024


class CountingStorage:
    """Our storage seam, counting ranged reads of packs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.pack_reads: list[tuple[str, int]] = []

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if name.startswith("data/"):
            self.pack_reads.append((name, length or 0))
        return self.inner.get(name, offset, length)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_large_file_restores_in_a_few_reads_per_pack(site: Site, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(40 * MiB))
    (data / "small.txt").write_bytes(b"small")
    site.keygen()
    site.write_config([data])
    site.run("init")
    site.run("backup")

    repo = _repo(site, read=True)
    snapshot = repo.snapshots()[0]
    counting = CountingStorage(repo.storage)
    repo.storage = counting
    Restorer(repo, tmp_path / "out").restore(snapshot)

    assert (tmp_path / "out" / str(data).lstrip("/") / "big.bin").read_bytes() == (
        data / "big.bin"
    ).read_bytes()
    packs = {name for name, _ in counting.pack_reads}
    # Per pack: its key header (two small reads, then cached) and at most three runs of
    # up to RUN_SPAN; one read per chunk would be ~40 for the big file alone.
    assert len(counting.pack_reads) <= len(packs) * 5 + 1, counting.pack_reads
    assert repo.read_times.bytes >= 40 * MiB
    assert all(length <= RUN_SPAN for _, length in counting.pack_reads)


def test_runs_keep_order_and_never_cross_a_pack(site: Site, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}.bin").write_bytes(os.urandom(12 * MiB))
    site.keygen()
    site.write_config([data])
    site.run("init")
    site.run("backup")
    repo = _repo(site, read=True)
    ids = [
        blob_id
        for blobs in repo.index.blobs_by_pack().values()
        for blob_id, where in sorted(blobs, key=lambda b: b[1].offset)
        if where.type == layout.BLOB_DATA
    ]
    assert len(ids) >= 20  # 36 MiB in chunks of about 1.3 MiB on average: ~28, varying
    shuffled = ids[::2] + ids[1::2] + ids[:3]  # out of order, with repeats
    runs = list(repo.runs(shuffled))
    assert [b for run in runs for b in run] == shuffled
    for run in runs:
        places = [p for b in run if (p := repo.index.find(b)) is not None]
        assert len(places) == len(run)
        assert len({p.pack for p in places}) == 1
        assert all(a.offset + a.length == b.offset for a, b in itertools.pairwise(places))
    assert [blob for run in runs for blob in repo.read_run(run)] == [
        repo.read_blob(b) for b in shuffled
    ]


def test_small_files_restore_in_a_few_reads_not_one_each(site: Site, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(300):
        (data / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (data / f"d{i % 7}" / f"f{i}.bin").write_bytes(os.urandom(1000 + 97 * i))
    site.keygen()
    site.write_config([data])
    site.run("init")
    site.run("backup")

    repo = _repo(site, read=True)
    counting = CountingStorage(repo.storage)
    repo.storage = counting
    out = tmp_path / "out"
    result = Restorer(repo, out).restore(repo.snapshots()[0])

    assert result.files == 300
    for path in data.rglob("*.bin"):
        assert (out / str(path).lstrip("/")).read_bytes() == path.read_bytes()
    assert len(counting.pack_reads) < 40, len(counting.pack_reads)  # one per file: 300
