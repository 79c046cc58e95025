"""Restore a mongodb snapshot into a server: what mongorestore does, from the repository.

Order: every selected collection is checked first (a non-empty one refuses the restore
unless ``drop``, before anything is written); then each collection is created with its
options and its raw documents are inserted in parallel batches (never decoded); then the
oplog window is replayed, which brings every collection to the snapshot's point in time;
then indexes are built (last: building them once over the loaded data is faster than
maintaining them per insert), views are created, and the databases' users and roles are
written back (``users``).

A server may answer ``ok`` to a ``create`` and drop what it did not understand (FerretDB v2
makes a plain collection of a view, and drops validators and capped options), so every
collection's options are read back after it is created: a lost or changed option, a view
that did not become one, a refused user, is a problem named in the result, the rest is
restored, and the restore fails (exit 1).

A document can be read twice by a dump whose collection changed under it (it moved);
the second copy's duplicate-key error is ignored and the oplog replay sets it right.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from ...engine.tree import Node
from ...errors import IntegrityError, UsageError
from ...repository.repo import Repository
from ...repository.snapshot import Snapshot
from . import snapshotfiles
from .catalog import CollectionInfo
from .connection import Client, server_error
from .oplog import Replayer, ReplayStats
from .oplogcmd import Transactions
from .pitr import PointExtension
from .record import OPLOG, RECORD, DumpRecord
from .users import ROLES_FILE, USERS_FILE, AuthRestored, restore_auth

BATCH_DOCS = 1000
BATCH_BYTES = 8 << 20
INSERT_WORKERS = 4
# Collections whose indexes are built at once (mongorestore: its 4 parallel collections):
# mongod runs 3 builds at once and queues the others; DocumentDB builds each in a background
# job it polls every second or two, so sending them together costs one wait, not one each.
INDEX_WORKERS = 8
DUPLICATE_KEY = 11000
NAMESPACE_EXISTS = 48


@dataclass
class Selection:
    """Which collections to restore and under which names (mongorestore's flags)."""

    db: str | None = None
    collection: str | None = None
    ns_from: str | None = None
    ns_to: str | None = None
    databases: dict[str, str] | None = None  # whole databases renamed (a drill's scratch)

    def __post_init__(self) -> None:
        if self.collection and not self.db:
            raise UsageError("--collection needs --db: name the database it belongs to")
        if bool(self.ns_from) != bool(self.ns_to):
            raise UsageError("--ns-from and --ns-to go together: give both")
        if self.ns_from and self.ns_to and self.ns_from.count(".") != self.ns_to.count("."):
            raise UsageError(
                "--ns-from and --ns-to must both be databases (`shop`) or both "
                "collections (`shop.orders`)"
            )

    def wants(self, db: str, name: str) -> bool:
        return (self.db is None or db == self.db) and (
            self.collection is None or name == self.collection
        )

    def target(self, db: str, name: str) -> tuple[str, str]:
        """The namespace ``db.name`` restores to."""
        if self.databases and db in self.databases:
            return self.databases[db], name
        if self.ns_from and self.ns_to:
            if "." in self.ns_from:
                if f"{db}.{name}" == self.ns_from:
                    new_db, _, new_name = self.ns_to.partition(".")
                    return new_db, new_name
            elif db == self.ns_from:
                return self.ns_to, name
        return db, name


@dataclass
class CollectionOutcome:
    source: str
    target: str
    type: str
    documents: int = 0
    indexes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "type": self.type,
            "documents": self.documents,
            "indexes": self.indexes,
        }


@dataclass
class MongoRestoreResult:
    collections: list[CollectionOutcome] = field(default_factory=list)
    oplog: ReplayStats = field(default_factory=ReplayStats)
    extension: ReplayStats | None = None  # the archived oplog replayed after the point
    point: Any = None  # the point asked for (a bson Timestamp), for a restore to a point
    point_in_time: bool = False
    consistent_at: str | None = None
    bytes: int = 0
    auth: list[AuthRestored] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)  # each fails the restore

    def to_json(self) -> dict[str, Any]:
        return {
            "collections": [c.to_json() for c in self.collections],
            "users_and_roles": [a.to_json() for a in self.auth],
            "oplog_entries_applied": self.oplog.applied,
            **({"point": self.extension_json()} if self.extension is not None else {}),
            "point_in_time": self.point_in_time,
            "consistent_at": self.consistent_at,
            "bytes": self.bytes,
            "warnings": self.warnings,
            "problems": self.problems,
        }

    def extension_json(self) -> dict[str, Any]:
        ext = self.extension
        assert ext is not None
        from .pitr import op_text

        return {
            "asked": op_text(self.point),
            "last_applied": op_text(ext.last),
            "entries_applied": ext.applied,
            "entries_skipped": ext.skipped,
            "transactions": ext.transactions,
            "transactions_not_committed": ext.uncommitted,
        }

    def problem(self, path: str, message: str) -> None:
        self.problems.append({"path": path, "message": message})


@dataclass
class _Planned:
    info: CollectionInfo
    node: Node | None  # the .bson file; None for views
    to_db: str
    to_name: str

    @property
    def source_ns(self) -> str:
        return self.info.ns

    @property
    def target_ns(self) -> str:
        return f"{self.to_db}.{self.to_name}"


class MongoRestore:
    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        nodes: dict[str, Node],
        client: Client,
        *,
        uri: str,
        drop: bool,
        selection: Selection,
        on_bytes: Callable[[str, int], None] = lambda ns, size: None,
        replay: bool = True,
        extension: PointExtension | None = None,
    ) -> None:
        """``replay=False`` leaves the oplog window unapplied (a drill compares the
        documents with the dump's digests first, then calls ``replay_oplog``).
        ``extension``: the archived oplog after the snapshot's point, replayed last (once
        indexes and views exist, since its DDL may drop or rename what they were built on):
        a restore to a point (``pitr``)."""
        self.repo = repo
        self.snapshot = snapshot
        self.nodes = nodes
        self.client = client
        self.uri = uri
        self.drop = drop
        self.selection = selection
        self.on_bytes = on_bytes
        self.replay = replay
        self.extension = extension
        self.transactions = Transactions()  # one across the window and the extension
        self.planned: list[_Planned] = []
        self.who = f"restore of snapshot {snapshot.short_id}"

    # -- plan ------------------------------------------------------------------------

    def record(self) -> DumpRecord:
        node = self.nodes.get(f"/{RECORD}")
        if node is None:
            raise IntegrityError(f"snapshot {self.snapshot.short_id}", f"no {RECORD}")
        return DumpRecord.from_bytes(self._content(node))

    def plan(self) -> list[_Planned]:
        planned = []
        for dumped in snapshotfiles.dumped_collections(self.repo, self.nodes):
            info = dumped.info
            if not self.selection.wants(info.db, info.name):
                continue
            to_db, to_name = self.selection.target(info.db, info.name)
            planned.append(_Planned(info, dumped.data, to_db, to_name))
        if not planned:
            raise UsageError(
                f"snapshot {self.snapshot.short_id} holds no collection matching "
                f"{self._selection_text()}; see `emberkeep snapshots` and the dump's databases"
            )
        return planned

    def _selection_text(self) -> str:
        sel = self.selection
        if sel.collection:
            return f"{sel.db}.{sel.collection}"
        return sel.db or "the selection"

    def total_bytes(self, planned: list[_Planned]) -> int:
        return sum(int(p.node["size"]) for p in planned if p.node is not None)

    # -- run -------------------------------------------------------------------------

    def run(self) -> MongoRestoreResult:
        try:
            return self._run()
        except PyMongoError as exc:
            raise server_error(exc, self.who, self.uri) from exc

    def _run(self) -> MongoRestoreResult:
        record = self.record()
        planned = self.plan()
        self._refuse_non_empty(planned)
        result = MongoRestoreResult(
            point_in_time=record.point_in_time, consistent_at=record.consistent_at
        )
        collections = [p for p in planned if p.info.has_documents]
        oplog = self.nodes.get(f"/{OPLOG}")
        files = [p.node for p in collections if p.node] + ([oplog] if oplog else [])
        files += self.extension.nodes if self.extension else []
        self.repo.prepare_read(b for node in files for b in node["content"])  # cold targets
        # before any --drop: a lost pack or index fails here, with the live data untouched
        self.repo.require_present(b for node in files for b in node["content"])
        outcomes = {}
        for item in collections:
            outcome = CollectionOutcome(item.source_ns, item.target_ns, item.info.kind)
            self._create(item)
            self._check_options(item, result)
            outcome.documents = self._insert(item)
            result.bytes += int(item.node["size"]) if item.node else 0
            outcomes[item.source_ns] = outcome
        self.planned = planned
        if self.replay:
            result.oplog = self._replay(collections)
        with ThreadPoolExecutor(INDEX_WORKERS, thread_name_prefix="mongo-index") as pool:
            built = list(pool.map(self._build_indexes, collections))
        for item, count in zip(collections, built, strict=True):
            outcomes[item.source_ns].indexes = count
            result.collections.append(outcomes[item.source_ns])
        for item in planned:
            if not item.info.has_documents and self._create_view(item, result):
                result.collections.append(
                    CollectionOutcome(item.source_ns, item.target_ns, item.info.kind)
                )
        result.auth = self._restore_auth(record)
        if self.extension is not None:
            result.extension = self._replay_extension(record, self.extension)
        for done in result.auth:
            if done.kept:
                result.warnings.append(
                    {
                        "path": f"{done.db} users and roles",
                        "message": f"already on the target, kept as they are: "
                        f"{', '.join(done.kept)} (restore with --drop to replace them)",
                    }
                )
            for name, why in done.refused.items():
                result.problem(name, f"not restored: {why}")
        if not record.point_in_time:
            reason = record.not_point_in_time_because or "no oplog window"
            result.warnings.append(
                {"path": "oplog", "message": f"not a point-in-time snapshot: {reason}"}
            )
        return result

    def _restore_auth(self, record: DumpRecord) -> list[AuthRestored]:
        """Users and roles of each whole database restored under its own name."""
        if self.selection.collection:
            return []
        restored = []
        for db in record.databases:
            if not self.selection.wants(db, "") or self.selection.target(db, "")[0] != db:
                continue
            users, roles = (self.nodes.get(f"/{db}/{name}") for name in (USERS_FILE, ROLES_FILE))
            if users is None and roles is None:
                continue
            restored.append(
                restore_auth(
                    self.client,
                    db,
                    self._content(users) if users else b"",
                    self._content(roles) if roles else b"",
                    self.drop,
                )
            )
        return restored

    def _refuse_non_empty(self, planned: list[_Planned]) -> None:
        if self.drop:
            return
        for item in planned:
            coll = self.client[item.to_db][item.to_name]
            exists = item.to_name in self.client[item.to_db].list_collection_names(
                filter={"name": item.to_name}
            )
            if exists and (not item.info.has_documents or coll.find_one({}, {"_id": 1})):
                raise UsageError(
                    f"{item.target_ns} already exists and is not empty; restore with --drop "
                    "to replace it (its documents are dropped first), or restore elsewhere "
                    "with --ns-from/--ns-to"
                )

    def _create(self, item: _Planned) -> None:
        db = self.client[item.to_db]
        if self.drop:
            db.drop_collection(item.to_name)
        command = SON([("create", item.to_name), *item.info.options.items()])
        try:
            db.command(command)
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise

    def _create_view(self, item: _Planned, result: MongoRestoreResult) -> bool:
        """Create a view; False (and a problem) when the server refused it or made
        something else of it (that impostor, empty and just made, is dropped again)."""
        try:
            self._create(item)
        except OperationFailure as exc:
            result.problem(item.target_ns, f"view not created: the server refused it ({exc})")
            return False
        if self._check_options(item, result):
            return True
        self.client[item.to_db].drop_collection(item.to_name)
        return False

    def _check_options(self, item: _Planned, result: MongoRestoreResult) -> bool:
        """Whether the collection as created has the type and options of the dump's;
        each difference is a problem of the result."""
        specs = list(self.client[item.to_db].list_collections(filter={"name": item.to_name}))
        kind = specs[0].get("type", "collection") if specs else None
        if kind != item.info.kind:
            what = f"a {kind}" if kind else "nothing"
            result.problem(
                item.target_ns,
                f"{item.info.kind} not kept: the server made {what} of it (it ignores "
                f"{_option_names(item.info.options)}); restore onto a server that keeps them",
            )
            return False
        have = dict(specs[0].get("options") or {})
        lost = [k for k in item.info.options if k not in have]
        changed = [k for k in item.info.options if k in have and have[k] != item.info.options[k]]
        for names, how in ((lost, "lost"), (changed, "changed")):
            if names:
                result.problem(
                    item.target_ns,
                    f"collection option{'s' if len(names) > 1 else ''} {', '.join(names)} "
                    f"{how} by the server on create (it answered ok); restore onto a server "
                    "that keeps them",
                )
        return not (lost or changed)

    def _insert(self, item: _Planned) -> int:
        """Raw documents in batches, ``INSERT_WORKERS`` batches in flight at once."""
        assert item.node is not None
        coll = self.client[item.to_db][item.to_name]
        inserted = 0
        pending: list[Future[int]] = []
        with ThreadPoolExecutor(INSERT_WORKERS, thread_name_prefix="mongo-insert") as pool:
            for batch in self._batches(item.node, item.source_ns):
                pending.append(pool.submit(_insert_batch, coll, batch))
                if len(pending) >= INSERT_WORKERS * 2:
                    inserted += pending.pop(0).result()
            inserted += sum(f.result() for f in pending)
        return inserted

    def _batches(self, node: Node, ns: str) -> Iterator[list[RawBSONDocument]]:
        batch: list[RawBSONDocument] = []
        size = 0
        for doc in self._documents(node, ns):
            batch.append(RawBSONDocument(doc))
            size += len(doc)
            if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def _documents(self, node: Node, ns: str) -> Iterator[bytes]:
        return snapshotfiles.documents(self.repo, node, ns, self.on_bytes)

    def replay_oplog(self) -> ReplayStats:
        """The oplog window over what ``run`` restored (when it ran with ``replay=False``)."""
        try:
            return self._replay([p for p in self.planned if p.info.has_documents])
        except PyMongoError as exc:
            raise server_error(exc, self.who, self.uri) from exc

    def _replay(self, collections: list[_Planned]) -> ReplayStats:
        node = self.nodes.get(f"/{OPLOG}")
        if node is None or not node.get("content"):
            return ReplayStats()
        names = {(p.info.db, p.info.name): (p.to_db, p.to_name) for p in collections}
        replayer = Replayer(
            self.client, lambda db, coll: names.get((db, coll)), transactions=self.transactions
        )
        return replayer.replay(bson.decode(doc) for doc in self._documents(node, "oplog"))

    def _replay_extension(self, record: DumpRecord, extension: PointExtension) -> ReplayStats:
        """The slices after the snapshot's point, every collection of its databases that the
        selection takes, including those created after the dump."""
        sel = self.selection
        databases = set(record.databases)

        def rename(db: str, coll: str) -> tuple[str, str] | None:
            if db not in databases or not sel.wants(db, coll):
                return None
            return sel.target(db, coll)

        def whole_db(db: str) -> tuple[bool, str | None]:
            if db not in databases or (sel.db is not None and db != sel.db):
                return False, None
            if sel.collection or (sel.ns_from and "." in sel.ns_from):
                return True, None
            return True, sel.target(db, "")[0]

        replayer = Replayer(
            self.client, rename, ddl=True, whole_db=whole_db, transactions=self.transactions
        )
        stats = replayer.replay(extension.entries())
        stats.last = stats.last or extension.after  # nothing after the base: its point
        return stats

    def _build_indexes(self, item: _Planned) -> int:
        specs = [_index_spec(i) for i in item.info.indexes if i.get("name") != "_id_"]
        if specs:
            self.client[item.to_db].command(
                SON([("createIndexes", item.to_name), ("indexes", specs)])
            )
        return len(specs)

    def _content(self, node: Node) -> bytes:
        return snapshotfiles.content(self.repo, node)


def _insert_batch(coll: Any, batch: list[RawBSONDocument]) -> int:
    """Insert; returns how many went in (duplicates of a doc read twice are left out)."""
    try:
        coll.insert_many(batch, ordered=False, bypass_document_validation=True)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return len(batch) - len(errors)
    return len(batch)


def _option_names(options: dict[str, Any]) -> str:
    return ", ".join(options) or "its type"


def _index_spec(index: dict[str, Any]) -> dict[str, Any]:
    """An index as listed by the dump, as ``createIndexes`` takes it."""
    return {k: v for k, v in index.items() if k not in ("v", "ns")}


def check_mongo_snapshot(snapshot: Snapshot) -> None:
    if snapshot.source_type != "mongodb":
        raise UsageError(
            f"snapshot {snapshot.short_id} is of type {snapshot.source_type}; --to-uri "
            "restores mongodb snapshots only (use --to DIR)"
        )
