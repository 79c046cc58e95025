"""backup and import (a snapshot, then its copies to the other targets), and replicate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EmberkeepError
from ...journal import Entry
from ...monitor.jobs import Job, JournalFields, watch
from ...site import Site
from .base import Bar, Warn, copy_feed, shown_while, silent

if TYPE_CHECKING:
    from ...engine.backup import Progress
    from ..backup import SourceOutcome
    from ..replicate import TargetCopy


# -- backup (and import): the snapshot, then its copies to the other targets -----------------


@dataclass
class BackedUp:
    """A backup's (or an import's) snapshot, and its copies to the other targets (journaled
    as ``Replicated`` when made, each a row of its own)."""

    outcome: SourceOutcome
    copies: list[TargetCopy] = field(default_factory=list)

    @property
    def failed_copies(self) -> list[TargetCopy]:
        return [c for c in self.copies if c.failed]

    def journal_fields(self) -> JournalFields:
        outcome = self.outcome
        snapshot = outcome.result.snapshot
        summary = snapshot.summary
        fields = JournalFields(
            row={
                "source": outcome.source,
                "target": outcome.target,
                "snapshot": snapshot.id,
                "bytes": summary.get("bytes"),
                "bytes_new": summary.get("bytes_new"),
                "bytes_written": summary.get("bytes_stored"),
                "files": summary.get("files"),
            },
            details={"warnings": len(outcome.result.warnings)},
        )
        if outcome.result.unreadable:
            fields.details["unreadable"] = len(outcome.result.unreadable)
        mongodb = snapshot.extra.get("mongodb", {})
        for key, name in (("documents", "documents"), ("bytes", "data_bytes")):
            if mongodb.get(key) is not None:
                fields.details[name] = mongodb[key]
        return fields

    def to_json(self) -> dict[str, Any]:
        return {**self.outcome.to_json(), "copies": [c.to_json() for c in self.copies]}

    def summary(self) -> str:
        outcome = self.outcome
        snap = outcome.result.snapshot
        failed = self.failed_copies
        if failed:
            raise EmberkeepError(
                "; ".join(c.reason or c.target for c in failed)
                + f"; the snapshot {snap.short_id} is committed in {outcome.target}; run "
                + f"`emberkeep replicate` when {', '.join(c.target for c in failed)} is reachable"
            )
        warnings = len(outcome.result.warnings)
        note = f", {warnings} warnings" if warnings else ""
        copied = [c.target for c in self.copies if c.status == "copied"]
        also = f", copied to {', '.join(copied)}" if copied else ""
        return f"snapshot {snap.short_id} in target {outcome.target}{also}{note}"


def backup(
    site: Site,
    source: str,
    *,
    tags: list[str] | None = None,
    progress: Progress | None = None,
    bar: Bar | None = None,
    copy_bar: Bar | None = None,
    warn: Warn = silent,
    show: Callable[[BackedUp], None] = lambda done: None,
) -> BackedUp:
    """Back up ``source`` into its first available target, then copy the snapshot to every
    other target its rule wants (each tried, whatever fails: a failed copy is in the result,
    not raised). ``show`` runs inside the journaled run, before its alerts: what it prints
    comes before an anomaly warning."""
    from ...engine.backup import Progress
    from ..backup import run_backup

    if bar is not None:
        progress = Progress(on_file=bar.advance)
    with watch(site, "backup", source=source, warn=warn) as job:
        with shown_while(bar):
            done = job.took(BackedUp(run_backup(site, source, tags=tags, progress=progress)))
        _copy_after(site, job, done, copy_bar)
        show(done)
    return done


def import_dump(
    site: Site,
    dump: Path,
    *,
    source: str | None,
    time: datetime | None,
    tags: list[str],
    bar: Bar | None = None,
    copy_bar: Bar | None = None,
    warn: Warn = silent,
) -> BackedUp:
    """A stock mongodump stored as a snapshot of its mongodb source in the primary, then
    copied like a backup's."""
    from ...engine.backup import Progress
    from ...sources.mongodb.stockdump import file_size
    from ..import_dump import import_source, run_import

    name = import_source(site, source).name
    target = site.config.targets[0].name
    with watch(site, "import", source=name, target=target, warn=warn) as job:
        if bar is not None and bar.enabled:
            bar.set_total(file_size(dump))
        progress = Progress(on_file=bar.advance) if bar is not None else None
        with shown_while(bar):
            outcome = run_import(site, dump, source=name, time=time, tags=tags, progress=progress)
            done = job.took(BackedUp(outcome))
        _copy_after(site, job, done, copy_bar)
    return done


def _copy_after(site: Site, job: Job, done: BackedUp, bar: Bar | None) -> None:
    """The copies of ``done``'s snapshot, journaled as they are made (the backup's row
    already names the snapshot: an interrupted copy leaves it named)."""
    from ..replicate import replicate_after_backup

    with shown_while(bar):
        on_pack, on_total = copy_feed(bar)
        copies = replicate_after_backup(site, done.outcome, on_pack=on_pack, on_total=on_total)
    done.copies = job.took(Replicated(done.outcome.source, copies)).copies


# -- replicate ------------------------------------------------------------------------------


@dataclass
class Replicated:
    """Copies of snapshots to other targets: each journaled as a ``replicate`` row of its own
    target (with its own failure alert), of ``source`` (None: every source)."""

    source: str | None
    copies: list[TargetCopy]

    def journal_fields(self) -> JournalFields:
        return JournalFields(rows=[_copy_row(self.source, c) for c in self.copies])

    def summary(self) -> str:
        failed = [c.reason or c.target for c in self.copies if c.failed]
        if failed:
            raise EmberkeepError("; ".join(failed))
        parts = [f"target {c.target}: {len(c.snapshots)} snapshots copied" for c in self.copies]
        return "; ".join(parts) or "one target only: nothing to copy"


def _copy_row(source: str | None, copy: TargetCopy) -> Entry:
    entry = Entry(
        kind="replicate",
        source=source,
        target=copy.target,
        outcome="failed" if copy.failed else "ok",
        bytes_written=copy.stats.bytes_copied,
        error=copy.reason if copy.failed else None,
        details={
            "status": copy.status,
            "snapshots": copy.snapshots,
            "packs_copied": copy.stats.packs_copied,
            "left_out": copy.left_out,
            **({"reason": copy.reason} if copy.reason and not copy.failed else {}),
        },
    )
    if len(copy.snapshots) == 1:
        entry.snapshot = copy.snapshots[0]
    return entry


def replicate(
    site: Site,
    target: str | None = None,
    source: str | None = None,
    *,
    re_encrypt: bool = False,
    bar: Bar | None = None,
    warn: Warn = silent,
) -> Replicated:
    """Fill each other target (or ``target``) with the primary's snapshots it lacks and
    wants; every target tried, a failed one in the result. ``re_encrypt``: decrypted and
    sealed anew under the target's own key epoch (runner/replicate.py)."""
    from ..replicate import run_replicate

    with watch(site, "replicate", source=source, target=target, warn=warn) as job, shown_while(bar):
        on_pack, on_total = copy_feed(bar)
        copies = run_replicate(
            site, target, source, re_encrypt=re_encrypt, on_pack=on_pack, on_total=on_total
        )
        return job.took(Replicated(source, copies))
