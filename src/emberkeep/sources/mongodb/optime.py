"""Where the oplog lives and how an oplog time ``(T, I)`` is written in our JSON records.

A leaf of its own: the dump's window reader (``oplog``) and the archiver (``pitr``) both
need these, and each uses the other's classes.
"""

from __future__ import annotations

from bson import Timestamp

OPLOG_DB = "local"
OPLOG_COLL = "oplog.rs"
LAST_INC = (1 << 32) - 1  # the largest increment: (T, LAST_INC) is the end of second T


def ts_json(ts: Timestamp | None) -> dict[str, int] | None:
    return None if ts is None else {"t": ts.time, "i": ts.inc}


def ts_from_json(data: dict[str, int] | None) -> Timestamp | None:
    return None if data is None else Timestamp(data["t"], data["i"])
