"""Prometheus metrics: ``emberkeep metrics`` prints them; ``emberkeep run`` serves and writes them.

The text exposition format (version 0.0.4), every metric a gauge, built from a status report
(monitor/report.py) and the journal:

- per source: ``emberkeep_source_last_backup_timestamp_seconds``, ``..._backup_age_seconds``,
  ``..._rpo_seconds`` / ``..._rto_seconds`` (the objectives), ``emberkeep_source_rpo_state``
  and ``emberkeep_source_rto_state`` (one series per state, 1 for the current one),
  ``..._next_run_timestamp_seconds``, ``..._last_drill_timestamp_seconds``,
  ``..._last_drill_restore_seconds``, ``..._anomalies``, and of its last good backup
  ``emberkeep_last_backup_{bytes,new_bytes,stored_bytes,files,documents}``;
- per job (kind, source, target) in the journal: ``emberkeep_job_last_run_timestamp_seconds``,
  ``..._last_success_timestamp_seconds``, ``..._last_duration_seconds``, ``..._last_ok``;
- per target: ``emberkeep_target_up``, ``emberkeep_snapshots`` (per source and target),
  ``emberkeep_target_snapshots``, ``..._repository_bytes``, ``..._free_bytes`` (not for S3),
  ``..._last_copy_timestamp_seconds``, ``..._replication_lag_seconds``, ``..._low_space``;
- ``emberkeep_status{state}`` (ok / warning / breach) and ``emberkeep_breaches``,
  ``emberkeep_warnings``.

Timestamps rather than ages where possible, so ``time() - x`` in Prometheus stays right
between scrapes. `emberkeep run` serves and writes them (monitor/exporter.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config import Source
from ..journal import Journal
from ..site import Site
from . import status as status_mod
from .report import Report
from .status import KindStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RPO_STATES = ("ok", "late", "breached")
RTO_STATES = ("ok", "breached", "untested")
REPORT_STATES = ("ok", "warning", "breach")


@dataclass
class _Family:
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class Metrics:
    """Gauge families in the order first added, rendered as exposition text."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def add(self, name: str, help: str, value: float | None, /, **labels: str | None) -> None:
        family = self.families.setdefault(name, _Family(help))
        if value is not None:
            family.samples.append(({k: v or "" for k, v in labels.items()}, float(value)))

    def text(self) -> str:
        lines = []
        for name, family in self.families.items():
            if not family.samples:
                continue
            lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} gauge")
            for labels, value in family.samples:
                shown = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(
                    f"{name}{{{shown}}} {_number(value)}" if shown else f"{name} {_number(value)}"
                )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """The same families for `metrics --json`: help and labelled values per name."""
        return {
            name: {
                "help": family.help,
                "samples": [{"labels": labels, "value": value} for labels, value in family.samples],
            }
            for name, family in self.families.items()
            if family.samples
        }


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _ts(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


def render(site: Site, report: Report) -> str:
    """The metrics of ``report`` and the journal, as exposition text."""
    return gather(site, report).text()


def gather(site: Site, report: Report) -> Metrics:
    """The metrics of ``report`` and the journal."""
    m = Metrics()
    for s in report.sources:
        src = s.name
        m.add(
            "emberkeep_source_last_backup_timestamp_seconds",
            "Time of the source's last good backup (Unix seconds).",
            _ts(s.last_backup),
            source=src,
        )
        m.add(
            "emberkeep_source_backup_age_seconds",
            "Age of the source's last good backup at collection time.",
            s.age_seconds,
            source=src,
        )
        if s.pitr is not None:
            _pitr_metrics(m, src, s.pitr)
        objectives = site.config.source(src).objectives
        if objectives and objectives.rpo_delta is not None:
            m.add(
                "emberkeep_source_rpo_seconds",
                "The source's recovery point objective.",
                objectives.rpo_delta.total_seconds(),
                source=src,
            )
        if objectives and objectives.rto_delta is not None:
            m.add(
                "emberkeep_source_rto_seconds",
                "The source's recovery time objective.",
                objectives.rto_delta.total_seconds(),
                source=src,
            )
        for state in RPO_STATES:
            m.add(
                "emberkeep_source_rpo_state",
                "1 for the source's RPO state (ok, late, breached), 0 for the others.",
                int(s.rpo.state == state),
                source=src,
                state=state,
            )
        if s.rto_state is not None:
            for state in RTO_STATES:
                m.add(
                    "emberkeep_source_rto_state",
                    "1 for the source's RTO state (ok, breached, untested), 0 for the others.",
                    int(s.rto_state == state),
                    source=src,
                    state=state,
                )
        m.add(
            "emberkeep_source_next_run_timestamp_seconds",
            "When the source's next scheduled backup is due.",
            _ts(s.next_run),
            source=src,
        )
        m.add(
            "emberkeep_source_last_drill_timestamp_seconds",
            "When the source's last restore drill ran.",
            _ts(s.drill.started if s.drill else None),
            source=src,
        )
        m.add(
            "emberkeep_source_last_drill_restore_seconds",
            "How long the last drill's restore took (the measured RTO).",
            s.rto_seconds,
            source=src,
        )
        m.add(
            "emberkeep_source_anomalies",
            "Anomalies found in the source's last good backup.",
            len(s.anomalies),
            source=src,
        )
    with Journal.open(site) as journal:
        for s in report.sources:
            good = journal.last("backup", source=s.name, outcome="ok")
            if good is None:
                continue
            for name, value, what in (
                ("bytes", good.bytes, "bytes read"),
                ("new_bytes", good.bytes_new, "bytes not in the repository before"),
                ("stored_bytes", good.bytes_written, "bytes stored (compressed, encrypted)"),
                ("files", good.files, "files"),
                ("documents", good.details.get("documents"), "documents (mongodb)"),
            ):
                m.add(
                    f"emberkeep_last_backup_{name}",
                    f"The source's last good backup: {what}.",
                    value,
                    source=s.name,
                    target=good.target,
                )
        for kind, source, target in journal.jobs():
            last = journal.last_of(kind, source, target)
            good = journal.last_of(kind, source, target, ok=True)
            labels = {"job": kind, "source": source, "target": target}
            m.add(
                "emberkeep_job_last_run_timestamp_seconds",
                "When the job last finished a run (ok or not).",
                _ts(last.started if last else None),
                **labels,
            )
            m.add(
                "emberkeep_job_last_success_timestamp_seconds",
                "When the job last ran successfully.",
                _ts(good.started if good else None),
                **labels,
            )
            m.add(
                "emberkeep_job_last_duration_seconds",
                "How long the job's last run took.",
                last.seconds if last else None,
                **labels,
            )
            m.add(
                "emberkeep_job_last_ok",
                "1 when the job's last run succeeded, else 0.",
                int(last.ok) if last else None,
                **labels,
            )
    for t in report.targets:
        tgt = t.name
        m.add(
            "emberkeep_target_up",
            "1 when status could read the target.",
            int(t.reachable),
            target=tgt,
        )
        for source, count in sorted(t.snapshots_by_source.items()):
            m.add(
                "emberkeep_snapshots",
                "Snapshots of the source held in the target.",
                count,
                source=source,
                target=tgt,
            )
        m.add(
            "emberkeep_target_snapshots", "Snapshots held in the target.", t.snapshots, target=tgt
        )
        m.add(
            "emberkeep_target_repository_bytes",
            "Size of every object in the target's repository.",
            t.repository_bytes,
            target=tgt,
        )
        m.add(
            "emberkeep_target_free_bytes",
            "Free space where the target lies (local, SFTP).",
            t.free_bytes,
            target=tgt,
        )
        m.add(
            "emberkeep_target_last_copy_timestamp_seconds",
            "When data last arrived in the target (a backup or a copy).",
            _ts(t.last_copy),
            target=tgt,
        )
        m.add(
            "emberkeep_target_replication_lag_seconds",
            "Age of the oldest primary snapshot the target should hold but lacks (0: none).",
            t.replication_lag_seconds,
            target=tgt,
        )
        m.add(
            "emberkeep_target_low_space",
            "1 when the target is low on space.",
            int(bool(t.low_space)) if t.reachable else None,
            target=tgt,
        )
    for state in REPORT_STATES:
        m.add(
            "emberkeep_status",
            "1 for the site's state (ok, warning, breach), 0 for the others.",
            int(report.state == state),
            state=state,
        )
    m.add("emberkeep_breaches", "RPO and RTO breaches now.", len(report.breaches))
    m.add(
        "emberkeep_warnings",
        "Warnings now (late, anomalies, space, failures).",
        len(report.warnings),
    )
    m.add(
        "emberkeep_status_timestamp_seconds",
        "When this status was collected.",
        report.time.timestamp(),
    )
    return m


def _pitr_metrics(m: Metrics, src: str, pitr: dict[str, Any]) -> None:
    """A PITR source's oplog archive (monitor/pitr.py): lag, window, slices, gaps."""
    m.add(
        "emberkeep_pitr_lag_seconds",
        "Newest oplog entry on the server to the newest archived, as the archiver last saw.",
        pitr.get("lag_seconds"),
        source=src,
    )
    window = pitr.get("window") or {}
    for end in ("from", "to"):
        point = window.get(end)
        m.add(
            f"emberkeep_pitr_window_{'start' if end == 'from' else 'end'}_timestamp_seconds",
            f"The {'oldest' if end == 'from' else 'newest'} point a restore can reach "
            "(Unix seconds).",
            float(point.split(":")[0]) if point else None,
            source=src,
        )
    m.add("emberkeep_pitr_slices", "Oplog slices in the primary target.", pitr.get("slices"),
          source=src)  # fmt: skip
    m.add("emberkeep_pitr_chains", "Chains of oplog slices (a new one after each gap).",
          len(pitr.get("chains") or []), source=src)  # fmt: skip
    m.add("emberkeep_pitr_gaps", "Gaps in the oplog archive found in the last day.",
          sum(1 for g in pitr.get("gaps") or [] if g.get("age_seconds", 0) < 86400),
          source=src)  # fmt: skip


def collect_text(site: Site, kind_for: Callable[[Source], KindStatus]) -> str:
    return collect(site, kind_for).text()


def collect(site: Site, kind_for: Callable[[Source], KindStatus]) -> Metrics:
    """``kind_for``: the kind of a source (``runner.kinds.kind_for``; ``status.collect``)."""
    return gather(site, status_mod.collect(site, kind_for))
