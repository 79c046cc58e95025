"""The oplog window: what makes a dump taken while the site writes consistent to one point.

Before the first collection is read, the newest oplog entry's timestamp is noted
(``start``); after the last one, again (``end``). Every write that landed while the
collections were read lies in ``(start, end]``; the dump stores those entries of the
selected databases as ``oplog.bson``, and a restore replays them over the documents,
which brings every collection to its state at ``end``, the snapshot's point in time.

If the server dropped entries of the window meanwhile (the capped oplog rolled over
because the dump took longer than the oplog holds), the dump cannot be made consistent:
``check_not_rolled_over`` fails the backup and no snapshot is committed.

A server without ``local.oplog.rs`` (a standalone mongod) is dumped as it is read; the
snapshot then says it is not point-in-time.

Replay (``Replayer``) translates each entry into a write, so it works on servers without
``applyOps`` (FerretDB) and across ``--ns-from/--ns-to`` renames: inserts stay inserts
(skipped when the document is already there; ``Replayer._apply`` says why), deletes delete
by ``_id``, and updates apply their modifier. MongoDB 5+ logs updates as ``$v: 2``
diffs: the replay reads the document, applies the diff (``updatediff``) and writes it back.
FerretDB writes every update as ``{"$set": <the whole new document>}`` with the ``_id``
inside: that is a replacement and is replayed as one, or fields the update removed
would stay behind.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from bson import Timestamp
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError

from ...errors import EmberkeepError
from .connection import Client
from .optime import LAST_INC, OPLOG_COLL, OPLOG_DB
from .updatediff import apply_diff

REPLAY_BATCH = 100  # writes per bulk_write
DUPLICATE_KEY = 11000


class Oplog:
    """The server's oplog, read at the two ends of a dump.

    Where the server reports its last write (``hello.lastWrite``, mongod) the window's
    ends are exact. FerretDB does not, and any sorted read of its oplog scans it whole,
    so there the ends come from the server's clock, which its oplog timestamps follow:
    the start a second early (replaying entries from before the dump is harmless, since
    FerretDB logs every write as the document's whole new state), the end at the close
    of the current second, waited out so no entry of that second is still to come.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.coll = client[OPLOG_DB][OPLOG_COLL]
        self.present = OPLOG_COLL in client[OPLOG_DB].list_collection_names()
        self.first_at_start = self.oldest()

    def start(self) -> Timestamp | None:
        if not self.present:
            return None
        exact, seconds = self._position()
        return exact or Timestamp(max(seconds - 1, 0), 0)

    def end(self) -> Timestamp | None:
        if not self.present:
            return None
        exact, seconds = self._position()
        if exact is not None:
            return exact
        while self._position()[1] <= seconds:
            time.sleep(0.05)
        return Timestamp(seconds, LAST_INC)

    def _position(self) -> tuple[Timestamp | None, int]:
        hello = self.client.admin.command("hello")
        exact = ((hello.get("lastWrite") or {}).get("opTime") or {}).get("ts")
        local = hello["localTime"].replace(tzinfo=UTC)
        return (exact if isinstance(exact, Timestamp) else None), int(local.timestamp())

    def oldest(self) -> Timestamp | None:
        """The first entry in natural order: cheap, unlike any sorted read on FerretDB."""
        if not self.present:
            return None
        entry = next(iter(self.coll.find({}, {"ts": 1}).limit(1)), None)
        return None if entry is None else entry["ts"]

    def check_not_rolled_over(self, start: Timestamp | None, who: str) -> None:
        """Fail when entries newer than ``start`` may have been dropped from the oplog.

        The oldest entry now is older than the start (nothing of the window went), or
        is still the entry that was oldest when the dump began (nothing went at all).
        """
        oldest = self.oldest()
        if start is None or oldest is None or oldest <= start or oldest == self.first_at_start:
            return
        raise EmberkeepError(
            f"{who}: the oplog rolled over during the dump (entries written while it ran "
            "were dropped before it could read them), so the dump cannot be made "
            "consistent; no snapshot was made. Make the oplog larger (or back up when "
            "the site writes less) and run the backup again"
        )

    def window_batches(
        self, start: Timestamp | None, end: Timestamp | None, databases: list[str]
    ) -> Iterator[bytes]:
        """Raw BSON batches of the entries in ``(start, end]`` that touch ``databases``,
        and the transactions (on ``admin.$cmd``), which may."""
        if not self.present or end is None or (start is not None and start >= end):
            return
        ts: dict[str, Any] = {"$lte": end}
        if start is not None:
            ts["$gt"] = start
        names = "|".join(re.escape(d) for d in databases)
        # admin.$cmd holds transactions (applyOps) of every database: replay filters them
        of_dbs = {"ns": {"$regex": f"^(?:{names})\\."}}
        query = {"ts": ts, "$or": [of_dbs, {"ns": "admin.$cmd"}], "op": {"$ne": "n"}}
        yield from self.coll.find_raw_batches(query)


@dataclass
class ReplayStats:
    applied: int = 0
    skipped: int = 0
    transactions: int = 0  # committed transactions unpacked
    uncommitted: int = 0  # transactions not committed by the end of the replay: left out
    last: Timestamp | None = None  # the last entry replayed (applied or skipped)


class Replayer:
    """Applies oplog entries to a server, with namespaces renamed by ``rename``.

    Transactions (``oplogcmd.Transactions``) are unpacked into their operations, committed
    ones only. ``ddl=False`` (a dump's own window) skips command entries: the snapshot's
    catalog already says what exists. ``ddl=True`` (the slices after a base, in
    ``pitr``) replays them (``Commands``) or refuses the entry by name. ``whole_db`` maps a
    database to ``(selected, target)``: whether the restore takes any of it, and the
    database it restores to when it takes it whole (None: only in part, and a
    ``dropDatabase`` cannot be replayed)."""

    def __init__(
        self,
        client: Client,
        rename: Any,
        *,
        ddl: bool = False,
        whole_db: Any = None,
        transactions: Any = None,
    ) -> None:
        from .oplogcmd import Transactions

        self.client = client
        self.rename = rename  # (db, coll) -> (db, coll) | None (None: not restored)
        self.stats = ReplayStats()
        self.ddl = ddl
        self.whole_db = whole_db or (lambda db: (False, None))
        self.transactions = transactions if transactions is not None else Transactions()

    def replay(self, entries: Iterator[dict[str, Any]]) -> ReplayStats:
        pending: list[tuple[str, str, Any]] = []
        for entry in entries:
            for item in self.transactions.expand(entry):
                if item.get("op") == "c" and self.ddl:
                    self._flush(pending)  # a command applies to the state as it is by now
                    self._command(item)
                    continue
                op = self._translate(item)
                if op is None:
                    self.stats.skipped += 1
                    continue
                if isinstance(op[2], DiffUpdate):
                    self._flush(pending)  # the diff applies to the document as it is by now
                    self._apply_diff(*op)
                    continue
                pending.append(op)
                if len(pending) >= REPLAY_BATCH:
                    self._flush(pending)
            ts = entry.get("ts")
            if isinstance(ts, Timestamp):
                self.stats.last = ts
        self._flush(pending)
        self.stats.transactions = self.transactions.committed
        self.stats.uncommitted = self.transactions.left_open
        return self.stats

    def _command(self, entry: dict[str, Any]) -> None:
        from .oplogcmd import Commands

        if Commands(self.client, self.rename, self.whole_db).apply(entry):
            self.stats.applied += 1
        else:
            self.stats.skipped += 1

    def _apply_diff(self, db: str, coll: str, update: DiffUpdate) -> None:
        """Read, apply, write back; a document gone by now is skipped (a later entry of the
        window deleted it, or the dump read it after that)."""
        collection = self.client[db][coll]
        doc = collection.find_one({"_id": update.id})
        if doc is None:
            self.stats.skipped += 1
            return
        apply_diff(doc, update.diff)
        collection.replace_one({"_id": update.id}, doc)
        self.stats.applied += 1

    def _translate(self, entry: dict[str, Any]) -> tuple[str, str, Any] | None:
        db, _, coll = str(entry["ns"]).partition(".")
        if entry["op"] == "c" or not coll:
            return None  # DDL: the snapshot's own catalog already says what exists
        target = self.rename(db, coll)
        if target is None:
            return None
        op = entry["op"]
        if op == "i":
            return (*target, InsertOne(entry["o"]))  # already there: skipped (see _apply)
        if op == "d":
            return (*target, DeleteOne({"_id": entry["o"]["_id"]}))
        if op == "u":
            return (*target, _update(entry))
        return None

    def _flush(self, pending: list[tuple[str, str, Any]]) -> None:
        """Apply in order; consecutive ops of one collection go as one ordered bulk write."""
        start = 0
        while start < len(pending):
            db, coll = pending[start][0], pending[start][1]
            end = start
            while end < len(pending) and pending[end][:2] == (db, coll):
                end += 1
            self._apply(db, coll, [p[2] for p in pending[start:end]])
            start = end
        pending.clear()

    def _apply(self, db: str, coll: str, ops: list[Any]) -> None:
        """One ordered bulk write; an insert of a document that is already there is skipped.

        The document is there because the dump read it after that insert: its state then
        is the dump's, and any later change follows in the window. (An insert, unlike an
        upsert by ``_id``, is cheap on FerretDB, which scans the collection for every
        write addressed by ``_id``.)"""
        start = 0
        while start < len(ops):
            try:
                self.client[db][coll].bulk_write(ops[start:], ordered=True)
            except BulkWriteError as exc:
                first = exc.details["writeErrors"][0]
                failed = start + int(first["index"])
                if first.get("code") != DUPLICATE_KEY or not isinstance(ops[failed], InsertOne):
                    raise
                self.stats.applied += failed - start
                self.stats.skipped += 1
                start = failed + 1
                continue
            self.stats.applied += len(ops) - start
            return


@dataclass
class DiffUpdate:
    """A MongoDB 5+ update: the diff of the document with this ``_id`` (see ``updatediff``)."""

    id: Any
    diff: dict[str, Any]


def _update(entry: dict[str, Any]) -> Any:
    change = dict(entry["o"])
    target = entry.get("o2") or {}
    version = change.pop("$v", None)
    whole = change.get("$set")
    if set(change) == {"$set"} and isinstance(whole, dict) and "_id" in whole:
        return ReplaceOne({"_id": target.get("_id", whole["_id"])}, whole, upsert=True)
    if version == 2 and "diff" in change:
        return DiffUpdate(target["_id"], change["diff"])
    if not any(k.startswith("$") for k in change):
        return ReplaceOne({"_id": target["_id"]}, change, upsert=True)
    return UpdateOne({"_id": target["_id"]}, change)
