"""`emberkeep status`: are we protected right now?

Per **source**:

- its last good backup: the newest snapshot of the source in any reachable target (or the
  newest successful backup in the journal, if later), and its age;
- the RPO state, one of
  - ``ok``: no scheduled run has been missed and the age is within the RPO;
  - ``late``: the source's next scheduled run after its last good backup is more than
    ``[monitor] grace`` (default 1h) overdue, but the age is still within the RPO: a backup
    failed or did not run, and the RPO will be breached at ``breach_at`` unless one succeeds;
  - ``breached``: the age is more than the RPO (``objectives.rpo``).

  A source without a schedule is never late, only ok or breached; one without an RPO is
  never breached. A source with no backup yet counts from when monitoring first saw it
  (journal): a new source is not breached before its first run could have happened.
- its last drill (the newest ``drill`` row of the journal) and the RTO state: ``ok``,
  ``breached`` (the drill failed, or its restore took longer than ``objectives.rto``) or
  ``untested`` (an RTO and no drill yet); None when there is neither RTO nor drill;
- its next scheduled run, the last attempt when it failed, and the anomalies of its last
  good backup (monitor/anomalies.py).

Per **target**: reachable or not, snapshots held (per source), repository size (every
object listed), free space (local and SFTP; None for S3), the last successful copy into it
(a backup for the primary, a replicate for the others), and for the other targets the
replication lag: how long the oldest primary snapshot that the target should hold (its
``copies`` rule and retention) has been missing; low space (monitor/anomalies.py).

Snapshots dated more than a day after now (``is_future``: a wrong clock or a forged header)
count for no RPO until then, and are warned about. A snapshot this host wrote or saw that is
gone from a target, or fewer snapshots than it saw (deletion, or the target rolled back:
seen.py), is listed under ``snapshots_gone``.

The report's state is ``breach`` when any source's RPO or RTO is breached or a snapshot is
gone (the CLI exits 1), else ``warning`` when anything else deserves a look, else ``ok``.
``send_alerts`` raises or resolves the ``rpo``, ``rto`` and ``low_space`` alerts from a report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from .. import clock, seen, ui
from ..config import Source, Target
from ..durations import Duration, format_duration
from ..errors import error_text
from ..journal import Entry, Journal
from ..policy.schedule import next_time
from ..redact import redact_url
from ..repository.snapshot import FUTURE_TOLERANCE, Snapshot, is_future
from ..site import Site
from . import anomalies
from .notify import Alert, Notifier

FINISHED = ("ok", "failed", "interrupted")


@dataclass
class RpoState:
    state: str  # ok | late | breached
    late_at: datetime | None = None
    breach_at: datetime | None = None


def rpo_state(
    last: datetime,
    now: datetime,
    *,
    schedule: str | None,
    rpo: timedelta | None,
    grace: timedelta,
    zone: str = "UTC",
) -> RpoState:
    """The RPO state of a source whose last good backup is ``last`` (module docstring),
    or that has none and was first seen at ``last``."""
    late_at = next_time(schedule, last, zone) + grace if schedule else None
    breach_at = last + rpo if rpo is not None else None
    if breach_at is not None and now > breach_at:
        state = "breached"
    elif late_at is not None and now > late_at:
        state = "late"
    else:
        state = "ok"
    return RpoState(state, late_at, breach_at)


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
                "time": _iso(self.last_run.started),
                "outcome": self.last_run.outcome,
                "error": self.last_run.error,
            }
        drill = None
        if self.drill is not None:
            drill = {
                "time": _iso(self.drill.started),
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
            "late_at": _iso(self.rpo.late_at),
            "breach_at": _iso(self.rpo.breach_at),
            "next_run": _iso(self.next_run),
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
            "last_copy": _iso(self.last_copy),
            "replication_lag_seconds": self.replication_lag_seconds,
            "missing_snapshots": self.missing_snapshots,
            "low_space": self.low_space,
            "future_snapshots": self.future_snapshots,
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


def _iso(moment: datetime | None) -> str | None:
    return clock.iso(moment) if moment else None


# -- collecting --------------------------------------------------------------------------


@dataclass
class _Held:
    """What one reachable target holds."""

    snapshots: list[Snapshot]
    size: int
    free: int | None
    gone: list[str] = field(default_factory=list)  # what the host's memory misses there
    notes: list[str] = field(default_factory=list)  # on that memory itself
    accepted: list[str] = field(default_factory=list)  # gone, and accepted (--accept-missing)


class KindStatus(Protocol):
    """What a source's kind adds to its status (runner/kinds; the layers above hand the
    kinds down, since this layer cannot know them)."""

    def add_status(
        self, site: Site, source: Source, snapshots: list[Snapshot], status: SourceStatus,
        report: Report,
    ) -> None: ...  # fmt: skip


def collect(
    site: Site, kind_for: Callable[[Source], KindStatus], *, accept_missing: bool = False
) -> Report:
    """The status of every source and target now (module docstring); ``kind_for``: the
    kind of a source (``runner.kinds.kind_for``), asked what it adds.

    ``accept_missing``: the snapshots gone from a target are accepted as deleted on
    purpose: listed in ``accepted`` and forgotten by the host (seen.py)."""
    now = clock.now()
    config = site.config
    report = Report(config.site.name, now)
    with Journal.open(site) as journal:
        held: dict[str, _Held] = {}
        for target in config.targets:
            status = TargetStatus(
                target.name,
                redact_url(target.url),
                primary=target is config.targets[0],
                copies=target.copies,
            )
            report.targets.append(status)
            try:
                held[target.name] = _look(site, target.name, accept_missing)
                if held[target.name].accepted:
                    report.accepted[target.name] = held[target.name].accepted
            except Exception as exc:
                status.reachable, status.error = False, error_text(exc, target.name)
                report.warnings.append(f"{status.error} (status cannot see it)")
        if not config.sources:
            report.warnings.append(
                f"{config.path} defines no [[sources]]: nothing is backed up; add one"
            )
        for source in config.sources:
            report.sources.append(
                _source(site, journal, source, kind_for(source), held, now, report)
            )
        for target, status in zip(config.targets, report.targets, strict=True):
            _target(site, journal, target, status, held, now, report)
    return report


def _look(site: Site, target: str, accept_missing: bool = False) -> _Held:
    repo = site.repository(target)
    try:
        snapshots = repo.snapshots()
        size = sum(info.size for info in repo.storage.list(""))
        free = repo.storage.free_bytes()
        found = seen.look(site, target, repo, snapshots, accept=accept_missing)
    finally:
        close = getattr(repo.storage, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
    return _Held(snapshots, size, free, found.gone, found.notes, found.accepted)


def _last_finished(journal: Journal, kind: str, **filters: Any) -> Entry | None:
    for entry in journal.entries(kind=kind, newest_first=True, limit=20, **filters):
        if entry.outcome in FINISHED:
            return entry
    return None


def _source(
    site: Site,
    journal: Journal,
    source: Source,
    kind: KindStatus,
    held: dict[str, _Held],
    now: datetime,
    report: Report,
) -> SourceStatus:
    monitor = site.config.monitor
    objectives = source.objectives
    rpo = objectives.rpo_delta if objectives else None
    rto = objectives.rto_delta if objectives else None
    status = SourceStatus(
        source.name,
        source.type,
        source.schedule,
        objective_rpo=objectives.rpo if objectives else None,
        objective_rto=objectives.rto if objectives else None,
    )
    for target, what in held.items():
        for snap in what.snapshots:
            if (
                snap.source == source.name
                and not is_future(snap, now)
                and (status.last_backup is None or snap.time > status.last_backup)
            ):
                status.last_backup, status.last_snapshot = snap.time, snap.id
                status.last_backup_target = target
    good = journal.last("backup", source=source.name, outcome="ok")
    if (
        good is not None
        and good.started
        and good.started <= now + FUTURE_TOLERANCE
        and (status.last_backup is None or good.started > status.last_backup)
    ):
        status.last_backup, status.last_snapshot = good.started, good.snapshot
        status.last_backup_target = good.target
    primary = site.config.targets[0].name
    if primary in held:
        kind.add_status(site, source, held[primary].snapshots, status, report)
    if status.last_backup is not None:
        status.age_seconds = max((now - status.last_backup).total_seconds(), 0.0)
    status.rpo = rpo_state(
        status.last_backup or journal.first_seen(source.name),
        now,
        schedule=source.schedule,
        rpo=rpo,
        grace=monitor.grace.delta,
        zone=site.config.site.timezone,
    )
    if source.schedule:
        status.next_run = next_time(source.schedule, now, site.config.site.timezone)
    status.last_run = _last_finished(journal, "backup", source=source.name)
    if good is not None:
        status.anomalies = list(good.details.get("anomalies", []))
    _drill(journal, source.name, rto, status)
    _source_findings(status, now, report)
    return status


def _drill(journal: Journal, source: str, rto: timedelta | None, status: SourceStatus) -> None:
    """The RTO state from the last drill. A drill that never restored anything (it failed
    before: no identity on this host, the target unreachable)
    measured nothing (``details["ran"]`` false, ``monitor.jobs``): the RTO is "untested",
    never "breached" (the warning says why)."""
    drill = _last_finished(journal, "drill", source=source)
    status.drill = drill
    if drill is None or drill.details.get("ran") is False:
        status.rto_state = "untested" if rto is not None else None
        return
    seconds = drill.details.get("rto_seconds", drill.seconds)
    status.rto_seconds = float(seconds) if seconds is not None else None
    rto_ok = drill.details.get("rto_ok")
    if rto_ok is None and rto is not None and status.rto_seconds is not None:
        rto_ok = status.rto_seconds <= rto.total_seconds()
        drill.details["rto_ok"] = rto_ok
    if drill.outcome != "ok" or rto_ok is False:
        status.rto_state = "breached"
    else:
        status.rto_state = "ok"


def _source_findings(status: SourceStatus, now: datetime, report: Report) -> None:
    name, state = status.name, status.rpo
    last = status.last_backup
    if state.state == "breached":
        if last is None:
            report.breaches.append(
                f"source {name}: RPO {status.objective_rpo} breached: no backup yet, "
                f"{ago(now - (state.breach_at or now))} past the RPO"
            )
        else:
            report.breaches.append(
                f"source {name}: RPO {status.objective_rpo} breached: the last good backup is "
                f"{ago(now - last)} old ({clock.iso(last)})"
            )
    elif state.state == "late":
        if last is None:
            report.warnings.append(
                f"source {name}: no backup yet, and a scheduled run was due by "
                f"{_iso(state.late_at)}"
            )
        else:
            # No RPO, no breach time: only a source with one is told when it breaches.
            when = (
                f"; the RPO is breached at {clock.iso(state.breach_at)}" if state.breach_at else ""
            )
            report.warnings.append(
                f"source {name}: late: no good backup since {clock.iso(last)} "
                f"({ago(now - last)} ago), a scheduled run was due by "
                f"{_iso(state.late_at)}{when}"
            )
    elif last is None:
        report.warnings.append(f"source {name}: no backup yet")
    run = status.last_run
    if run is not None and run.outcome != "ok" and (last is None or (run.started or last) > last):
        report.warnings.append(
            f"source {name}: the last backup, at {_iso(run.started)}, {run.outcome}: {run.error}"
        )
    if run is not None and run.outcome == "ok" and run.details.get("unreadable"):
        report.warnings.append(
            f"source {name}: the last backup, at {_iso(run.started)}, is incomplete: "
            f"{run.details['unreadable']} files or directories could not be read (see "
            "`emberkeep log --json`); give emberkeep read access or exclude them"
        )
    for anomaly in status.anomalies:
        report.warnings.append(f"anomaly in the last backup: {anomaly.get('text', anomaly)}")
    drill = status.drill
    if status.rto_state == "breached" and drill is not None:
        if drill.outcome != "ok":
            report.breaches.append(
                f"source {name}: RTO unproven: the last drill, at {_iso(drill.started)}, "
                f"{drill.outcome}: {drill.error}"
            )
        else:
            report.breaches.append(
                f"source {name}: RTO {status.objective_rto} breached: the last drill, at "
                f"{_iso(drill.started)}, took {status.rto_seconds:.1f}s to restore"
            )
    elif status.rto_state == "untested" and drill is not None:
        report.warnings.append(
            f"source {name}: RTO {status.objective_rto} untested: the last drill, at "
            f"{_iso(drill.started)}, did not run: {drill.error}"
        )
    elif status.rto_state == "untested":
        report.warnings.append(
            f"source {name}: RTO {status.objective_rto} untested: no drill yet (run "
            f"`emberkeep drill {name}`)"
        )


def _target(
    site: Site,
    journal: Journal,
    target: Target,
    status: TargetStatus,
    held: dict[str, _Held],
    now: datetime,
    report: Report,
) -> None:
    config = site.config
    copies = [
        _last_finished(journal, kind, target=target.name, outcome="ok")
        for kind in ("backup", "replicate")
    ]
    times = [e.started for e in copies if e is not None and e.started]
    status.last_copy = max(times, default=None)
    for kind in ("check", "prune"):
        last = _last_finished(journal, kind, target=target.name)
        if last is not None and last.outcome != "ok":
            report.warnings.append(
                f"target {target.name}: the last {kind}, at {_iso(last.started)}, "
                f"{last.outcome}: {last.error}"
            )
    what = held.get(target.name)
    if what is None:
        return
    status.snapshots = len(what.snapshots)
    report.gone.extend(what.gone)
    report.warnings.extend(what.notes)
    _future(target.name, what.snapshots, now, status, report)
    for snap in what.snapshots:
        status.snapshots_by_source[snap.source] = status.snapshots_by_source.get(snap.source, 0) + 1
    status.repository_bytes, status.free_bytes = what.size, what.free
    primary = held.get(config.targets[0].name)
    if not status.primary and primary is not None:
        missing = _missing(site, target, primary.snapshots, what.snapshots, now)
        status.missing_snapshots = len(missing)
        status.replication_lag_seconds = (
            round((now - missing[0].time).total_seconds(), 3) if missing else 0.0
        )
        grace = config.monitor.grace.delta
        if missing and now - missing[0].time > grace:
            report.warnings.append(
                f"target {target.name}: {len(missing)} snapshots of the primary not copied yet, "
                f"the oldest from {clock.iso(missing[0].time)} (lag {ago(now - missing[0].time)});"
                " run `emberkeep replicate`"
            )
    need, until = anomalies.expected_need(site.config, journal, target, now)
    status.low_space = anomalies.space_problem(
        target.name,
        what.free,
        min_free=config.monitor.min_free.bytes,
        need=need,
        until=until,
    )
    if status.low_space:
        report.warnings.append(f"low space: {status.low_space}")


def _future(
    target: str, snapshots: list[Snapshot], now: datetime, status: TargetStatus, report: Report
) -> None:
    """Warn of snapshots dated more than a day after now: they count for no RPO."""
    future = [s for s in snapshots if is_future(s, now)]
    status.future_snapshots = len(future)
    if future:
        first = future[0]
        report.warnings.append(
            f"target {target}: {len(future)} snapshots are dated more than "
            f"{format_duration(FUTURE_TOLERANCE)} after now (the first {first.short_id} of "
            f"source {first.source}, {clock.iso(first.time)}, by host {first.host}): they "
            "count for no RPO and no retention rule until then; check that host's clock and "
            "this one's"
        )


def _missing(
    site: Site, target: Target, primary: list[Snapshot], held: list[Snapshot], now: datetime
) -> list[Snapshot]:
    """Primary snapshots ``target`` should hold but lacks, oldest first (as replicate picks)."""
    from ..policy.replication import wanted as copies_wanted

    taken = [s for s in primary if not target.sources or s.source in target.sources]
    wanted = copies_wanted(target, sorted(taken, key=lambda s: (s.time, s.id)), held, now)

    from ..policy.retention import keep_in_target

    kept = keep_in_target(site.config, target.name, [*held, *wanted], now)
    return [s for s in wanted if s.id in kept]


# -- alerts --------------------------------------------------------------------------------


def send_alerts(report: Report, notifier: Notifier) -> None:
    """Raise or resolve the rpo, rto and low_space alerts the report shows."""
    if not notifier.enabled:
        return
    for source in report.sources:
        state = source.rpo
        rpo = Alert("rpo", f"source {source.name} is past its RPO of {source.objective_rpo}")
        rpo.source = source.name
        if state.state == "breached":
            age = "no backup yet"
            if source.last_backup is not None:
                age = (
                    f"the last good backup is {ago(report.time - source.last_backup)} old "
                    f"({clock.iso(source.last_backup)})"
                )
            rpo.detail = age
            notifier.raise_(rpo)
        else:
            rpo.summary = f"source {source.name} is within its RPO of {source.objective_rpo}"
            notifier.resolve(rpo)
        rto = Alert("rto", f"source {source.name}: the last drill breached the RTO")
        rto.source = source.name
        if source.rto_state == "breached":
            drill = source.drill
            if drill is not None and drill.outcome != "ok":
                rto.detail = f"the drill {drill.outcome}: {drill.error}"
            else:
                rto.detail = (
                    f"the restore took {source.rto_seconds:.1f}s; the RTO is {source.objective_rto}"
                )
            notifier.raise_(rto)
        elif source.rto_state == "ok":
            rto.summary = f"source {source.name}: the last drill met the RTO"
            notifier.resolve(rto)
    for target in report.targets:
        space = Alert("low_space", f"target {target.name} is low on space")
        space.target = target.name
        if target.low_space:
            space.detail = target.low_space
            notifier.raise_(space)
        elif target.reachable:
            space.summary = f"target {target.name} has enough space again"
            notifier.resolve(space)


# -- showing -------------------------------------------------------------------------------


def ago(delta: timedelta) -> str:
    seconds = int(max(delta.total_seconds(), 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


_STYLE = {"ok": "green", "late": "yellow", "breached": "red", "untested": "yellow"}


def show(report: Report) -> None:
    """The report for a terminal."""
    style = {"ok": "green", "warning": "yellow", "breach": "red"}[report.state]
    ui.line(
        f"{clock.iso(report.time)}",
        label=f"site {report.site}: {report.state.upper()} ",
        style=style,
    )
    for s in report.sources:
        state = s.rpo
        last = (
            f"last good backup {clock.iso(s.last_backup)} ({ago(report.time - s.last_backup)} ago)"
            if s.last_backup
            else "no backup yet"
        )
        rpo = f"RPO {s.objective_rpo}" if s.objective_rpo else "no RPO"
        nxt = f"; next run {clock.iso(s.next_run)}" if s.next_run else "; not scheduled"
        ui.line(
            f"{last}{nxt}",
            label=f"  source {s.name}: {rpo} {state.state}: ",
            style=_STYLE[state.state],
        )
        if s.rto_state is not None:
            drill = (
                f"last drill {_iso(s.drill.started)}, {s.drill.outcome}"
                + (f", restore {s.rto_seconds:.1f}s" if s.rto_seconds is not None else "")
                if s.drill
                else "no drill yet"
            )
            rto = f"RTO {s.objective_rto}" if s.objective_rto else "no RTO"
            ui.line(drill, label=f"    {rto} {s.rto_state}: ", style=_STYLE[s.rto_state])
    for t in report.targets:
        head = f"  target {t.name}{' (primary)' if t.primary else ''}: "
        if not t.reachable:
            ui.line(f"unreachable: {t.error}", label=head, style="red")
            continue
        parts = [f"{t.snapshots} snapshots", ui.human_bytes(t.repository_bytes or 0)]
        parts.append(
            f"{ui.human_bytes(t.free_bytes)} free" if t.free_bytes is not None else "free n/a"
        )
        parts.append(f"last copy {_iso(t.last_copy) or 'never'}")
        if t.replication_lag_seconds:
            parts.append(
                f"lag {ago(timedelta(seconds=t.replication_lag_seconds))} "
                f"({t.missing_snapshots} missing)"
            )
        ui.line(", ".join(parts), label=head)
    for text in report.breaches:
        ui.line(text, label="breach: ", style="red")
    for text in report.gone:
        ui.line(text, label="gone: ", style="red")
    for target, ids in report.accepted.items():
        ui.line(
            f"target {target}: {len(ids)} snapshots this host remembered are gone, accepted "
            f"as deleted on purpose and forgotten: {', '.join(ids)}",
            label="accepted: ",
            style="yellow",
        )
    for text in report.warnings:
        ui.line(text, label="warning: ", style="yellow")
