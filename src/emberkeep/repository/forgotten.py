"""Records of the snapshots a prune deleted, so other hosts tell a prune from an attack.

Each host remembers the snapshots it saw in a target and reports one that is gone
(``seen.py``; README, "How it keeps data safe"). A prune on another host deletes
snapshots legitimately, so before deleting any, prune writes ``forgotten/<time>-<random>``:
the ids it is about to delete, sealed with the writer key (``sealing.py``, kind
``forgotten``), created once and never replaced. A host that finds a remembered snapshot
gone forgets it silently when a record that verifies names it. The storage side cannot
write a record that verifies (it has no writer key): an unsealed or altered record is
reported by name and trusted for nothing, and a deleted record only makes a legitimate
prune look like a deletion again (the safe direction).

Records are bounded: each is small (``RECORD_MAX``), and prune deletes the records older
than ``KEEP`` by the time sealed in them; a host that has not looked at the target for that
long reports the snapshots pruned since as gone, and ``status --accept-missing`` accepts them.
A record may name a snapshot that was not deleted after all (under S3 Object Lock, or a
crash): it excuses only a snapshot that is gone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .. import clock
from ..errors import EmberkeepError, NotFound
from ..storage.base import ObjectLocked, Storage
from . import layout, sealing
from .repo import Repository

KIND = "forgotten"
KEEP = timedelta(days=90)
RECORD_MAX = 4 << 20  # about 60,000 snapshot ids: a larger object is refused unread
_ID = re.compile(r"[0-9a-f]{64}")


@dataclass
class Records:
    """What the target's records say: ``ids`` that verified; ``refused`` (name, why)."""

    ids: set[str] = field(default_factory=set)
    refused: list[tuple[str, str]] = field(default_factory=list)
    times: dict[str, datetime] = field(default_factory=dict)  # record name -> sealed time


def record(repo: Repository, ids: list[str], now: datetime) -> str | None:
    """Write the record of ``ids`` (before they are deleted); its name, None when empty."""
    if not ids:
        return None
    body = {
        "repository": repo.writer_key.repo_id,
        "time": clock.iso(now),
        "snapshots": sorted(ids),
    }
    name = f"{layout.FORGOTTEN}/{now.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(8).hex()}"
    repo.storage.put(name, sealing.seal(repo.writer_key, KIND, body))  # create-only
    return name


def load(repo: Repository) -> Records:
    """Every record of the target, each verified with the writer key; never raises for a
    record (each bad one is in ``refused``), only for a target that cannot be listed."""
    found = Records()
    for info in repo.storage.list(f"{layout.FORGOTTEN}/"):
        why = _read(repo, repo.storage, info.name, info.size, found)
        if why:
            found.refused.append((info.name, why))
    return found


def _read(repo: Repository, storage: Storage, name: str, size: int, found: Records) -> str | None:
    if size > RECORD_MAX:
        return f"{size} bytes, more than a record may hold ({RECORD_MAX}); not read"
    try:
        raw = storage.get(name)
        _, doc = repo.sealed_by(name, lambda key: sealing.unseal(key, KIND, raw, name))
    except NotFound:
        return None  # deleted since the listing (a prune expiring it)
    except EmberkeepError as exc:
        return str(exc)
    if not doc.sealed:
        return "not sealed by the repository's writer key: not trusted"
    body = doc.body
    ids = body.get("snapshots")
    if body.get("repository") != repo.writer_key.repo_id:
        return "a record of another repository"
    if not isinstance(ids, list) or not all(isinstance(i, str) and _ID.fullmatch(i) for i in ids):
        return "its snapshot list is malformed"
    try:
        when = clock.parse_time(str(body.get("time")))
    except (ValueError, EmberkeepError):
        return "its time is malformed"
    found.ids.update(ids)
    found.times[name] = when
    return None


def expire(repo: Repository, records: Records, now: datetime) -> list[str]:
    """Delete the records sealed more than ``KEEP`` before ``now``; the names deleted. One
    under S3 Object Lock stays until a prune after its retention."""
    deleted = []
    for name in sorted(n for n, when in records.times.items() if now - when > KEEP):
        try:
            repo.storage.delete(name)
        except ObjectLocked:
            continue
        deleted.append(name)
    return deleted
