"""The write pipeline: chunks in, packs out.

The caller submits chunks in order. Worker threads compute keyed ids and seal the
chunks the repository does not hold yet; the caller's thread takes results back in
submission order, so every file's id list stays in order and each pack fills in turn.
At most ``max_in_flight`` chunks are held at once and one finished pack waits for
upload while the next fills, so memory stays flat however much data flows through.

A pack is chosen for a chunk when it is submitted (its data key seals the chunk), and
is finished once the last chunk promised to it comes back.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import crypto
from ..crashpoints import crash_point
from ..errors import AlreadyExists
from ..repository import layout
from ..repository.index import PackRecord
from ..repository.pack import PackWriter
from ..repository.repo import Repository

Result = tuple[bytes, bytearray | None, int]  # blob id, sealed bytes or None when known, raw size

# A test seam: packs of at most this many bytes (tests that need a thousand packs of
# little data); never set outside tests.
_TEST_PACK_TARGET = int(os.environ.get("EMBERKEEP_TEST_PACK_TARGET", "0"))


@dataclass
class WriteStats:
    blobs_new: int = 0
    bytes_new: int = 0  # plaintext bytes of new blobs
    bytes_stored: int = 0  # sealed bytes written to packs
    packs: int = 0


@dataclass
class _OpenPack:
    writer: PackWriter
    outstanding: int = 0  # chunks submitted for this pack whose results are not back
    retired: bool = False  # takes no new chunks; ships once ``outstanding`` reaches 0


@dataclass
class _Job:
    future: Future[Result]
    pack: _OpenPack
    sink: list[bytes]  # the file's id list the result belongs to


class _Uploader:
    """One background thread that seals finished packs and uploads them.

    Sealing a pack (wrapping its key, hashing it for its name) happens here, off the
    thread that reads files. ``writers`` packs are written at once (disks and networks
    both take more when written to in parallel: two fsync'd writers moved 3x the bytes of
    one on the bench machine); ``send`` waits while all of them are busy, so at most
    ``writers + 1`` packs are in memory.
    """

    def __init__(self, repo: Repository, writers: int = 2) -> None:
        self.repo = repo
        self._wrapping = (
            repo.pack_wrapping()
        )  # the current key epoch (README, "Keys and team changes")
        self.done: list[PackRecord] = []
        self.error: BaseException | None = None
        self._queue: queue.Queue[PackWriter | None] = queue.Queue()
        self._idle = threading.Semaphore(writers)
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f"uploader-{i}")
            for i in range(writers)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while (pack := self._queue.get()) is not None:
            try:
                if self.error is None:
                    self.done.append(self._upload(pack))
            except BaseException as exc:
                self.error = exc
            finally:
                pack.parts = []  # free the pack's bytes now, not when the writer goes
                self._idle.release()

    def _upload(self, pack: PackWriter) -> PackRecord:
        wrap_to, epoch = self._wrapping
        name, parts, entries = pack.finish(wrap_to, self.repo.writer_key.index_key)
        record = PackRecord(name, pack.kind, pack.size, tuple(entries), epoch)
        # Same bytes, same name: a restarted backup may have sent it already.
        with contextlib.suppress(AlreadyExists):
            self.repo.storage.put(name, parts)
        crash_point("pack-stored")
        return record

    def send(self, pack: PackWriter) -> None:
        self._idle.acquire()
        if self.error is not None:
            self._idle.release()
            raise self.error
        self._queue.put(pack)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


@dataclass
class BlobWriter:
    repo: Repository
    workers: int = 2
    max_in_flight: int = 8
    skip_packs: frozenset[str] = frozenset()  # condemned packs: never deduplicate against them
    stats: WriteStats = field(default_factory=WriteStats)
    referenced: set[bytes] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="seal")
        self._jobs: deque[_Job] = deque()
        self._pending: set[bytes] = set()  # sealed in this session, not yet in the index
        self._open: dict[int, _OpenPack] = {}
        self._retired: list[_OpenPack] = []
        self._uploader = _Uploader(self.repo)
        self._mac = self.repo.writer_key.mac_key
        self._index = self.repo.index

    # -- what is already stored ----------------------------------------------------------

    def known(self, blob_id: bytes) -> bool:
        if blob_id in self._pending:
            return True
        pack = self._index.pack_of(blob_id)
        return pack is not None and pack not in self.skip_packs

    # -- data chunks ---------------------------------------------------------------------

    def submit(self, data: bytes, sink: list[bytes]) -> None:
        """Queue one chunk; its id is appended to ``sink`` in submission order."""
        pack = self._pack_for(layout.BLOB_DATA, len(data))
        pack.outstanding += 1
        future = self._pool.submit(self._work, data, pack.writer)
        self._jobs.append(_Job(future, pack, sink))
        while len(self._jobs) > self.max_in_flight:
            self._absorb(self._jobs.popleft())

    def _work(self, data: bytes, pack: PackWriter) -> Result:
        blob_id = crypto.blob_id(self._mac, data)
        if self.known(blob_id):
            return blob_id, None, len(data)
        return blob_id, pack.seal(blob_id, layout.BLOB_DATA, data), len(data)

    def _absorb(self, job: _Job) -> None:
        blob_id, sealed, raw = job.future.result()
        job.sink.append(blob_id)
        self.referenced.add(blob_id)
        if sealed is not None and not self.known(blob_id):
            self._add(job.pack.writer, blob_id, layout.BLOB_DATA, sealed, raw)
        job.pack.outstanding -= 1
        if job.pack.retired:
            self._flush_retired()

    def drain(self) -> None:
        """Wait until every submitted chunk is in a pack (its ids are in their sinks)."""
        while self._jobs:
            self._absorb(self._jobs.popleft())

    # -- trees ---------------------------------------------------------------------------

    def store_tree(self, data: bytes) -> bytes:
        """Store a tree blob now (in the caller's thread); returns its id."""
        blob_id = crypto.blob_id(self._mac, data)
        self.referenced.add(blob_id)
        if not self.known(blob_id):
            pack = self._pack_for(layout.BLOB_TREE, len(data))
            sealed = pack.writer.seal(blob_id, layout.BLOB_TREE, data)
            self._add(pack.writer, blob_id, layout.BLOB_TREE, sealed, len(data))
            self._flush_retired()
        return blob_id

    # -- blobs of another target of the site ---------------------------------------------

    def copy_blob(self, blob_id: bytes, kind: int, data: bytes) -> None:
        """Store a blob read (and verified) from another target of the site under the id
        it has there: the site's targets share the writer key, so it is the id its content
        has here too. Sealed anew, in the caller's thread, into this repository's packs
        (engine/reencrypt.py)."""
        self.referenced.add(blob_id)
        if self.known(blob_id):
            return
        pack = self._pack_for(kind, len(data))
        sealed = pack.writer.seal(blob_id, kind, data)
        self._add(pack.writer, blob_id, kind, sealed, len(data))
        self._flush_retired()

    # -- packs ---------------------------------------------------------------------------

    def _add(
        self, pack: PackWriter, blob_id: bytes, kind: int, sealed: bytearray, raw: int
    ) -> None:
        pack.add(blob_id, kind, sealed, raw)
        self._pending.add(blob_id)
        self.stats.blobs_new += 1
        self.stats.bytes_new += raw
        self.stats.bytes_stored += len(sealed)

    def _pack_for(self, kind: int, size: int) -> _OpenPack:
        target = layout.PACK_TARGET if kind == layout.BLOB_DATA else layout.META_PACK_TARGET
        target = _TEST_PACK_TARGET or target
        current = self._open.get(kind)
        if current is not None and current.writer.submitted >= target:
            current.retired = True
            self._retired.append(current)
            current = None
        if current is None:
            current = self._open[kind] = _OpenPack(PackWriter(kind))
        current.writer.submitted += size
        return current

    def _flush_retired(self) -> None:
        for state in [s for s in self._retired if s.outstanding == 0]:
            self._retired.remove(state)
            self._ship(state.writer)

    def _ship(self, pack: PackWriter) -> None:
        if pack.entries:
            self.stats.packs += 1
            self._uploader.send(pack)

    def finish(self) -> list[PackRecord]:
        """Seal and upload every open pack, then write one index file for them."""
        self.drain()
        for state in self._open.values():
            state.retired = True
            self._retired.append(state)
        self._open.clear()
        self._flush_retired()
        self._pool.shutdown()
        self._uploader.close()
        self._uploader.raise_error()
        packs = self._uploader.done
        if packs:
            self.repo.save_index(packs)
            for pack in packs:
                self.repo.index.add_pack(pack)
        self._pending.clear()
        return packs

    def abort(self) -> None:
        """Stop without committing anything; uploaded packs stay as unreferenced leftovers."""
        for job in self._jobs:
            job.future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._uploader.close()
