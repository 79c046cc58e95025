"""`emberkeep status` for a terminal: the report (monitor/report.py) as coloured lines."""

from __future__ import annotations

from datetime import timedelta

from .. import clock, ui
from ..monitor.report import Report, ago, iso_or_none

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
                f"last drill {iso_or_none(s.drill.started)}, {s.drill.outcome}"
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
        parts.append(f"last copy {iso_or_none(t.last_copy) or 'never'}")
        if t.replication_lag_seconds:
            parts.append(
                f"lag {ago(timedelta(seconds=t.replication_lag_seconds))} "
                f"({t.missing_snapshots} missing)"
            )
        epoch = t.key_epoch
        if epoch is not None and epoch["age_seconds"] is not None:
            every = f", rotate every {epoch['rotate_every']}" if epoch["rotate_every"] else ""
            parts.append(
                f"key epoch {epoch['number']} {ago(timedelta(seconds=epoch['age_seconds']))} "
                f"old{every}"
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
