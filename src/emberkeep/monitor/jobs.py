"""Every job run journaled, and the alerts it raises or resolves: ``watch``.

Each job (runner/jobs.py, where the CLI, the scheduler and the dashboard start them all)
runs inside one ``watch``::

    with watch(site, "backup", source=name, warn=warn) as job:
        backup = job.took(BackedUp(run_backup(site, name)))

``took`` hands a result of the job over and returns it. The result says what goes in the
journal itself (its ``journal_fields()``: a ``JournalFields`` of row columns, details, a
failure found without an exception, rows of their own, a drill's RTO): a backup's snapshot,
bytes read/new/stored, files, documents; a replication's copies, each journaled as a
``replicate`` row of its own target with its own failure alert; a check (failed when damage
was found), a prune, a restore, a recovery, or a drill (failed when it did not pass; its RTO
in details).
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
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from .. import clock
from ..errors import EmberkeepError, UsageError, error_text, is_disk_full, state_dir_full
from ..journal import Entry, Journal
from ..site import Site
from . import anomalies
from .notify import Alert, Notifier

Warn = Callable[[str], None]


@dataclass
class Rto:
    """A drill's measured restore time against its source's objective (the ``rto`` alert)."""

    ok: bool | None  # None: the source has no RTO objective
    seconds: float
    objective_seconds: float | None


@dataclass
class JournalFields:
    """What one result of a job puts in the journal: each result type says it itself
    (its ``journal_fields()``, runner/jobs.py), and ``Job.took`` writes it."""

    row: dict[str, Any] = field(default_factory=dict)  # Entry columns: source, snapshot, bytes…
    details: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None  # the run failed though nothing raised (damage, a difference)
    rows: list[Entry] = field(default_factory=list)  # rows of their own (a copy per target)
    rto: Rto | None = None  # a drill's: it restored and measured


class Journaled(Protocol):
    """A job's result: it knows its own journal fields."""

    def journal_fields(self) -> JournalFields: ...


R = TypeVar("R", bound=Journaled)


class Job:
    """One watched run: its journal row, and what ``took`` was given."""

    def __init__(self, site: Site, journal: Journal, entry: Entry, warn: Warn) -> None:
        self.site = site
        self.journal = journal
        self.entry = entry
        self.warn = warn
        self.copies: list[Entry] = []  # rows of their own journaled by took()
        self.rto: Rto | None = None

    def took(self, result: R) -> R:
        """Record ``result`` of the job (module docstring); returns it unchanged."""
        fields = result.journal_fields()
        for column, value in fields.row.items():
            setattr(self.entry, column, value)
        self.entry.details.update(fields.details)
        for row in fields.rows:
            self._add(row)
        if fields.rto is not None:
            self.rto = fields.rto
        if fields.failed is not None:
            self.fail(fields.failed)
        return result

    def fail(self, error: str) -> None:
        """Mark the run failed without an exception (e.g. a check that found damage)."""
        self.entry.outcome, self.entry.error = "failed", error

    def _add(self, row: Entry) -> None:
        try:
            self.journal.add(row)
        except Exception as exc:  # the copy is done (or reported failed): only warn
            self.warn(
                f"the copy to target {row.target} was not journaled: "
                f"{_journal_problem(self.site, exc)}"
            )
        self.copies.append(row)


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
    if entry.kind == "drill" and job.rto is None and not entry.ok:
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
    if entry.kind == "drill" and job.rto is not None and job.rto.ok is not None:
        rto = Alert(
            "rto", f"source {entry.source}: the last drill breached the RTO", source=entry.source
        )
        if job.rto.ok:
            rto.summary = f"source {entry.source}: the last drill met the RTO"
            notifier.resolve(rto)
        else:
            rto.detail = (
                f"the restore took {job.rto.seconds:.1f}s; the RTO is "
                f"{job.rto.objective_seconds:.0f}s"
            )
            notifier.raise_(rto)


def _after_backup(job: Job, notifier: Notifier) -> None:
    site, entry, journal = job.site, job.entry, job.journal
    monitor = site.config.monitor
    source = entry.source or ""
    earlier = journal.entries(
        kind="backup",
        source=source,
        outcome="ok",
        limit=monitor.anomaly_runs + 1,
        newest_first=True,
    )
    history = [anomalies.measures(e) for e in earlier if e.id != entry.id]
    found = anomalies.backup_anomalies(
        anomalies.measures(entry), history[: monitor.anomaly_runs], change=monitor.anomaly_change
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
