"""What the dashboard's pages read: the journal's history for the charts, and the
snapshots each target holds with the verdict of the next prune."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import clock
from ..errors import error_text
from ..journal import Entry, Journal
from ..site import Site

if TYPE_CHECKING:
    from .page import TargetSnapshots

GROWTH_WINDOW = timedelta(days=30)  # the estimated-full date extrapolates this much growth


def target_snapshots(
    site: Site, wanted: str | None, redact: Callable[[str], str]
) -> list[TargetSnapshots]:
    """Per target (or only ``wanted``), its snapshots and what the next prune keeps of them;
    an unreachable target with its error (``redact``-ed)."""
    from ..policy import retention
    from .page import TargetSnapshots

    now = clock.now()
    found = []
    for target in site.config.targets:
        if wanted is not None and target.name != wanted:
            continue
        held = TargetSnapshots(target.name)
        try:
            repo = site.repository(target.name)
            try:
                held.snapshots = repo.snapshots()
            finally:
                with contextlib.suppress(Exception):
                    getattr(repo.storage, "close", lambda: None)()
            # the decision `prune --dry-run` takes (runner/maintenance.py run_prune)
            policies = site.config.retention(target.name)
            held.kept = retention.keep(held.snapshots, now, policies)
        except Exception as exc:
            held.error = redact(error_text(exc, target.name))
        found.append(held)
    return found


def snapshots_json(held: Any, source: str | None) -> dict[str, Any]:
    return {
        "target": held.target,
        "error": held.error,
        "snapshots": [
            {
                **s.to_json(held.target),
                "action": "keep" if s.id in held.kept else "remove",
                "kept_by": held.kept.get(s.id),
            }
            for s in held.snapshots
            if source is None or s.source == source
        ],
    }


def history(
    site: Site, since: datetime, now: datetime
) -> tuple[dict[str, list[Entry]], dict[str, list[Entry]], dict[str, list[Entry]]]:
    """Finished backups and drills per source since ``since``; per target, what changed
    its size in the growth window (backups, copies, prunes) for the estimated-full date."""
    backups: dict[str, list[Entry]] = {}
    drills: dict[str, list[Entry]] = {}
    growth: dict[str, list[Entry]] = {}
    first = min(since, now - GROWTH_WINDOW)
    with Journal.open(site) as journal:
        for entry in journal.entries(since=first):
            if entry.outcome == "running" or entry.started is None:
                continue
            recent = entry.started >= now - GROWTH_WINDOW
            if entry.kind in ("backup", "replicate", "prune") and entry.target and recent:
                growth.setdefault(entry.target, []).append(entry)
            if entry.started < since or entry.source is None:
                continue
            if entry.kind == "backup":
                backups.setdefault(entry.source, []).append(entry)
            elif entry.kind == "drill":
                drills.setdefault(entry.source, []).append(entry)
    return backups, drills, growth
