"""Continuous oplog archiving: slices, the chain they form, and reading them back.

A *slice* is the oplog entries with ``ts`` in ``(start, end]``, stored as one snapshot
(its tree: ``/oplog.bson``, the raw entries in order) of source ``<name>@oplog`` with the
header field ``extra.pitr`` (``SliceInfo``). Slices form a *chain*: slice ``n+1`` starts
where slice ``n`` ended, and the first slice of a chain starts at the ``oplog_end`` of the
base dump it extends. A restore to a point is a base dump (its own window replayed) plus
the entries of the chain in ``(base end, point]`` (README, "Point-in-time recovery").

Everything read back is checked before it is replayed: a chain whose links do not meet
(a gap, a slice forged or left out), slices out of order, or a slice whose entries are not
strictly increasing inside its bounds, are refused naming the slice.

Reading the server (``OplogTail``) follows what ``oplog.Oplog`` says of FerretDB: no sorted
reads (they scan the whole oplog), no ``lastWrite``, so entries are read in natural order
``ts > last`` and only up to a *settled* point, the end of the second before the server's
current one (an entry of the current second may still be written before one read
already). Where the server reports ``lastWrite`` (mongod), the majority point (else the
last write) is the settled point.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
from bson import Timestamp

from ...errors import EmberkeepError, IntegrityError, UsageError
from .connection import Client
from .optime import LAST_INC, OPLOG_COLL, OPLOG_DB, ts_from_json, ts_json

SLICE_SUFFIX = "@oplog"  # config names cannot hold "@": no source of the config clashes
SLICE_TYPE = "mongodb-oplog"
READ_BATCH = 1000


def slice_source(source: str) -> str:
    """The snapshot source name of ``source``'s oplog slices."""
    return f"{source}{SLICE_SUFFIX}"


def parse_op(text: str) -> Timestamp:
    """``T:I`` (seconds since the epoch, increment), as ``--at-op`` takes it."""
    t, sep, i = text.partition(":")
    try:
        if not sep:
            raise ValueError
        point = Timestamp(int(t), int(i))
    except (ValueError, TypeError, OverflowError):
        raise UsageError(
            f"--at-op {text!r}: give an oplog timestamp as T:I (seconds:increment), "
            "e.g. 1772373807:4, as `emberkeep oplog status` and restores print them"
        ) from None
    return point


def op_text(ts: Timestamp | None) -> str:
    return "-" if ts is None else f"{ts.time}:{ts.inc}"


def point_of_time(moment: datetime) -> Timestamp:
    """The last oplog point at or before ``moment`` (its whole second: oplog time is seconds)."""
    return Timestamp(int(moment.astimezone(UTC).timestamp()), LAST_INC)


def entry_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass
class SliceInfo:
    """``extra.pitr`` of a slice's header: where it sits in its chain."""

    chain: str  # id of the base snapshot the chain started from
    n: int  # 0 for the first slice of the chain
    start: Timestamp  # exclusive
    end: Timestamp  # inclusive
    entries: int
    end_digest: str | None = None  # of the raw entry at ``end``; None: no entry there
    gap: dict[str, Any] | None = None  # the first slice of a chain begun after a gap
    id: str = ""  # the slice's snapshot id (not stored: the header's own id)
    sealed: datetime | None = None  # the snapshot's time (not stored)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "chain": self.chain,
            "n": self.n,
            "start": ts_json(self.start),
            "end": ts_json(self.end),
            "entries": self.entries,
            "end_digest": self.end_digest,
        }
        if self.gap:
            data["gap"] = self.gap
        return data

    @classmethod
    def from_snapshot(cls, snapshot: Any) -> SliceInfo:
        """The slice a header describes; anything malformed is refused naming the slice."""
        who = f"oplog slice {snapshot.short_id}"
        data = snapshot.extra.get("pitr") if isinstance(snapshot.extra, dict) else None
        try:
            assert isinstance(data, dict)
            start, end = ts_from_json(data["start"]), ts_from_json(data["end"])
            assert start is not None and end is not None
            info = cls(
                chain=str(data["chain"]),
                n=int(data["n"]),
                start=start,
                end=end,
                entries=int(data["entries"]),
                end_digest=data.get("end_digest"),
                gap=data.get("gap"),
                id=snapshot.id,
                sealed=snapshot.time,
            )
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(who, f"its header does not describe a slice ({exc!r})") from None
        if info.end < info.start or info.n < 0 or info.entries < 0:
            raise IntegrityError(who, "its bounds are out of order (end before start): forged")
        return info


@dataclass
class Chain:
    """Consecutive slices of one chain, checked link by link (``chains``)."""

    base: str
    slices: list[SliceInfo] = field(default_factory=list)

    @property
    def start(self) -> Timestamp:
        return self.slices[0].start

    @property
    def end(self) -> Timestamp:
        return self.slices[-1].end

    @property
    def gap(self) -> dict[str, Any] | None:
        return self.slices[0].gap

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "slices": len(self.slices),
            "start": op_text(self.start),
            "end": op_text(self.end),
            "start_time": _iso_of(self.start),
            "end_time": _iso_of(self.end),
            **({"gap": self.gap} if self.gap else {}),
        }


def _iso_of(ts: Timestamp) -> str:
    return datetime.fromtimestamp(ts.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def chains(infos: Iterable[SliceInfo]) -> list[Chain]:
    """The slices grouped into chains, each checked: numbered on (from 0, or from the first
    that retention kept) without a hole or a repeat, each starting where the one before
    ended. Oldest chain first.

    A slice that breaks its chain's links (left out, forged, reordered) is refused by
    name: a restore through it could not be exact, and a silent gap is what PITR must
    never have."""
    by_chain: dict[str, list[SliceInfo]] = {}
    for info in infos:
        by_chain.setdefault(info.chain, []).append(info)
    result = []
    for base, group in by_chain.items():
        group.sort(key=lambda s: s.n)
        # a chain may begin after #0: retention removes the slices no kept base needs
        for expected, info in enumerate(group, start=group[0].n):
            who = f"oplog slice {info.id[:12]} (chain of base {base[:12]}, #{info.n})"
            if info.n != expected:
                what = "repeats" if info.n < expected else f"follows #{expected - 1}: a gap"
                raise IntegrityError(who, f"{what} in the chain (slice missing or forged)")
            before = group[expected - group[0].n - 1] if expected > group[0].n else None
            if before is not None and info.start != before.end:
                raise IntegrityError(
                    who,
                    f"starts at {op_text(info.start)}, but the slice before ends at "
                    f"{op_text(before.end)}: the chain is broken (forged)",
                )
        result.append(Chain(base, group))
    result.sort(key=lambda c: (c.start.time, c.start.inc))
    for older, newer in itertools.pairwise(result):
        if newer.start < older.end:
            raise IntegrityError(
                f"oplog chain of base {newer.base[:12]}",
                f"starts at {op_text(newer.start)}, inside the chain of base "
                f"{older.base[:12]} (which ends at {op_text(older.end)}): forged or overlapping",
            )
    return result


def slice_entries(raw_entries: Iterable[bytes], info: SliceInfo) -> Iterator[bytes]:
    """A slice's raw entries, each checked to lie in its bounds, in strictly increasing
    order, as many as its header says, the last one the entry its header names."""
    who = f"oplog slice {info.id[:12]}"
    last = info.start
    count = 0
    final: bytes | None = None
    for raw in raw_entries:
        ts = _ts_of(raw, who)
        if not last < ts <= info.end:
            where = "out of order" if ts <= last else "beyond the slice's end"
            raise IntegrityError(who, f"entry {op_text(ts)} is {where} (forged or damaged)")
        last, final = ts, raw
        count += 1
        yield raw
    if count != info.entries:
        raise IntegrityError(who, f"holds {count} entries, its header says {info.entries}")
    if info.end_digest and (final is None or entry_digest(final) != info.end_digest):
        raise IntegrityError(who, "its last entry is not the one its header names (forged)")


def _ts_of(raw: bytes, who: str) -> Timestamp:
    try:
        ts = bson.decode(raw, codec_options=_TS_ONLY).get("ts")
    except Exception as exc:
        raise IntegrityError(who, f"an entry is not BSON ({exc})") from None
    if not isinstance(ts, Timestamp):
        raise IntegrityError(who, "an entry has no timestamp (ts)")
    return ts


_TS_ONLY = bson.CodecOptions(document_class=dict)


# -- reading the server ----------------------------------------------------------------


class ChainBroken(EmberkeepError):
    """The server's oplog no longer holds the point the chain reached: a gap."""

    def __init__(self, message: str, oldest: Timestamp | None) -> None:
        super().__init__(message)
        self.oldest = oldest


@dataclass
class Position:
    """What one look at the server found: its settled point and its newest entry."""

    settled: Timestamp
    newest: Timestamp | None = None
    oldest: Timestamp | None = None


class OplogTail:
    """Reads a server's ``local.oplog.rs`` forward from a point (module docstring)."""

    def __init__(self, client: Client, who: str) -> None:
        self.client = client
        self.who = who
        self.coll = client[OPLOG_DB][OPLOG_COLL]
        if OPLOG_COLL not in client[OPLOG_DB].list_collection_names():
            raise UsageError(
                f"{who}: the server has no oplog (local.oplog.rs); point-in-time archiving "
                "needs a replica set (FerretDB: the capped local.oplog.rs and --repl-set-name)"
            )

    def settled(self) -> Timestamp:
        hello = self.client.admin.command("hello")
        last = hello.get("lastWrite") or {}
        for key in ("majorityOpTime", "opTime"):
            ts = (last.get(key) or {}).get("ts")
            if isinstance(ts, Timestamp):
                return ts
        local = hello["localTime"].replace(tzinfo=UTC)
        return Timestamp(max(int(local.timestamp()) - 1, 0), LAST_INC)

    def oldest(self) -> Timestamp | None:
        entry = next(iter(self.coll.find({}, {"ts": 1}).limit(1)), None)
        return None if entry is None else entry["ts"]

    def check_holds(self, point: Timestamp, digest: str | None) -> Timestamp | None:
        """Raise ``ChainBroken`` unless the oplog still holds everything after ``point``;
        where the chain knows the entry at ``point``, that entry must still be there, the
        same (gone or changed: rolled over, or rolled back after an election)."""
        oldest = self.oldest()
        if oldest is not None and oldest > point:
            raise ChainBroken(
                f"{self.who}: the oplog's oldest entry ({op_text(oldest)}) is newer than the "
                f"last one archived ({op_text(point)}): entries between were dropped (the "
                "oplog rolled over while the archiver was stopped or behind)",
                oldest,
            )
        if digest is not None:
            raw = next(iter(self.coll.find_raw_batches({"ts": point}).limit(1)), None)
            docs = bson.decode_all(raw) if raw else []
            if not docs or entry_digest(bson.encode(docs[0])) != digest:
                raise ChainBroken(
                    f"{self.who}: the last entry archived ({op_text(point)}) is no longer in "
                    "the oplog as it was (rolled over, or rolled back after an election)",
                    oldest,
                )
        return oldest

    def entries_after(self, point: Timestamp) -> Iterator[tuple[Timestamp, bytes]]:
        """Every entry with ``ts > point``, in the server's (natural) order, which must be
        strictly increasing: an entry older than one before it would be missed by the next
        read, so it is refused rather than skipped."""
        last = point
        for batch in self.coll.find_raw_batches({"ts": {"$gt": point}}, batch_size=READ_BATCH):
            for raw in _split(batch):
                ts = _ts_of(raw, f"{self.who}: local.oplog.rs")
                if ts <= last:
                    raise EmberkeepError(
                        f"{self.who}: the server's oplog is out of order ({op_text(ts)} after "
                        f"{op_text(last)}); it cannot be archived exactly"
                    )
                last = ts
                yield ts, raw


def _split(batch: bytes) -> Iterator[bytes]:
    from .record import split_documents

    docs, _used = split_documents(batch)
    yield from (bytes(d) for d in docs)


# -- reading slices back ------------------------------------------------------------------


@dataclass
class PointExtension:
    """The archived oplog a restore replays after its base: the entries of ``slices`` in
    ``(after, point]``, each slice checked (``slice_entries``) as it is read."""

    repo: Any  # repository.repo.Repository
    slices: list[tuple[SliceInfo, Any]]  # (slice, its /oplog.bson node or None: empty)
    after: Timestamp
    point: Timestamp

    @property
    def nodes(self) -> list[Any]:
        return [node for _info, node in self.slices if node is not None]

    def entries(self) -> Iterator[dict[str, Any]]:
        from .snapshotfiles import documents

        for info, node in self.slices:
            raw = documents(self.repo, node, f"oplog slice {info.id[:12]}") if node else iter(())
            for entry in slice_entries(raw, info):
                ts = _ts_of(entry, info.id)
                if ts <= self.after:
                    continue
                if ts > self.point:
                    break  # the rest of the slice is after the point (its order is checked)
                yield bson.decode(entry)
            else:
                continue
            return
