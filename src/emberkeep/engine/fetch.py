"""Reading many blobs in order: each run of blobs lying back to back in a pack is fetched
with one ranged read (``Repository.runs``), up to ``window`` runs in flight on ``pool``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from ..repository.repo import Repository
from .parallel import ordered_map


def read_in_order(
    repo: Repository,
    blob_ids: Iterable[bytes],
    pool: ThreadPoolExecutor | None = None,
    window: int = 4,
) -> Iterator[bytes]:
    """The blobs' plaintexts in the order given; on the caller's thread when no ``pool``."""
    runs = repo.runs(blob_ids)
    if pool is None:
        for run in runs:
            yield from repo.read_run(run)
        return
    for blobs in ordered_map(pool, repo.read_run, runs, window):
        yield from blobs
