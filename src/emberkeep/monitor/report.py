"""The status report: what `emberkeep status`, `metrics` and the dashboard show.

Per **source** (``SourceStatus``):

- its last good backup (time, snapshot, target) and its age;
- the RPO state (``RpoState``), one of
  - ``ok``: no scheduled run has been missed and the age is within the RPO;
  - ``late``: the source's next scheduled run after its last good backup is more than
    ``[monitor] grace`` (default 1h) overdue, but the age is still within the RPO: a backup
    failed or did not run, and the RPO will be breached at ``breach_at`` unless one succeeds;
  - ``breached``: the age is more than the RPO (``objectives.rpo``).

  A source without a schedule is never late, only ok or breached; one without an RPO is
  never breached.
- its last drill and the RTO state: ``ok``, ``breached`` (the drill failed, or its restore
  took longer than ``objectives.rto``) or ``untested`` (an RTO and no drill yet); None when
  there is neither RTO nor drill;
- its next scheduled run, the last attempt, the anomalies of its last good backup, and for a
  mongodb source with PITR its oplog archive.

Per **target** (``TargetStatus``): reachable or not, snapshots held (per source), repository
size, free space, the last successful copy into it, the replication lag, low space and
snapshots dated in the future, and the age of its newest read-key epoch against ``[keys]
rotate_every`` (monitor/keyage.py).

The report's state is ``breach`` when any source's RPO or RTO is breached or a snapshot is
gone (the CLI exits 1), else ``warning`` when anything else deserves a look, else ``ok``.
How each value is found: monitor/status.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .. import clock
from ..durations import Duration
from ..journal import Entry


@dataclass
class RpoState:
    state: str  # ok | late | breached
    late_at: datetime | None = None
    breach_at: datetime | None = None


@dataclass
class SourceStatus:
    name: str
    type: str
    schedule: str | None
    objective_rpo: str | None
    objective_rto: Duration | None
    rpo: RpoState = field(default_factory=lambda: RpoState("ok"))
    last_backup: datetime | None = None
    last_snapshot: str | None = None
    last_backup_target: str | None = None
    age_seconds: float | None = None
    next_run: datetime | None = None
    last_run: Entry | None = None  # the last backup attempt
    drill: Entry | None = None
    rto_state: str | None = None
    rto_seconds: float | None = None
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    pitr: dict[str, Any] | None = None  # a mongodb source's oplog archive (monitor/pitr.py)

    def to_json(self) -> dict[str, Any]:
        last = None
        if self.last_backup is not None:
            last = {
                "time": clock.iso(self.last_backup),
                "snapshot": self.last_snapshot,
                "target": self.last_backup_target,
            }
        run = None
        if self.last_run is not None:
            run = {
                "time": iso_or_none(self.last_run.started),
                "outcome": self.last_run.outcome,
                "error": self.last_run.error,
            }
        drill = None
        if self.drill is not None:
            drill = {
                "time": iso_or_none(self.drill.started),
                "outcome": self.drill.outcome,
                "snapshot": self.drill.snapshot,
                "target": self.drill.target,
                "rto_seconds": self.rto_seconds,
                "rto_ok": self.drill.details.get("rto_ok"),
                "error": self.drill.error,
            }
        return {
            "name": self.name,
            "type": self.type,
            "schedule": self.schedule,
            "rpo": self.objective_rpo,
            "rto": self.objective_rto,
            "last_backup": last,
            "age_seconds": None if self.age_seconds is None else round(self.age_seconds, 3),
            "rpo_state": self.rpo.state,
            "late_at": iso_or_none(self.rpo.late_at),
            "breach_at": iso_or_none(self.rpo.breach_at),
            "next_run": iso_or_none(self.next_run),
            "last_run": run,
            "drill": drill,
            "rto_state": self.rto_state,
            "anomalies": self.anomalies,
            **({"pitr": self.pitr} if self.pitr is not None else {}),
        }


@dataclass
class TargetStatus:
    name: str
    url: str
    primary: bool
    copies: str
    reachable: bool = True
    error: str | None = None
    snapshots: int | None = None
    snapshots_by_source: dict[str, int] = field(default_factory=dict)
    repository_bytes: int | None = None
    free_bytes: int | None = None
    last_copy: datetime | None = None
    replication_lag_seconds: float | None = None
    missing_snapshots: int | None = None
    low_space: str | None = None
    future_snapshots: int | None = None  # dated more than a day after now
    key_epoch: dict[str, Any] | None = None  # the newest read-key epoch's age (keyage.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "primary": self.primary,
            "copies": self.copies,
            "reachable": self.reachable,
            "error": self.error,
            "snapshots": self.snapshots,
            "snapshots_by_source": self.snapshots_by_source,
            "repository_bytes": self.repository_bytes,
            "free_bytes": self.free_bytes,
            "last_copy": iso_or_none(self.last_copy),
            "replication_lag_seconds": self.replication_lag_seconds,
            "missing_snapshots": self.missing_snapshots,
            "low_space": self.low_space,
            "future_snapshots": self.future_snapshots,
            "key_epoch": self.key_epoch,
        }


@dataclass
class Report:
    site: str
    time: datetime
    sources: list[SourceStatus] = field(default_factory=list)
    targets: list[TargetStatus] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # snapshots deleted or rolled back
    accepted: dict[str, list[str]] = field(default_factory=dict)  # --accept-missing: target -> ids

    @property
    def state(self) -> str:
        return "breach" if self.breaches or self.gone else "warning" if self.warnings else "ok"

    @property
    def exit_code(self) -> int:
        return 1 if self.breaches or self.gone else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "time": clock.iso(self.time),
            "state": self.state,
            "sources": [s.to_json() for s in self.sources],
            "targets": [t.to_json() for t in self.targets],
            "breaches": self.breaches,
            "warnings": self.warnings,
            "snapshots_gone": self.gone,
            "snapshots_accepted_as_gone": self.accepted,
        }


def iso_or_none(moment: datetime | None) -> str | None:
    """``clock.iso`` of a time that may be unset."""
    return clock.iso(moment) if moment else None


def ago(delta: timedelta) -> str:
    """An age for a person: ``3d 4h``, ``2h 5m``, ``7m``, ``40s``."""
    seconds = int(max(delta.total_seconds(), 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"
