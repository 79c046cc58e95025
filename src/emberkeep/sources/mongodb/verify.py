"""Compare collections restored into a scratch database with what the dump recorded.

Per collection: the document count and the order-independent content digest of the raw
documents (``record.DocDigest``, recorded while the dump read them), the index
definitions and the collection options from ``metadata.json``. Views: their definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from .catalog import CollectionInfo
from .connection import Client
from .record import DocDigest, DumpRecord


@dataclass
class CollectionCheck:
    ns: str  # as in the snapshot
    restored_as: str
    documents: int
    ok: bool
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.ns,
            "restored_as": self.restored_as,
            "documents": self.documents,
            "ok": self.ok,
            "problem": self.problem,
        }


def verify_collection(
    client: Client, info: CollectionInfo, to_db: str, to_name: str, record: DumpRecord
) -> CollectionCheck:
    problem, documents = _problem(client, info, to_db, to_name, record)
    return CollectionCheck(info.ns, f"{to_db}.{to_name}", documents, problem is None, problem)


def _problem(
    client: Client, info: CollectionInfo, to_db: str, to_name: str, record: DumpRecord
) -> tuple[str | None, int]:
    specs = list(client[to_db].list_collections(filter={"name": to_name}))
    if not specs:
        return "missing after restore", 0
    options = dict(specs[0].get("options") or {})
    if options != info.options:
        return f"options {options} differ from the dump's {info.options}", 0
    if not info.has_documents:
        return None, 0
    recorded = record.collection(info.db, info.name)
    digest = DocDigest()
    for batch in client[to_db][to_name].find_raw_batches():
        digest.add(batch)
    if recorded is None:
        return "not in the dump record", digest.count
    if digest.count != recorded.count:
        return f"{digest.count} documents restored, the dump read {recorded.count}", digest.count
    if digest.hexdigest != recorded.digest:
        return (
            "document content differs from what the dump read (digest "
            f"{digest.hexdigest} != {recorded.digest}): a document was altered",
            digest.count,
        )
    got = _indexes(client[to_db][to_name].list_indexes())
    want = _indexes(info.indexes)
    if got != want:
        first = next(n for n in sorted(set(got) | set(want)) if got.get(n) != want.get(n))
        return f"index {first} differs from the dump's", digest.count
    return None, digest.count


def _indexes(indexes: Any) -> dict[str, str]:
    """Index name -> its definition without the fields a server fills in itself."""
    return {
        i["name"]: json_util.dumps(
            {k: v for k, v in sorted(dict(i).items()) if k not in ("v", "ns")},
            json_options=CANONICAL_JSON_OPTIONS,
        )
        for i in indexes
    }
