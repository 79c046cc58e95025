"""The oplog's command entries (``op: "c"``) on the replay path: transactions and DDL.

``Transactions`` unpacks a transaction's ``applyOps`` entries into the operations it commits;
``Commands`` replays the DDL under the restore's names. The replay (``oplog.Replayer``)
unpacks transactions in a dump's own window and in the archived slices after it, and replays
DDL only in those slices (sources/mongodb/pitr.py); what it cannot replay exactly is refused
(``UnsupportedEntry``) naming the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bson
from bson import Timestamp

from ...errors import EmberkeepError
from .connection import Client
from .pitr import op_text


class UnsupportedEntry(EmberkeepError):
    """An oplog entry a point-in-time restore cannot replay exactly."""


def refuse(entry: Mapping[str, Any], why: str) -> UnsupportedEntry:
    ts = entry.get("ts")
    name = next(iter(entry.get("o") or {}), "?")
    return UnsupportedEntry(
        f"oplog entry {op_text(ts) if isinstance(ts, Timestamp) else '?'} "
        f"({entry.get('op')} {name} on {entry.get('ns')}): {why}; restore to a point before "
        "it (--at-op), or restore the base snapshot and apply the rest by hand"
    )


class Transactions:
    """Unpacks transactions into their operations, committed ones only.

    MongoDB logs a transaction as one ``applyOps`` command entry on ``admin.$cmd`` (small
    ones), or several: each but the last with ``partialTxn: true``, linked by
    ``prevOpTime``, the last without it (the commit). A prepared transaction ends with an
    entry ``commitTransaction`` or ``abortTransaction``. Operations become visible at the
    commit entry, so they are held until it; a transaction whose commit is not reached
    by the point restored to (aborted, or committed later) is left out, and counted.
    """

    def __init__(self) -> None:
        self.open: dict[Any, list[dict[str, Any]]] = {}
        self.committed = 0

    @staticmethod
    def _key(entry: Mapping[str, Any]) -> Any:
        lsid = entry.get("lsid")
        return (bson.encode(lsid).hex() if isinstance(lsid, Mapping) else None,
                entry.get("txnNumber"))  # fmt: skip

    def expand(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """The operations ``entry`` makes visible now (none, while a transaction is open)."""
        o = entry.get("o") or {}
        if entry.get("op") != "c" or not isinstance(o, Mapping):
            return [entry]
        key = self._key(entry)
        if "applyOps" in o:
            ops = [dict(op, ts=entry.get("ts")) for op in o["applyOps"]]
            if o.get("partialTxn") or o.get("prepare"):
                if key not in self.open and _linked(entry):
                    raise refuse(entry, "it continues a transaction whose first entries are "
                                 "not in the archive (before the base dump's window)")  # fmt: skip
                self.open.setdefault(key, []).extend(ops)
                return []
            if _linked(entry) and key not in self.open:
                raise refuse(entry, "it commits a transaction whose first entries are not "
                             "in the archive (before the base dump's window)")  # fmt: skip
            self.committed += 1
            return [*self.open.pop(key, []), *ops]
        if "commitTransaction" in o:
            if key not in self.open:
                raise refuse(entry, "it commits a prepared transaction not in the archive")
            self.committed += 1
            return self.open.pop(key)
        if "abortTransaction" in o:
            self.open.pop(key, None)
            return []
        return [entry]

    @property
    def left_open(self) -> int:
        return len(self.open)


def _linked(entry: Mapping[str, Any]) -> bool:
    """Whether the entry names an earlier entry of its transaction (``prevOpTime``)."""
    prev = entry.get("prevOpTime")
    ts = prev.get("ts") if isinstance(prev, Mapping) else None
    return isinstance(ts, Timestamp) and ts != Timestamp(0, 0)


NAMESPACE_EXISTS = 48
NAMESPACE_NOT_FOUND = 26
INDEX_NOT_FOUND = 27
SKIPPED_COMMANDS = frozenset({"startIndexBuild", "abortIndexBuild"})  # commitIndexBuild builds


class Commands:
    """The DDL of MongoDB's oplog (``op: "c"`` on ``<db>.$cmd``), replayed on the target under
    the restore's names: ``create``, ``drop``, ``renameCollection``, ``createIndexes`` (and a
    two-phase build's ``commitIndexBuild``), ``dropIndexes``, ``dropDatabase``. Any other
    command (``collMod``, ``convertToCapped``…), or one this selection cannot express (a
    rename into or out of it), is refused by name (``UnsupportedEntry``)."""

    def __init__(self, client: Client, rename: Any, whole_db: Any) -> None:
        self.client = client
        self.rename = rename
        self.whole_db = whole_db

    def apply(self, entry: Mapping[str, Any]) -> bool:
        """True when the command changed the target; False when it is not for it."""
        from pymongo.errors import OperationFailure

        db, _, rest = str(entry.get("ns", "")).partition(".")
        o = entry.get("o") or {}
        name = next(iter(o), "")
        if rest != "$cmd" or not isinstance(o, Mapping):
            raise refuse(entry, "a command entry on a namespace that is not <db>.$cmd")
        if name in SKIPPED_COMMANDS:
            return False
        handler = getattr(self, f"_{name}", None)
        if handler is None:
            raise refuse(entry, f"`{name}` cannot be replayed exactly by this restore")
        try:
            return bool(handler(entry, db, o))
        except OperationFailure as exc:
            raise refuse(entry, f"the target refused it ({exc})") from None

    def _target(self, db: str, coll: Any) -> tuple[str, str] | None:
        return self.rename(db, str(coll))

    def _create(self, entry: Mapping[str, Any], db: str, o: Mapping[str, Any]) -> bool:
        from bson.son import SON
        from pymongo.errors import OperationFailure

        target = self._target(db, o["create"])
        if target is None:
            return False
        options = [(k, v) for k, v in o.items() if k not in ("create", "idIndex")]
        try:
            self.client[target[0]].command(SON([("create", target[1]), *options]))
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise
        return True

    def _drop(self, entry: Mapping[str, Any], db: str, o: Mapping[str, Any]) -> bool:
        target = self._target(db, o["drop"])
        if target is None:
            return False
        self.client[target[0]].drop_collection(target[1])
        return True

    def _renameCollection(self, entry: Mapping[str, Any], db: str, o: Mapping[str, Any]) -> bool:
        old_db, _, old = str(o["renameCollection"]).partition(".")
        new_db, _, new = str(o.get("to", "")).partition(".")
        source, target = self.rename(old_db, old), self.rename(new_db, new)
        if source is None and target is None:
            return False
        if source is None or target is None:
            raise refuse(entry, "it renames a collection into or out of what this restore "
                         "selects")  # fmt: skip
        self.client.admin.command(
            "renameCollection",
            f"{source[0]}.{source[1]}",
            to=f"{target[0]}.{target[1]}",
            dropTarget=bool(o.get("dropTarget")),
        )
        return True

    def _createIndexes(self, entry: Mapping[str, Any], db: str, o: Mapping[str, Any]) -> bool:
        spec = {k: v for k, v in o.items() if k not in ("createIndexes", "v", "ns")}
        return self._build(db, o["createIndexes"], [spec])

    def _commitIndexBuild(self, entry: Mapping[str, Any], db: str, o: Mapping[str, Any]) -> bool:
        specs = [{k: v for k, v in s.items() if k not in ("v", "ns")} for s in o["indexes"]]
        return self._build(db, o["commitIndexBuild"], specs)

    def _build(self, db: str, coll: Any, specs: list[dict[str, Any]]) -> bool:
        from bson.son import SON

        target = self._target(db, coll)
        if target is None:
            return False
        self.client[target[0]].command(SON([("createIndexes", target[1]), ("indexes", specs)]))
        return True

    def _dropIndexes(self, entry: Mapping[str, Any], db: str, o: Mapping[str, Any]) -> bool:
        from pymongo.errors import OperationFailure

        target = self._target(db, o["dropIndexes"])
        if target is None:
            return False
        try:
            self.client[target[0]].command("dropIndexes", target[1], index=o["index"])
        except OperationFailure as exc:
            if exc.code not in (NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND):
                raise
        return True

    def _dropDatabase(self, entry: Mapping[str, Any], db: str, o: Mapping[str, Any]) -> bool:
        selected, target = self.whole_db(db)
        if not selected:
            return False  # not a database this restore selects
        if target is None:
            raise refuse(entry, "it drops a whole database, which this restore takes only "
                         "in part (--collection or a collection's --ns-from)")  # fmt: skip
        self.client.drop_database(target)
        return True
