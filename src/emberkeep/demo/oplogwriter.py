"""One writer whose model is known at every oplog point (README, "Point-in-time recovery").

``tests/test_pitr.py`` restores random points during a short run and ``bench/pitr.py`` does
the same over the issue's three minutes; both compare each restore with this writer's model
there, so the writer lives here where both can import it (``bench`` cannot import ``tests``).

One thread inserts, updates (``$set``, ``$unset``) and deletes, each write logged in order.
With one writer, the k-th entry of its collection in the oplog (``live_entries``) is the k-th
write, so the state at any oplog point is the model after the writes up to it
(``state_after``): reading the ``(T, I)`` back from the oplog pairs each write with its point.
"""

from __future__ import annotations

import random
from typing import Any

from bson import Timestamp
from pymongo import MongoClient


class Writer:
    """Writes to ``<db>.live`` and logs each write; ``model`` is the state after the last."""

    def __init__(self, client: MongoClient[Any], db: str, initial: int, seed: int) -> None:
        self.coll = client[db].live
        self.rng = random.Random(seed)
        self.model: dict[int, dict[str, Any]] = {i: {"_id": i, "v": 0} for i in range(initial)}
        self.coll.insert_many([dict(d) for d in self.model.values()])
        self.initial = {k: dict(v) for k, v in self.model.items()}
        self.log: list[tuple[str, int, dict[str, Any] | None]] = []
        self.next_id = initial

    def write(self, n: int) -> None:
        for _ in range(n):
            seq = len(self.log) + 1
            kind = self.rng.choice("iuxd") if len(self.model) > 5 else "i"
            if kind == "i":
                doc: dict[str, Any] = {"_id": self.next_id, "v": seq, "tag": "new"}
                self.next_id += 1
                self.coll.insert_one(dict(doc))
            elif kind in "ux":
                key = self.rng.choice(sorted(self.model))
                if kind == "x":
                    # $set too: an update that changes nothing is not logged
                    self.coll.update_one({"_id": key}, {"$set": {"v": seq}, "$unset": {"tag": 1}})
                    doc = {k: v for k, v in self.model[key].items() if k != "tag"} | {"v": seq}
                else:
                    self.coll.update_one({"_id": key}, {"$set": {"v": seq, "x": "y" * 20}})
                    doc = self.model[key] | {"v": seq, "x": "y" * 20}
            else:
                key = self.rng.choice(sorted(self.model))
                self.coll.delete_one({"_id": key})
                del self.model[key]
                self.log.append(("d", key, None))
                continue
            self.model[doc["_id"]] = doc
            self.log.append(("w", doc["_id"], dict(doc)))

    def state_after(self, k: int) -> dict[int, dict[str, Any]]:
        """The model after the first ``k`` writes (0: the initial documents)."""
        state = {key: dict(doc) for key, doc in self.initial.items()}
        for op, key, doc in self.log[:k]:
            if op == "d":
                del state[key]
            else:
                state[key] = dict(doc or {})
        return state


def live_entries(client: MongoClient[Any], db: str) -> list[Timestamp]:
    """The ``ts`` of every oplog entry of ``<db>.live``, in oplog order."""
    return [e["ts"] for e in client.local["oplog.rs"].find({"ns": f"{db}.live"}, {"ts": 1})]
