"""The dashboard's one page: HTML rendered on the server, charts as inline SVG.

The top line answers "are we protected?" as `emberkeep status` does (monitor/report.py: the
same report, the same state); each source's card says its RPO state in words and as a class
(``ok``, ``warning`` for late or untested, ``breached``). The charts have one point per
finished backup in the journal in the chosen range (duration; bytes read and new for the ok
ones), anomalies marked, and a bar per drill against the RTO. Nothing here needs the
script: it only refreshes the running job's progress (web/static/dashboard.js).
Every text from the report, the journal or the config is escaped: they may hold anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

from .. import clock, ui
from ..journal import Entry
from ..monitor.report import Report, SourceStatus, TargetStatus, ago
from ..repository.snapshot import Snapshot
from .jobstate import JobState

CLASS = {"ok": "ok", "late": "warning", "untested": "warning", "warning": "warning"}
CLASS |= {"breached": "breached", "breach": "breached"}
HEADLINE = {
    "ok": "protected",
    "warning": "protected, with warnings",
    "breach": "NOT PROTECTED",
}
W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 150, 64, 12, 12, 22  # chart geometry (SVG units)


@dataclass
class History:
    range_key: str
    since: datetime
    until: datetime
    backups: dict[str, list[Entry]] = field(default_factory=dict)
    drills: dict[str, list[Entry]] = field(default_factory=dict)
    growth: dict[str, list[Entry]] = field(default_factory=dict)  # per target, 30 days


def render(
    report: Report, history: History, *, job: JobState | None, csrf: str, actions: bool = True
) -> str:
    state = report.state
    running = job is not None and job.state == "running"
    refresh = '<noscript><meta http-equiv="refresh" content="2"></noscript>' if running else ""
    parts = [
        _head(f"{report.site}: {HEADLINE[state]}", refresh),
        _nav("overview"),
        f'<header id="verdict" class="verdict {CLASS[state]}" data-state="{state}">',
        f"<h1>{escape(report.site)}: {HEADLINE[state]}</h1>",
        f"<p>{_counts(report)} · as of {clock.iso(report.time)}</p></header>",
        _findings(report),
        _job(job),
        '<main><h2>Sources</h2><section class="cards">',
        *(_source_card(s, report.time, csrf if actions else None, running) for s in report.sources),
        '</section><h2>Targets</h2><section class="cards">',
        *(
            _target_card(t, history, report.time, csrf if actions else None, running)
            for t in report.targets
        ),
        "</section>",
        _charts(report, history),
        _recent(history),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _head(title: str, extra: str = "") -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/static/dashboard.css">'
        f'<script src="/static/dashboard.js" defer></script>{extra}</head><body>'
    )


def _nav(current: str) -> str:
    links = "".join(
        f'<a href="{href}"{" class=current" if name == current else ""}>{name}</a>'
        for name, href in (("overview", "/"), ("snapshots", "/snapshots"), ("journal", "/journal"))
    )
    return f'<nav class="pages">emberkeep {links}</nav>'


def _counts(report: Report) -> str:
    n, w = len(report.breaches) + len(report.gone), len(report.warnings)
    return f"{n} breach{'es' if n != 1 else ''}, {w} warning{'s' if w != 1 else ''}"


def _findings(report: Report) -> str:
    items = [("breached", "breach", t) for t in report.breaches]
    items += [("breached", "gone", t) for t in report.gone]
    items += [("warning", "warning", t) for t in report.warnings]
    if not items:
        return ""
    rows = "".join(
        f'<li class="{cls}"><strong>{label}:</strong> {escape(text)}</li>'
        for cls, label, text in items
    )
    return f'<ul id="findings">{rows}</ul>'


def _job(job: JobState | None) -> str:
    if job is None:
        return '<section id="job" data-state="idle" hidden></section>'
    what = f"{job.kind} of {escape(job.source)}"
    if job.state == "running":
        text = (
            f"{what}: running since {job.started}, "
            f'<span id="job-progress">{job.files} files, {ui.human_bytes(job.bytes)} read</span>'
        )
    elif job.state == "ok":
        text = f"{what}, started {job.started}: ok: {escape(job.summary or '')}"
    else:
        text = f"{what}, started {job.started}: FAILED: {escape(job.error or '')}"
    return (
        f'<section id="job" class="{CLASS.get(job.state, "breached")}" '
        f'data-state="{job.state}" data-id="{job.id}">{text}</section>'
    )


def _when(moment: datetime | None, now: datetime) -> str:
    return f"{clock.iso(moment)} ({ago(now - moment)} ago)" if moment else "never"


def _source_card(s: SourceStatus, now: datetime, csrf: str | None, running: bool) -> str:
    """A source's card; ``csrf`` None: read-only, no button."""
    cls = CLASS[s.rpo.state]
    rpo = f"RPO {escape(s.objective_rpo)}" if s.objective_rpo else "no RPO"
    last = f"last good backup {_when(s.last_backup, now)}" if s.last_backup else "no backup yet"
    lines = [f'<p class="rpo"><span class="state">{rpo} {s.rpo.state}</span>: {last}</p>']
    if s.rpo.state != "breached" and s.rpo.breach_at:
        lines.append(f"<p>breached at {clock.iso(s.rpo.breach_at)} without a new backup</p>")
    if s.rto_state is not None:
        rto = f"RTO {escape(s.objective_rto)}" if s.objective_rto else "no RTO"
        if s.drill is not None:
            took = f", restore {s.rto_seconds:.1f}s" if s.rto_seconds is not None else ""
            drill = f"last drill {_when(s.drill.started, now)}, {s.drill.outcome}{took}"
        else:
            drill = "no drill yet"
        lines.append(
            f'<p class="rto {CLASS[s.rto_state]}"><span class="state">{rto} {s.rto_state}</span>'
            f": {drill}</p>"
        )
    nxt = f"next run {clock.iso(s.next_run)}" if s.next_run else "not scheduled"
    lines.append(f'<p class="next">{nxt}</p>')
    if s.last_run is not None and s.last_run.outcome != "ok":
        lines.append(
            f'<p class="breached">last attempt {_when(s.last_run.started, now)} '
            f"{s.last_run.outcome}: {escape(s.last_run.error or '')}</p>"
        )
    name = escape(s.name)
    if csrf is not None:
        lines.append(
            '<div class="actions">'
            + _action(f"/backup/{name}", "backup-now", "Back up now", csrf, running)
            + _action(f"/drill/{name}", "drill-now", "Drill now", csrf, running)
            + "</div>"
        )
    return (
        f'<article class="card source {cls}" id="source-{name}" data-source="{name}" '
        f'data-state="{s.rpo.state}"><h3>{name} <small>{escape(s.type)}</small></h3>'
        + "".join(lines)
        + "</article>"
    )


def _action(path: str, css: str, label: str, csrf: str, running: bool) -> str:
    """A POST button (web/handler.py: the CSRF token in the form), off while a job runs."""
    disabled = " disabled" if running else ""
    return (
        f'<form method="post" action="{path}"><input type="hidden" name="csrf" value="{csrf}">'
        f'<button type="submit" class="{css}"{disabled}>{label}</button></form>'
    )


def _target_card(
    t: TargetStatus, history: History, now: datetime, csrf: str | None, running: bool
) -> str:
    name = escape(t.name)
    head = f"<h3>{name} <small>{'primary' if t.primary else escape(t.copies)}</small></h3>"
    url = f'<p class="url">{escape(t.url)}</p>'
    if not t.reachable:
        return (
            f'<article class="card target breached" id="target-{name}">{head}{url}'
            f"<p>unreachable: {escape(t.error or '')}</p></article>"
        )
    free = ui.human_bytes(t.free_bytes) + " free" if t.free_bytes is not None else "free n/a"
    lines = [
        f"<p>{t.snapshots} snapshots, {ui.human_bytes(t.repository_bytes or 0)}, {free}</p>",
        f"<p>last copy {_when(t.last_copy, now)}</p>",
    ]
    if not t.primary:
        lag = t.replication_lag_seconds or 0
        lines.append(
            f"<p>replication lag {ago(timedelta(seconds=lag))}"
            f" ({t.missing_snapshots or 0} missing)</p>"
        )
    lines.append(f'<p class="full">estimated full: {estimated_full(t, history, now)}</p>')
    cls = "warning" if t.low_space else "ok"
    if t.low_space:
        lines.append(f"<p>{escape(t.low_space)}</p>")
    if csrf is not None:
        check = _action(f"/check/{name}", "check-now", "Check now", csrf, running)
        lines.append(f'<div class="actions">{check}</div>')
    body = "".join(lines)
    return f'<article class="card target {cls}" id="target-{name}">{head}{url}{body}</article>'


def estimated_full(t: TargetStatus, history: History, now: datetime) -> str:
    """When the free space runs out at the net growth of the last 30 days (bytes stored by
    backups and copies, less what prunes freed), or why there is no date."""
    if t.free_bytes is None:
        return "n/a (the target does not report free space)"
    entries = [e for e in history.growth.get(t.name, []) if e.ok and e.started]
    grown = sum(e.bytes_written or 0 for e in entries if e.kind in ("backup", "replicate"))
    grown -= sum(
        e.bytes or 0 for e in entries if e.kind == "prune" and not e.details.get("dry_run")
    )
    if grown <= 0:
        return "never at the last 30 days' growth (none)"
    first = min(e.started for e in entries if e.started)
    span = max((now - first).total_seconds(), 86400.0)
    left = t.free_bytes / (grown / span)
    per_day = ui.human_bytes(grown / span * 86400)
    if left > 10 * 365 * 86400:
        return f"in more than 10 years (growing {per_day}/day)"
    return f"{(now + timedelta(seconds=left)).date().isoformat()} (growing {per_day}/day)"


# -- charts ----------------------------------------------------------------------------------


@dataclass
class Point:
    time: datetime
    value: float
    title: str
    css: str


def _x(moment: datetime, history: History) -> float:
    span = (history.until - history.since).total_seconds() or 1.0
    share = (moment - history.since).total_seconds() / span
    return LEFT + min(max(share, 0.0), 1.0) * (W - LEFT - RIGHT)


def _y(value: float, top: float) -> float:
    return TOP + (1 - value / top) * (H - TOP - BOTTOM)


def _frame(chart_id: str, label: str, history: History, top: float, fmt: Callable[[float], str]):  # type: ignore[no-untyped-def]
    """The SVG's opening, axes and labels."""
    bottom = H - BOTTOM
    return [
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{W - RIGHT}" y2="{bottom}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{W - RIGHT}" y2="{TOP}"/>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{fmt(top)}</text>',
        f'<text class="label" x="{LEFT - 4}" y="{bottom}" text-anchor="end">0</text>',
        f'<text class="label" x="{LEFT}" y="{H - 4}">{history.since.date().isoformat()}</text>',
        f'<text class="label" x="{W - RIGHT}" y="{H - 4}" text-anchor="end">'
        f"{history.until.date().isoformat()}</text>",
    ]


def line_chart(
    chart_id: str,
    label: str,
    series: dict[str, list[Point]],
    history: History,
    fmt: Callable[[float], str],
) -> str:
    """One polyline and one circle per point for each series (class ``series-NAME``)."""
    values = [p.value for points in series.values() for p in points]
    top = max(values, default=0.0) * 1.1 or 1.0
    svg = _frame(chart_id, label, history, top, fmt)
    for name, points in series.items():
        points = sorted(points, key=lambda p: p.time)
        if len(points) > 1:
            coords = " ".join(f"{_x(p.time, history):.1f},{_y(p.value, top):.1f}" for p in points)
            svg.append(f'<polyline class="line series-{name}" points="{coords}"/>')
        for p in points:
            svg.append(
                f'<circle class="point series-{name} {p.css}" '
                f'data-time="{clock.iso(p.time)}" cx="{_x(p.time, history):.1f}" '
                f'cy="{_y(p.value, top):.1f}" r="3"><title>{escape(p.title)}</title></circle>'
            )
    svg.append("</svg>")
    return "".join(svg)


def bar_chart(
    chart_id: str, label: str, bars: list[Point], objective: float | None, history: History
) -> str:
    """A bar per drill (its restore seconds), the RTO as a dashed line."""
    values = [b.value for b in bars] + ([objective] if objective else [])
    top = max(values, default=0.0) * 1.1 or 1.0
    svg = _frame(chart_id, label, history, top, _seconds)
    for b in bars:
        x, y = _x(b.time, history), min(_y(b.value, top), H - BOTTOM - 2)  # seen when tiny
        svg.append(
            f'<rect class="bar {b.css}" data-time="{clock.iso(b.time)}" x="{x - 3:.1f}" '
            f'y="{y:.1f}" width="6" height="{H - BOTTOM - y:.1f}"><title>{escape(b.title)}'
            "</title></rect>"
        )
    if objective:
        y = _y(objective, top)
        svg.append(
            f'<line class="objective" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}">'
            f"<title>RTO {_seconds(objective)}</title></line>"
        )
    svg.append("</svg>")
    return "".join(svg)


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _bytes(value: float) -> str:
    return ui.human_bytes(value)


def _backup_points(entries: list[Entry]) -> tuple[list[Point], list[Point], list[Point]]:
    """Duration of every finished backup; bytes read and new of the ok ones."""
    duration, read, new = [], [], []
    for e in entries:
        assert e.started is not None
        anomalies = e.details.get("anomalies") or []
        css = e.outcome + (" anomaly" if anomalies else "")
        note = "".join(f"; anomaly: {a.get('text', a)}" for a in anomalies if isinstance(a, dict))
        when = clock.iso(e.started)
        seconds = e.seconds or 0.0
        error = f": {e.error}" if e.error else ""
        duration.append(
            Point(e.started, seconds, f"{when} {e.outcome}{error}, {seconds:.1f}s{note}", css)
        )
        if e.ok and e.bytes is not None:
            read.append(Point(e.started, e.bytes, f"{when}: read {_bytes(e.bytes)}{note}", css))
            fresh = e.bytes_new or 0
            ratio = f", dedup {e.bytes / fresh:.1f}x" if fresh else ""
            new.append(Point(e.started, fresh, f"{when}: new {_bytes(fresh)}{ratio}", css))
    return duration, read, new


def _charts(report: Report, history: History) -> str:
    links = " ".join(
        f'<a href="/?range={key}"{" class=current" if key == history.range_key else ""}>'
        f"{key.replace('d', ' d').replace('1y', '1 y')}</a>"
        for key in ("7d", "30d", "1y")
    )
    parts = [f'<h2>History</h2><nav class="ranges">range: {links}</nav>']
    for s in report.sources:
        name = escape(s.name)
        entries = history.backups.get(s.name, [])
        duration, read, new = _backup_points(entries)
        charts = [
            "<figure><figcaption>backup duration</figcaption>"
            + line_chart(
                f"chart-duration-{name}",
                f"backup duration of {name}",
                {"duration": duration},
                history,
                _seconds,
            )
            + "</figure>",
            "<figure><figcaption>bytes <span class=key-read>read</span> and "
            "<span class=key-new>new</span> (the rest deduplicated)</figcaption>"
            + line_chart(
                f"chart-size-{name}",
                f"bytes read and new of {name}",
                {"read": read, "new": new},
                history,
                _bytes,
            )
            + "</figure>",
        ]
        documents = [
            Point(
                e.started,
                float(e.details["documents"]),
                f"{e.details['documents']} documents",
                "ok",
            )
            for e in entries
            if e.ok and e.started and isinstance(e.details.get("documents"), int | float)
        ]
        if documents:
            charts.append(
                "<figure><figcaption>documents</figcaption>"
                + line_chart(
                    f"chart-documents-{name}",
                    f"documents of {name}",
                    {"documents": documents},
                    history,
                    lambda v: f"{v:.0f}",
                )
                + "</figure>"
            )
        drills = [
            Point(
                e.started,
                float(e.details.get("rto_seconds", e.seconds or 0.0)),
                f"{clock.iso(e.started)} drill {e.outcome}",
                "ok" if e.ok and e.details.get("rto_ok") is not False else "failed",
            )
            for e in history.drills.get(s.name, [])
            if e.started
        ]
        if drills or s.objective_rto:
            rto = s.objective_rto.seconds if s.objective_rto else None
            charts.append(
                "<figure><figcaption>drill restore time against the RTO</figcaption>"
                + bar_chart(f"chart-drills-{name}", f"drills of {name}", drills, rto, history)
                + "</figure>"
            )
        parts.append(
            f'<section class="history" id="history-{name}" data-backups="{len(entries)}">'
            f"<h3>{name}: {len(entries)} backups</h3>{''.join(charts)}</section>"
        )
    return "".join(parts)


def _recent(history: History, limit: int = 20) -> str:
    """The newest backups and drills of the range: the journal at a glance."""
    rows = sorted(
        [e for entries in (*history.backups.values(), *history.drills.values()) for e in entries],
        key=lambda e: (e.started or history.since, e.id or 0),
        reverse=True,
    )[:limit]
    body = "".join(
        f'<tr class="{CLASS.get(e.outcome, "breached") if e.outcome != "ok" else "ok"}">'
        f"<td>{clock.iso(e.started) if e.started else ''}</td><td>{e.kind}</td>"
        f"<td>{escape(e.source or '')}</td><td>{escape(e.target or '')}</td>"
        f"<td>{e.outcome}</td><td>{_seconds(e.seconds or 0.0)}</td>"
        f"<td>{_bytes(e.bytes) if e.bytes is not None else ''}</td>"
        f"<td>{escape((e.snapshot or '')[:12])}</td><td>{escape(e.error or '')}</td></tr>"
        for e in rows
    )
    return (
        '<h2>Journal</h2><table id="journal"><thead><tr><th>started</th><th>kind</th>'
        "<th>source</th><th>target</th><th>outcome</th><th>took</th><th>read</th>"
        f"<th>snapshot</th><th>error</th></tr></thead><tbody>{body}</tbody></table>"
        '<p>All of it, with filters: <a href="/journal">the journal</a>.</p>'
    )


# -- the journal and the snapshots -----------------------------------------------------------

FILTERS = ("source", "target", "kind", "outcome", "since")


def render_journal(
    site: str, entries: list[Entry], filters: dict[str, str], choices: dict[str, list[str]]
) -> str:
    """Every run matching the filters, newest first: the strategy's log of all
    restorations and issues (`emberkeep log` with the same filters)."""
    fields = []
    for name in FILTERS:
        value = filters.get(name, "")
        if name in choices:
            options = "".join(
                f'<option value="{escape(c)}"{" selected" if c == value else ""}>'
                f"{escape(c) or 'any'}</option>"
                for c in ["", *choices[name]]
            )
            fields.append(f'<label>{name} <select name="{name}">{options}</select></label>')
        else:
            fields.append(
                f'<label>{name} <input name="{name}" value="{escape(value)}" '
                'placeholder="7d or 2026-03-01T00:00:00Z" size="22"></label>'
            )
    form = f'<form id="filters" method="get" action="/journal">{"".join(fields)}'
    form += '<button type="submit">filter</button></form>'
    rows = "".join(
        f'<tr class="{"ok" if e.outcome == "ok" else CLASS.get(e.outcome, "breached")}">'
        f"<td>{clock.iso(e.started) if e.started else ''}</td><td>{escape(e.kind)}</td>"
        f"<td>{escape(e.source or '')}</td><td>{escape(e.target or '')}</td>"
        f"<td>{escape(e.outcome)}</td><td>{_seconds(e.seconds or 0.0)}</td>"
        f"<td>{_bytes(e.bytes) if e.bytes is not None else ''}</td>"
        f"<td>{escape((e.snapshot or '')[:12])}</td><td>{escape(e.error or '')}</td></tr>"
        for e in entries
    )
    return (
        _head(f"{site}: journal")
        + _nav("journal")
        + f"<main><h2>Journal of {escape(site)}: {len(entries)} runs</h2>{form}"
        '<table id="journal"><thead><tr><th>started</th><th>kind</th><th>source</th>'
        "<th>target</th><th>outcome</th><th>took</th><th>bytes</th><th>snapshot</th>"
        f"<th>error</th></tr></thead><tbody>{rows}</tbody></table></main></body></html>"
    )


@dataclass
class TargetSnapshots:
    target: str
    snapshots: list[Snapshot] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # id -> the rules keeping it
    error: str | None = None


def render_snapshots(site: str, targets: list[TargetSnapshots], source: str | None) -> str:
    """Per target, every snapshot (of ``source``), newest first, with the rule that keeps
    it or the verdict of the next prune (``prune --dry-run``)."""
    parts = [_head(f"{site}: snapshots"), _nav("snapshots"), "<main>"]
    for t in targets:
        name = escape(t.target)
        if t.error is not None:
            parts.append(f'<h2>Target {name}</h2><p class="breached">{escape(t.error)}</p>')
            continue
        shown = [s for s in t.snapshots if source is None or s.source == source]
        rows = []
        for snap in sorted(shown, key=lambda s: (s.time, s.seq or 0), reverse=True):
            kept = t.kept.get(snap.id)
            verdict = f"kept: {escape(kept)}" if kept else "the next prune removes it"
            size = snap.summary.get("bytes")
            rows.append(
                f'<tr class="{"ok" if kept else "warning"}" data-id="{escape(snap.id)}" '
                f'data-action="{"keep" if kept else "remove"}">'
                f"<td>{clock.iso(snap.time)}</td><td>{escape(snap.source)}</td>"
                f"<td>{escape(snap.short_id)}</td>"
                f"<td>{_bytes(size) if isinstance(size, int | float) else ''}</td>"
                f"<td>{escape(', '.join(snap.tags))}</td><td>{escape(snap.host)}</td>"
                f"<td>{verdict}</td></tr>"
            )
        parts.append(
            f'<h2>Target {name}: {len(shown)} snapshots</h2><table class="snapshots" '
            f'id="snapshots-{name}"><thead><tr><th>time</th><th>source</th><th>id</th>'
            "<th>size</th><th>tags</th><th>host</th><th>retention (prune --dry-run)</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
        )
    parts.append("</main></body></html>")
    return "".join(parts)
