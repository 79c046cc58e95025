"""The dump: a MongoDB source's events for the engine, read in parallel, never on disk.

Tree of a mongodb snapshot (mongodump's layout, so an export is a plain copy):

    /<db>/<coll>.bson            raw BSON documents, exactly as the server returned them
    /<db>/<coll>.metadata.json   options, indexes, uuid, collectionName, type
    /oplog.bson                  the oplog window's entries (see ``oplog``)
    /emberkeep-mongodb.json      the dump record (see ``record``)

Up to ``parallel`` collections are read at once by worker threads, each into a bounded
``ByteQueue`` that the engine chunks as it fills (the collections' streams are
``concurrent``), so the server serves ``parallel`` cursors for the whole dump while memory
stays at ``parallel`` queue budgets. Batches are capped near ``BATCH_BYTES`` (a server
otherwise grows them to 16 MiB), which keeps memory flat whatever the collections' sizes.
Documents are never decoded: ``find_raw_batches`` hands over the server's bytes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bson import Timestamp
from pymongo.errors import OperationFailure, PyMongoError

from ...clock import iso
from ...engine.events import (
    Enter,
    Event,
    Leave,
    Readable,
    Stream,
    Warning_,
    bytes_stream,
    made_node,
)
from ..bytequeue import ByteQueue, Cancelled
from .catalog import CollectionInfo, list_collections, select_databases
from .connection import Client, server_error
from .oplog import Oplog
from .optime import ts_json
from .record import OPLOG, RECORD, CollectionRecord, DocDigest, DumpRecord, OplogWindow
from .users import ROLES_FILE, USERS_FILE, AuthDump, read_auth, users_not_kept

QUEUE_BUDGET = 8 << 20  # bytes waiting per collection being read (x parallel)
BATCH_BYTES = 2 << 20  # what one batch from the server should hold, about
MAX_BATCH_DOCS = 100_000
# A collection that vanished under a cursor: NamespaceNotFound, QueryPlanKilled, CursorKilled
DROPPED_CODES = frozenset({26, 175, 237})


def _no_op(info: CollectionInfo) -> None:
    pass


# Called on the reader's thread just before a collection is read, after the listing. A seam
# for tests (in-process): what happens to a collection between the two, without a race.
before_read: Callable[[CollectionInfo], None] = _no_op


class CollectionReader:
    """Reads one collection's raw batches on a worker thread into a ``ByteQueue``."""

    def __init__(self, client: Client, info: CollectionInfo) -> None:
        self.client = client
        self.info = info
        self.queue = ByteQueue(QUEUE_BUDGET)
        self.digest = DocDigest()
        self.dropped = False

    def run(self) -> None:
        error: BaseException | None = None
        try:
            before_read(self.info)
            collection = self.client[self.info.db][self.info.name]
            for batch in collection.find_raw_batches(batch_size=self._batch_docs()):
                self.digest.add(batch)
                self.queue.put(batch)
        except Cancelled:
            return
        except OperationFailure as exc:
            if exc.code in DROPPED_CODES and not self._exists():
                self.dropped = True
            else:
                error = exc
        except BaseException as exc:  # handed to the consumer, which raises it
            error = exc
        if error is None and self.digest.count == 0 and not self._exists():
            self.dropped = True
        self.queue.close(error)

    def _batch_docs(self) -> int:
        """Documents per batch for about ``BATCH_BYTES``, from the collection's average size."""
        try:
            stats = self.client[self.info.db].command("collStats", self.info.name)
        except OperationFailure:
            return 0  # the server's default
        average = stats.get("avgObjSize") or 0
        if average <= 0:
            return 0
        return max(1, min(MAX_BATCH_DOCS, BATCH_BYTES // int(average)))

    def _exists(self) -> bool:
        names = self.client[self.info.db].list_collection_names(filter={"name": self.info.name})
        return self.info.name in names

    @contextlib.contextmanager
    def open(self) -> Iterator[Readable]:
        try:
            yield self.queue
        except BaseException:
            self.queue.cancel()
            raise

    def record(self) -> CollectionRecord:
        return CollectionRecord(
            db=self.info.db,
            name=self.info.name,
            type=self.info.kind,
            count=self.digest.count,
            bytes=self.digest.bytes,
            digest=self.digest.hexdigest,
            dropped_during_dump=self.dropped,
        )


@dataclass(frozen=True)
class DumpSpec:
    """What a dump reads, as plain values: the runner fills them in from the source's
    config (a source never reads the config file, docs/design.md "Layers")."""

    name: str  # the source's, for messages
    uri: str  # named (redacted) in errors; ``client`` is already connected to it
    databases: list[str]  # empty: every user database
    exclude: list[str]  # shell patterns on "db.collection"
    parallel: int  # collections read at once


class MongoDump:
    """One dump of a source. ``extra`` is filled for the snapshot header as the dump ends."""

    def __init__(self, source: DumpSpec, client: Client) -> None:
        self.source = source
        self.client = client
        self.who = f"source {source.name}"
        self.extra: dict[str, Any] = {}
        self.record = DumpRecord()

    def events(self) -> Iterator[Event]:
        try:
            yield from self._events()
        except PyMongoError as exc:
            raise server_error(exc, self.who, self.source.uri) from exc

    def _events(self) -> Iterator[Event]:
        oplog = Oplog(self.client)
        start = oplog.start()
        databases = select_databases(self.client, self.source.databases, self.who)
        catalog = {db: list_collections(self.client, db, self.source.exclude) for db in databases}
        auth = {db: read_auth(self.client, db) for db in databases}
        if databases and not any(a.user_count or a.role_count or a.problem for a in auth.values()):
            why = users_not_kept(self.client)  # none found: none defined, or not kept there?
            for found in auth.values():
                found.problem = why
        self._record_auth(auth)
        self.record.server_version = str(self.client.server_info().get("version", ""))
        self.record.databases = databases
        readers = [
            CollectionReader(self.client, info)
            for db in databases
            for info in catalog[db]
            if info.has_documents
        ]
        with ThreadPoolExecutor(self.source.parallel, thread_name_prefix="mongo-read") as pool:
            try:
                yield from self._collections(databases, catalog, auth, readers, pool)
            finally:
                for reader in readers:
                    reader.queue.cancel()
        if self.record.users_and_roles != "dumped":
            yield Warning_("users and roles", self.record.users_and_roles)
        for reader in readers:
            self.record.collections.append(reader.record())
            if reader.dropped:
                yield Warning_(
                    f"{reader.info.ns}",
                    "collection dropped during the dump; the documents read before it "
                    "went are kept in the snapshot",
                )
        self.record.collections += [
            CollectionRecord(db=c.db, name=c.name, type=c.kind)
            for db in databases
            for c in catalog[db]
            if not c.has_documents
        ]
        end = oplog.end()
        oplog.check_not_rolled_over(start, self.who)
        self.record.oplog = OplogWindow(start=ts_json(start), end=ts_json(end))
        yield Stream(made_node(OPLOG), lambda: self._oplog(oplog, start, end, databases))
        self._finish_record(oplog, end)
        yield bytes_stream(made_node(RECORD), self.record.to_bytes())

    def _collections(
        self,
        databases: list[str],
        catalog: dict[str, list[CollectionInfo]],
        auth: dict[str, AuthDump],
        readers: list[CollectionReader],
        pool: ThreadPoolExecutor,
    ) -> Iterator[Event]:
        """The tree's database directories; readers start ``parallel`` collections ahead."""
        ahead = iter(readers)
        for first in _take(ahead, self.source.parallel):
            pool.submit(first.run)
        by_ns = {r.info.ns: r for r in readers}
        for db in databases:
            yield Enter(made_node(db, "dir"))
            for info in catalog[db]:
                yield bytes_stream(
                    made_node(f"{info.name}.metadata.json"), info.metadata_json(), concurrent=True
                )
                reader = by_ns.get(info.ns)
                if reader is None:
                    continue
                yield Stream(made_node(f"{info.name}.bson"), reader.open, concurrent=True)
                for following in _take(ahead, 1):
                    pool.submit(following.run)
            for name, data in ((USERS_FILE, auth[db].users), (ROLES_FILE, auth[db].roles)):
                if data:
                    yield bytes_stream(made_node(name), data, concurrent=True)
            yield Leave()

    def _record_auth(self, auth: dict[str, AuthDump]) -> None:
        problems = sorted({a.problem for a in auth.values() if a.problem})
        self.record.users_and_roles = f"not dumped: {problems[0]}" if problems else "dumped"
        self.record.users = sum(a.user_count for a in auth.values())
        self.record.roles = sum(a.role_count for a in auth.values())

    @contextlib.contextmanager
    def _oplog(
        self, oplog: Oplog, start: Timestamp | None, end: Timestamp | None, dbs: list[str]
    ) -> Iterator[Readable]:
        """The window's entries, read on a thread like a collection; rollover checked after."""
        queue = ByteQueue(QUEUE_BUDGET)
        digest = DocDigest()

        def produce() -> None:
            try:
                for batch in oplog.window_batches(start, end, dbs):
                    digest.add(batch)
                    queue.put(batch)
            except Cancelled:
                return
            except BaseException as exc:
                queue.close(exc)
                return
            queue.close()

        thread = threading.Thread(target=produce, name="mongo-oplog", daemon=True)
        thread.start()
        try:
            yield queue
        except BaseException:
            queue.cancel()
            raise
        finally:
            thread.join()
        oplog.check_not_rolled_over(start, self.who)
        self.record.oplog.entries = digest.count

    def _finish_record(self, oplog: Oplog, end: Timestamp | None) -> None:
        record = self.record
        if not oplog.present:
            record.not_point_in_time_because = (
                "the server has no oplog (local.oplog.rs): documents are as each collection "
                "was read; run MongoDB as a replica set for point-in-time dumps"
            )
        elif end is None:
            record.point_in_time = True  # no write has ever been logged: nothing moved
        else:
            record.point_in_time = True
            record.consistent_at = iso(end.as_datetime())
        self.extra["mongodb"] = record.header_extra()


def _take(it: Iterator[CollectionReader], n: int) -> list[CollectionReader]:
    return [r for _, r in zip(range(n), it, strict=False)]
