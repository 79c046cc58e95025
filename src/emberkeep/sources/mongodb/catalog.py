"""What a dump covers: databases, collections and views, with mongodump's metadata files.

``<db>/<coll>.metadata.json`` is written as mongodump writes it (mongo-tools
``mongodump/metadata_dump.go``): one canonical Extended JSON object with ``options``
(left out when there are none: ``omitempty``), ``indexes``, ``uuid`` (hex, no dashes;
absent for views), ``collectionName`` and ``type``, compact and not ASCII-escaped, so the
stock ``mongorestore`` reads an exported snapshot unchanged.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from bson import json_util
from bson.binary import Binary
from bson.json_util import CANONICAL_JSON_OPTIONS

from ...errors import EmberkeepError
from .connection import Client

SYSTEM_DATABASES = frozenset({"admin", "local", "config"})
PRELUDE = "prelude.json"  # mongodump --out's {ServerVersion, ToolVersion}, mongo-tools 100.12+


@dataclass
class CollectionInfo:
    db: str
    name: str
    kind: str  # "collection", "view" or "timeseries"
    options: dict[str, Any] = field(default_factory=dict)
    uuid: str | None = None
    indexes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"{self.db}.{self.name}"

    @property
    def has_documents(self) -> bool:
        return self.kind != "view"

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"options": self.options} if self.options else {}
        meta["indexes"] = self.indexes
        if self.uuid:
            meta["uuid"] = self.uuid
        meta["collectionName"] = self.name
        meta["type"] = self.kind
        return meta

    def metadata_json(self) -> bytes:
        text = json_util.dumps(
            self.metadata(),
            json_options=CANONICAL_JSON_OPTIONS,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return text.encode()


def parse_metadata(db: str, data: bytes) -> CollectionInfo:
    """A ``metadata.json`` back into a ``CollectionInfo`` (types kept: canonical ExtJSON)."""
    meta = json_util.loads(data.decode(), json_options=CANONICAL_JSON_OPTIONS)
    return CollectionInfo(
        db=db,
        name=meta["collectionName"],
        kind=meta.get("type", "collection"),
        options=dict(meta.get("options") or {}),
        uuid=meta.get("uuid"),
        indexes=[dict(i) for i in meta.get("indexes") or []],
    )


def select_databases(client: Client, wanted: list[str], who: str) -> list[str]:
    """The configured databases (every user database when none), each checked to exist."""
    present = client.list_database_names()
    if not wanted:
        return sorted(d for d in present if d not in SYSTEM_DATABASES)
    missing = [d for d in wanted if d not in present]
    if missing:
        have = ", ".join(sorted(d for d in present if d not in SYSTEM_DATABASES)) or "none"
        raise EmberkeepError(
            f"{who}: database {missing[0]!r} does not exist on the server (it has: {have}); "
            "fix `databases` in the config"
        )
    return list(dict.fromkeys(wanted))


def list_collections(client: Client, db: str, exclude: list[str]) -> list[CollectionInfo]:
    """Collections and views of ``db`` in name order; ``system.*`` and excluded ones left out.

    ``exclude`` holds shell patterns matched against ``db.collection``.
    """
    found = []
    for spec in client[db].list_collections():
        name = spec["name"]
        if name.startswith("system.") or _excluded(f"{db}.{name}", exclude):
            continue
        info = spec.get("info") or {}
        uuid = info.get("uuid")
        found.append(
            CollectionInfo(
                db=db,
                name=name,
                kind=spec.get("type", "collection"),
                options=dict(spec.get("options") or {}),
                uuid=uuid.hex() if isinstance(uuid, Binary | bytes) else None,
            )
        )
    found.sort(key=lambda c: c.name)
    for coll in found:
        if coll.has_documents:
            coll.indexes = [dict(i) for i in client[db][coll.name].list_indexes()]
    return found


def _excluded(ns: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(ns, p) for p in patterns)
