"""The alerts a status report raises or resolves: ``rpo``, ``rto`` and ``low_space``
(monitor/notify.py sends them, rate-limited, with "resolved" messages)."""

from __future__ import annotations

from .. import clock
from .notify import Alert, Notifier
from .report import Report, ago


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
