"""Every job run journaled, and the alerts it raises or resolves: ``watch``.

The CLI and the scheduler run each job inside one ``watch``::

    with watch(site, "backup", source=name, warn=ui.warning) as job:
        outcome = job.took(run_backup(site, name))
        copies = job.took(replicate_after_backup(site, outcome))

``took`` hands the job's result over and returns it: a backup's ``SourceOutcome`` (snapshot,
bytes read/new/stored, files, documents), the ``TargetCopy`` list of a replication (each copy
journaled as a ``replicate`` row of its own target, with its own failure alert), a
``CheckResult`` (failed when damage was found), a ``PruneResult``, a restore's ``(snapshot,
result)``, or a drill's ``DrillResult`` (failed when it did not pass; its RTO in details).
The row is written when the job starts (``running``) and completed when the block ends:
``ok``, or ``failed`` with the error (the exception goes on). A journal that cannot be
opened (damaged, locked too long) is warned about and the job runs all the same. A
``replicate`` job whose copies were journaled one by one leaves no row of its own unless it
failed as a whole.

Then, never failing the job (a monitoring problem is warned about and journaled):

- a failure raises the ``failure`` alert of (job, source, target); a success resolves it;
- a backup: compared with the source's recent backups (anomalies), the primary's free space
  checked, the source's ``rpo`` alert resolved, and a success message if ``on_success``;
- a drill: the ``rto`` alert raised when over the RTO, resolved when within it.

A restore is journaled but raises no failure alert (whoever runs it sees the outcome), and
neither does a usage error (a mistyped snapshot id) or an interrupt.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from .. import clock
from ..errors import EmberkeepError, UsageError, error_text, is_disk_full, state_dir_full
from ..journal import Entry, Journal
from ..site import Site
from . import anomalies
from .notify import Alert, Notifier

Warn = Callable[[str], None]


class Job:
    """One watched run: its journal row, and what ``took`` was given."""

    def __init__(self, site: Site, journal: Journal, entry: Entry, warn: Warn) -> None:
        self.site = site
        self.journal = journal
        self.entry = entry
        self.warn = warn
        self.copies: list[Entry] = []  # replicate rows journaled by took()
        self.backup_measures: dict[str, int] | None = None
        self.drill: Any = None

    def took(self, result: Any) -> Any:
        """Record ``result`` of the job (module docstring); returns it unchanged."""
        entry = self.entry
        name = type(result).__name__
        if name == "SourceOutcome":
            self._backup(result)
        elif isinstance(result, list) and all(type(r).__name__ == "TargetCopy" for r in result):
            for copy in result:
                self._copy(copy)
        elif name == "CheckResult":
            entry.files = result.packs_read
            entry.bytes = result.bytes_read
            entry.details.update(snapshots=result.snapshots, packs=result.packs)
            if not result.ok:
                damaged = "; ".join(f"{e['object']}: {e['error']}" for e in result.errors[:3])
                self.fail(f"check found damage: {damaged}")
        elif name == "PruneResult":
            removed = sum(d["action"] == "remove" for d in result.decisions)
            entry.bytes = result.bytes_freed
            entry.details.update(
                dry_run=result.dry_run,
                snapshots_removed=removed,
                snapshots_kept=len(result.decisions) - removed,
                packs_deleted=result.packs_deleted,
            )
        elif name == "DrillResult":
            self.drill = result
            entry.source, entry.target = result.source, result.target
            entry.snapshot, entry.bytes = result.snapshot or None, result.bytes
            entry.details.update(
                rto_seconds=round(result.rto_seconds, 3),
                rto_ok=result.rto_ok,
                rto_objective_seconds=result.rto_objective_seconds,
                phases={k: round(v, 3) for k, v in result.phases.items()},
            )
            if not result.passed:
                self.fail(result.error or f"restored data differs: {result.first_difference}")
        elif name == "Recovery":
            entry.bytes = sum(int(s.snapshot.summary.get("bytes", 0)) for s in result.steps)
            entry.files = len(result.steps)
            entry.details.update(
                to=result.restored_under,
                config_written=result.config_written,
                steps=[
                    {k: step[k] for k in ("source", "snapshot", "destination", "status",
                                          "seconds")}
                    for step in (s.to_json() for s in result.steps)
                ],
            )  # fmt: skip
            if result.refused:
                self.fail(f"{len(result.refused)} objects in the target were refused")
            elif result.incomplete:
                names = ", ".join(s.source for s in result.incomplete)
                self.fail(f"restored with problems: {names}")
        elif isinstance(result, tuple) and len(result) == 2:  # restore: (snapshot, result)
            snapshot, outcome = result
            entry.snapshot, entry.source = snapshot.id, snapshot.source
            entry.bytes = getattr(outcome, "bytes", None)
            files = getattr(outcome, "files", None)
            if files is None and hasattr(outcome, "collections"):
                files = len(outcome.collections)
                entry.details["documents"] = sum(c.documents for c in outcome.collections)
            entry.files = files
            problems = getattr(outcome, "problems", None)
            if problems:  # a database restore that lost an option or refused a user
                self.fail("; ".join(f"{p['path']}: {p['message']}" for p in problems[:3]))
        return result

    def fail(self, error: str) -> None:
        """Mark the run failed without an exception (e.g. a check that found damage)."""
        self.entry.outcome, self.entry.error = "failed", error

    def _backup(self, outcome: Any) -> None:
        snapshot = outcome.result.snapshot
        summary = snapshot.summary
        entry = self.entry
        entry.source, entry.target, entry.snapshot = outcome.source, outcome.target, snapshot.id
        entry.bytes = summary.get("bytes")
        entry.bytes_new = summary.get("bytes_new")
        entry.bytes_written = summary.get("bytes_stored")
        entry.files = summary.get("files")
        entry.details["warnings"] = len(outcome.result.warnings)
        if outcome.result.unreadable:
            entry.details["unreadable"] = len(outcome.result.unreadable)
        mongodb = snapshot.extra.get("mongodb", {})
        for key, name in (("documents", "documents"), ("bytes", "data_bytes")):
            if mongodb.get(key) is not None:
                entry.details[name] = mongodb[key]
        self.backup_measures = anomalies.measures(entry)

    def _copy(self, copy: Any) -> None:
        entry = Entry(
            kind="replicate",
            source=self.entry.source,
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
        try:
            self.journal.add(entry)
        except Exception as exc:  # the copy is done (or reported failed): only warn
            self.warn(
                f"the copy to target {copy.target} was not journaled: "
                f"{_journal_problem(self.site, exc)}"
            )
        self.copies.append(entry)


@contextlib.contextmanager
def watch(
    site: Site,
    kind: str,
    *,
    source: str | None = None,
    target: str | None = None,
    warn: Warn = lambda text: None,
) -> Iterator[Job]:
    """Journal one run of a job and send the alerts it raises or resolves (module docstring)."""
    if target is None and kind in ("backup", "restore", "drill"):
        target = site.config.targets[0].name  # where a backup writes, restore/drill read
    journal = None
    try:
        journal = Journal.open(site)
        journal.mark_interrupted(kind, source, target)
        entry = journal.add(Entry(kind=kind, source=source, target=target))
    except Exception as exc:  # a broken journal (or a full disk) must not stop backups
        warn(f"{_journal_problem(site, exc)}; this {kind} runs without being journaled")
        if journal is not None:
            journal.close()
        journal = Journal.in_memory()
        entry = journal.add(Entry(kind=kind, source=source, target=target))
    try:
        job = Job(site, journal, entry, warn)
        t0 = time.monotonic()
        failure: BaseException | None = None
        try:
            yield job
        except BaseException as exc:
            failure = exc
            job.fail(error_text(exc))
            raise
        finally:
            entry.seconds = round(time.monotonic() - t0, 3)
            assert entry.started is not None
            entry.ended = entry.started + timedelta(seconds=entry.seconds)
            if entry.outcome == "running":
                entry.outcome = "ok"
            _finish(job, failure)
    finally:
        journal.close()


def _finish(job: Job, failure: BaseException | None) -> None:
    """Complete the row, then the alerts; a problem here only warns."""
    entry, journal = job.entry, job.journal
    if entry.kind == "drill" and job.drill is None and not entry.ok:
        entry.details["ran"] = False  # it failed before restoring: it measured no RTO
    try:
        if entry.kind == "replicate" and job.copies and entry.ok:
            journal.delete(entry)
        else:
            journal.update(entry)
        quiet = entry.kind in ("restore", "recover")  # whoever runs it sees the outcome
        if not quiet and not isinstance(failure, KeyboardInterrupt | UsageError):
            _alerts(job)
    except Exception as exc:  # monitoring never fails the job it watches
        text = _journal_problem(job.site, exc)
        done = f" (snapshot {entry.snapshot[:12]})" if entry.snapshot else ""
        job.warn(
            f"journal or alerts after {entry.kind}{done}: {text} (the job itself is not affected)"
        )
        with contextlib.suppress(Exception):
            journal.add(Entry(kind="notify", outcome="failed", error=f"after {entry.kind}: {text}"))


def _journal_problem(site: Site, exc: Exception) -> str:
    """What went wrong with the journal, a full disk named as such."""
    if is_disk_full(exc, site.config.site.state_dir):
        return state_dir_full(site.config.site.state_dir)
    return str(exc) if isinstance(exc, EmberkeepError) else f"{type(exc).__name__}: {exc}"


def _alerts(job: Job) -> None:
    site, entry = job.site, job.entry
    notifier = Notifier(site.config.site.name, site.config.notify, job.journal, warn=job.warn)
    rows = [entry] if not (entry.kind == "replicate" and job.copies and entry.ok) else []
    for row in [*rows, *job.copies]:
        alert = Alert("failure", _summary(row), job=row.kind, source=row.source, target=row.target)
        if row.ok:
            alert.summary = _summary(row, "succeeded again")
            notifier.resolve(alert)
        else:
            alert.detail = row.error or ""
            notifier.raise_(alert)
    if entry.kind == "backup" and entry.ok:
        _after_backup(job, notifier)
    if entry.kind == "drill" and job.drill is not None and job.drill.rto_ok is not None:
        rto = Alert(
            "rto", f"source {entry.source}: the last drill breached the RTO", source=entry.source
        )
        if job.drill.rto_ok:
            rto.summary = f"source {entry.source}: the last drill met the RTO"
            notifier.resolve(rto)
        else:
            rto.detail = (
                f"the restore took {job.drill.rto_seconds:.1f}s; the RTO is "
                f"{job.drill.rto_objective_seconds:.0f}s"
            )
            notifier.raise_(rto)


def _after_backup(job: Job, notifier: Notifier) -> None:
    site, entry, journal = job.site, job.entry, job.journal
    monitor = site.config.monitor
    source = entry.source or ""
    found: list[anomalies.Anomaly] = []
    if job.backup_measures is not None:
        earlier = journal.entries(
            kind="backup",
            source=source,
            outcome="ok",
            limit=monitor.anomaly_runs + 1,
            newest_first=True,
        )
        history = [anomalies.measures(e) for e in earlier if e.id != entry.id]
        found = anomalies.backup_anomalies(
            job.backup_measures, history[: monitor.anomaly_runs], change=monitor.anomaly_change
        )
    texts = [a.text(source) for a in found]
    if found:
        entry.details["anomalies"] = [
            {**a.to_json(), "text": t} for a, t in zip(found, texts, strict=True)
        ]
        journal.update(entry)
        for text in texts:
            job.warn(f"anomaly: {text}")
    anomaly = Alert("anomaly", f"the backup of source {source} looks unlike its recent ones")
    anomaly.source, anomaly.target, anomaly.job = source, entry.target, "backup"
    if found:
        anomaly.detail = "\n".join(texts)
        anomaly.data = {"anomalies": entry.details["anomalies"]}
        notifier.raise_(anomaly)
    else:
        anomaly.summary = f"the backup of source {source} looks like its recent ones again"
        notifier.resolve(anomaly)
    rpo = Alert("rpo", f"source {source} has a new backup, within its RPO", source=source)
    notifier.resolve(rpo)
    _space_after_backup(job, notifier)
    if notifier.notify is not None and notifier.notify.on_success:
        shown = f"snapshot {entry.snapshot[:12] if entry.snapshot else '?'}"
        notifier.success(
            Alert(
                "success",
                f"backup of source {source} into target {entry.target}: {shown}",
                detail=(
                    f"{entry.files} files, {entry.bytes} bytes read, {entry.bytes_new} new, "
                    f"{entry.bytes_written} stored, {entry.seconds:.1f}s"
                ),
                job="backup",
                source=source,
                target=entry.target,
            )
        )


def _space_after_backup(job: Job, notifier: Notifier) -> None:
    """The primary's free space after a backup into it (none of this for S3)."""
    site, entry = job.site, job.entry
    storage = site.storage(entry.target)
    try:
        free = storage.free_bytes()
    finally:
        close = getattr(storage, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
    if free is None:
        return
    target = site.config.target(entry.target)
    need, until = anomalies.expected_need(site.config, job.journal, target, clock.now())
    problem = anomalies.space_problem(
        target.name, free, min_free=site.config.monitor.min_free.bytes, need=need, until=until
    )
    space = Alert("low_space", f"target {target.name} is low on space", target=target.name)
    if problem:
        job.warn(f"low space: {problem}")
        space.detail = problem
        notifier.raise_(space)
    else:
        space.summary = f"target {target.name} has enough space again"
        notifier.resolve(space)


def _summary(row: Entry, verb: str = "failed") -> str:
    source = f"source {row.source}" if row.source else None
    target = f"target {row.target}" if row.target else None
    if row.kind == "backup":
        what = f"backup of {source} into {target}"
    elif row.kind == "replicate":
        what = f"copy of {source}'s snapshots to {target}" if source else f"replicate to {target}"
        what = what if target else "replicate"
    elif row.kind in ("check", "prune"):
        what = f"{row.kind} of {target}" if target else row.kind
    elif row.kind == "drill":
        what = f"drill of {source} from {target}"
    elif row.kind == "restore":
        what = f"restore from {target}" + (f" of {source}" if source else "")
    else:
        what = row.kind
    return f"{what} {verb}"
