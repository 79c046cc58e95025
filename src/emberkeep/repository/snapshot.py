"""Snapshot headers: what a snapshot is, readable with the writer key.

The header holds enough for listing, retention, prune and status on a write-only host
(source, time, host, tags, sizes, every blob id referenced). The snapshot's body, the
tree of names and metadata, lives in tree blobs that only an identity can read.

Order. A header's ``time`` is the clock of the host that wrote it, which may be wrong
(stepped back, or a day ahead). Its ``seq`` is the repository's count of snapshots written:
one more than the highest the writer saw in the target or remembers from any target
(README, How it keeps data safe). Snapshots are ordered by ``seq`` (``written_order``), so
``latest`` is the snapshot written last whatever the clocks said; snapshots of earlier
versions, without one, come first, by time. Headers are sealed with the index key, so only
a writer can choose a ``seq``. A snapshot dated more than ``FUTURE_TOLERANCE`` after now
(``is_future``) counts for no RPO and no retention rule until then.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

import zstandard

from .. import crypto
from ..clock import iso, parse_time
from ..errors import IntegrityError, UsageError
from .layout import snapshot_object

SNAPSHOT_AAD = b"emberkeep snapshot"
ID = 32
MIN_ID_PREFIX = 4  # a shorter prefix is more likely a typo than a choice
FUTURE_TOLERANCE = timedelta(days=1)  # clocks further apart than this are wrong


@dataclass
class Snapshot:
    source: str
    source_type: str
    time: datetime
    host: str
    tree: bytes  # id of the root tree blob
    blobs: bytes  # every referenced blob id, concatenated, sorted, unique
    tags: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific (e.g. oplog point)
    seq: int | None = None  # the order it was written in (module docstring); None: older
    id: str = ""  # SHA-256 of the sealed object; set when saved or loaded

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def blob_ids(self) -> list[bytes]:
        return [self.blobs[i : i + ID] for i in range(0, len(self.blobs), ID)]

    def to_json(self, target: str | None = None) -> dict[str, Any]:
        data = {
            "id": self.id,
            "short_id": self.short_id,
            "time": iso(self.time),
            "seq": self.seq,
            "source": self.source,
            "source_type": self.source_type,
            "host": self.host,
            "tags": self.tags,
            "paths": self.paths,
            "summary": self.summary,
        }
        if target is not None:
            data["target"] = target
        if self.extra:
            data["extra"] = self.extra
        return data


@dataclass(frozen=True)
class Stamp:
    """What the order of a snapshot depends on (``written_order`` takes either)."""

    id: str
    time: datetime
    seq: int | None

    @classmethod
    def of(cls, snapshot: Snapshot) -> Stamp:
        return cls(snapshot.id, snapshot.time, snapshot.seq)


@dataclass
class SeenBefore:
    """What a writing host already knows of a target's snapshots (seen.py): a backup
    reads only the headers of the others. ``floor`` is the highest seq it saw in any
    target, ``newest`` the newest snapshot of each source it saw in this one."""

    ids: frozenset[str] = frozenset()
    floor: int = 0
    newest: dict[str, Stamp] = field(default_factory=dict)


def written_order(snapshot: Snapshot | Stamp) -> tuple[bool, int, datetime, str]:
    """Sort key: the order snapshots were written in (module docstring)."""
    return (snapshot.seq is not None, snapshot.seq or 0, snapshot.time, snapshot.id)


def is_future(snapshot: Snapshot, now: datetime) -> bool:
    """Whether ``snapshot`` is dated more than ``FUTURE_TOLERANCE`` after ``now``."""
    return snapshot.time > now + FUTURE_TOLERANCE


def next_sequence(snapshots: list[Snapshot], floor: int = 0) -> int:
    """The ``seq`` of a snapshot written now: one more than any seen (``floor`` included)."""
    return max([floor, *(s.seq for s in snapshots if s.seq is not None)]) + 1


def encode_snapshot(snapshot: Snapshot, index_key: bytes) -> tuple[str, bytes]:
    body = asdict(snapshot)
    body.pop("id")
    body["time"] = snapshot.time.isoformat()
    body["tree"] = snapshot.tree.hex()
    body["blobs"] = snapshot.blobs.hex()
    plain = zstandard.ZstdCompressor(level=3).compress(json.dumps(body).encode())
    sealed = crypto.encrypt(index_key, SNAPSHOT_AAD, plain)
    digest = hashlib.sha256(sealed).hexdigest()
    snapshot.id = digest
    return snapshot_object(digest), sealed


def decode_snapshot(name: str, sealed: bytes, index_key: bytes) -> Snapshot:
    digest = name.rsplit("/", 1)[-1]
    if hashlib.sha256(sealed).hexdigest() != digest:
        raise IntegrityError(name, "content does not match its name (SHA-256 differs): damaged")
    try:
        plain = crypto.decrypt(index_key, SNAPSHOT_AAD, sealed)
        body = json.loads(zstandard.ZstdDecompressor().decompress(plain))
    except (crypto.InvalidTag, zstandard.ZstdError, ValueError) as exc:
        raise IntegrityError(name, "snapshot fails authentication (damaged or wrong key)") from exc
    try:
        return Snapshot(**_fields_of(body), id=digest)
    except (KeyError, TypeError, ValueError, UsageError) as exc:
        why = f"{type(exc).__name__}: {exc}"[:200]
        raise IntegrityError(
            name, f"a snapshot header with a missing or malformed field ({why})"
        ) from exc


def _fields_of(body: Any) -> dict[str, Any]:
    """The fields of a header, each of the type a reader relies on. Members this version
    does not know (a newer writer's) are left out: the snapshot lists and restores as this
    version understands it, and a copy (replicate) keeps the stored bytes as they are."""
    if not isinstance(body, dict):
        raise TypeError("not a JSON object")
    found = {k: v for k, v in body.items() if k in _KNOWN}
    for key in ("source", "source_type", "host", "time", "tree", "blobs"):
        if not isinstance(found[key], str):
            raise TypeError(f"{key} is not a string")
    for key in ("tags", "paths"):
        value = found.setdefault(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{key} is not a list of strings")
    for key in ("summary", "extra"):
        if not isinstance(found.setdefault(key, {}), dict):
            raise TypeError(f"{key} is not an object")
    found["time"] = parse_time(found["time"])
    found["tree"] = bytes.fromhex(found["tree"])
    found["blobs"] = bytes.fromhex(found["blobs"])
    if len(found["tree"]) != ID or len(found["blobs"]) % ID:
        raise ValueError("tree or blobs is not a list of blob ids")
    if not isinstance(found.get("seq"), int) or isinstance(found.get("seq"), bool):
        found["seq"] = None
    return found


_KNOWN = {f.name for f in fields(Snapshot)} - {"id"}


def by_id_prefix(snapshots: list[Snapshot], prefix: str, where: str, other: str = "") -> Snapshot:
    """The one snapshot whose id starts with ``prefix`` (at least ``MIN_ID_PREFIX`` long);
    ``other`` names what else the user may give instead (e.g. "`latest`")."""
    matches = [s for s in snapshots if s.id.startswith(prefix.lower())]
    if len(prefix) < MIN_ID_PREFIX or not matches:
        raise UsageError(
            f"no snapshot {prefix!r} in {where}; give an id (at least {MIN_ID_PREFIX} "
            f"characters) from `emberkeep snapshots`{f', or {other}' if other else ''}"
        )
    if len(matches) > 1:
        raise UsageError(f"snapshot id {prefix!r} is ambiguous; give more characters")
    return matches[0]
