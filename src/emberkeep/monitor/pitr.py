"""A PITR source's oplog archive as ``status`` and ``oplog status`` show it.

What the repository holds of the archive (its slices, chained; the point-in-time dumps
they extend) and what the archiver last saw of the server (``pitr/<source>.json`` in the
state dir, written by runner/pitr.py after every look) make its status: the window that
can be restored, the lag, the gaps. runner/pitr.py archives and restores to a point on
the same reading of the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import Timestamp

from .. import clock
from ..config import MongoSource, Pitr
from ..errors import EmberkeepError
from ..repository.snapshot import Snapshot, written_order
from ..site import Site
from ..sources.mongodb.optime import ts_from_json
from ..sources.mongodb.pitr import SLICE_TYPE, Chain, SliceInfo, chains, op_text, slice_source


def pitr_of(source: MongoSource) -> Pitr:
    return source.pitr or Pitr()


def slice_snapshots(snapshots: list[Snapshot], source: str) -> list[Snapshot]:
    name = slice_source(source)
    return [s for s in snapshots if s.source == name and s.source_type == SLICE_TYPE]


def archived_chains(snapshots: list[Snapshot], source: str) -> list[Chain]:
    return chains(SliceInfo.from_snapshot(s) for s in slice_snapshots(snapshots, source))


def base_points(snapshots: list[Snapshot], source: str) -> list[tuple[Timestamp, Snapshot]]:
    """Each point-in-time dump of ``source`` with its point (``oplog_end``), oldest first."""
    found = []
    for snap in snapshots:
        mongodb = snap.extra.get("mongodb") if snap.source == source else None
        if not isinstance(mongodb, dict) or not mongodb.get("point_in_time"):
            continue
        try:
            end = ts_from_json(mongodb.get("oplog_end"))
        except (KeyError, TypeError):
            continue
        if end is not None:
            found.append((end, snap))
    found.sort(key=lambda item: (item[0], written_order(item[1])))
    return found


def state_path(site: Site, source: str) -> Path:
    return site.state_dir / "pitr" / f"{source}.json"


def read_state(site: Site, source: str) -> dict[str, Any] | None:
    """The archiver's last look at the server; None when it never ran (or it is damaged)."""
    try:
        data = json.loads(state_path(site, source).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def covered_windows(snapshots: list[Snapshot], source: str) -> list[tuple[Timestamp, Timestamp]]:
    """Each chain's covered window: from the oldest base it extends to its end."""
    bases = base_points(snapshots, source)
    windows = []
    for chain in archived_chains(snapshots, source):
        linked = [p for p, _s in bases if chain.start <= p <= chain.end]
        if linked:
            windows.append((min(linked), chain.end))
    return windows


def op_time(ts: Timestamp) -> str:
    """An oplog point's wall time, as ``status`` and the restore to a point print it."""
    return clock.iso(datetime.fromtimestamp(ts.time, tz=UTC))


GAP_BREACH_FOR = 86400  # seconds a gap found stays a breach in status (a daily check sees it)


@dataclass
class PitrStatus:
    """A PITR source's archive, as ``status`` and ``oplog status`` show it."""

    source: str
    enabled: bool
    chains: list[Chain]
    windows: list[tuple[Timestamp, Timestamp]]
    state: dict[str, Any] | None
    max_lag_seconds: float
    now: datetime

    @property
    def lag_seconds(self) -> float | None:
        """Newest server entry to newest archived, as the archiver last saw them, plus the
        time since that look (an archiver that stopped falls behind as the clock runs)."""
        if not self.state:
            return None
        try:
            lag = float(self.state["lag_seconds"])
            polled = clock.parse_time(str(self.state["polled"]))
        except (KeyError, TypeError, ValueError, EmberkeepError):
            return None
        return lag + max(0.0, (self.now - polled).total_seconds())

    @property
    def gaps(self) -> list[dict[str, Any]]:
        """Gaps found less than ``GAP_BREACH_FOR`` ago (older ones are listed, not breached)."""
        return [g for g in self.all_gaps if g.get("age_seconds", 0) < GAP_BREACH_FOR]

    @property
    def all_gaps(self) -> list[dict[str, Any]]:
        found = []
        for chain in self.chains:
            gap = chain.gap
            if not isinstance(gap, dict):
                continue
            try:
                age = (self.now - clock.parse_time(str(gap.get("found")))).total_seconds()
            except EmberkeepError:
                age = 0.0
            after = ts_from_json(gap.get("after")) if isinstance(gap.get("after"), dict) else None
            found.append(
                {
                    "after": op_text(after),
                    "until": op_text(chain.start),
                    "found": gap.get("found"),
                    "age_seconds": round(age),
                    "new_chain": chain.base,
                }
            )
        return found

    @property
    def state_word(self) -> str:
        lag = self.lag_seconds
        if self.gaps:
            return "breached"
        if lag is None:
            return "unknown"
        return "ok" if lag <= self.max_lag_seconds else "late"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "enabled": self.enabled,
            "state": self.state_word,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 1),
            "max_lag_seconds": self.max_lag_seconds,
            "window": None
            if not self.windows
            else {
                "from": op_text(self.windows[-1][0]),
                "to": op_text(self.windows[-1][1]),
                "from_time": op_time(self.windows[-1][0]),
                "to_time": op_time(self.windows[-1][1]),
            },
            "windows": [{"from": op_text(a), "to": op_text(b)} for a, b in self.windows],
            "chains": [c.to_json() for c in self.chains],
            "slices": sum(len(c.slices) for c in self.chains),
            "gaps": self.all_gaps,
            "server": self.state,
        }

    def lines(self) -> list[str]:
        data = self.to_json()
        lag = data["lag_seconds"]
        out = [
            f"source {self.source}: oplog archive {data['state']}, lag "
            f"{'unknown' if lag is None else f'{lag:.0f}s'} (max {self.max_lag_seconds:.0f}s), "
            f"{data['slices']} slices in {len(self.chains)} chains"
        ]
        if data["window"]:
            w = data["window"]
            out.append(
                f"  restorable: {w['from_time']} ({w['from']}) to {w['to_time']} ({w['to']})"
            )
        for gap in data["gaps"]:
            out.append(
                f"  GAP: nothing archived between {gap['after']} and {gap['until']} (found "
                f"{gap['found']}); a new chain began from base {gap['new_chain'][:12]}"
            )
        return out


def status_of(site: Site, source: MongoSource, snapshots: list[Snapshot]) -> PitrStatus:
    pitr = pitr_of(source)
    return PitrStatus(
        source=source.name,
        enabled=pitr.enabled,
        chains=archived_chains(snapshots, source.name),
        windows=covered_windows(snapshots, source.name),
        state=read_state(site, source.name),
        max_lag_seconds=pitr.max_lag_delta.total_seconds(),
        now=clock.now(),
    )
