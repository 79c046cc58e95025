"""The scheduler (`emberkeep run`): runs due jobs one at a time, records each, survives failures.

Jobs: each source with a ``schedule`` is backed up (and copied to the other targets),
``[replicate] schedule`` copies what targets missed, ``[prune] schedule`` prunes every target,
``[check] schedule`` checks every target. When jobs are due is ``policy.schedule``'s rule
(catch-up once, a failed job waits for its next slot). Each finished job is recorded in
``state_dir/scheduler.json`` (last start, outcome, error); a job the process did not finish
(killed, or aborted by a second signal) is not recorded, so the next start catches it up.
Every run is also journaled, with its alerts (``monitor.jobs.watch``), and after each batch
``after_jobs`` runs (the CLI's: status alerts, metrics textfile and server, monitor/metrics.py).

Time: ``EMBERKEEP_NOW`` (when set) is the start. With ``until`` the clock is simulated: the
loop jumps to the next due time instead of sleeping and stops once that is past ``until``.
Otherwise it runs in real time (from the pinned start, when set), sleeping in short steps.
Every job sees the scheduler's time through ``EMBERKEEP_NOW``.

Signals: the first SIGTERM/SIGINT lets the running job finish (a backup commits its snapshot
or fails whole) and stops the loop; a second aborts at once (KeyboardInterrupt). Neither can
leave a partial snapshot: the snapshot is the commit point, written last and atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from .. import clock, statefile
from ..config import Config
from ..errors import EmberkeepError, UsageError, is_disk_full, state_dir_full
from ..fsutil import write_atomic
from ..policy.schedule import History, Job, due_jobs, next_due
from ..site import Site
from .stopping import Stopper

STATE_FILE = "scheduler.json"
SLEEP_STEP = 0.5  # seconds: how promptly a sleeping scheduler notices a signal


def jobs_of(config: Config) -> list[Job]:
    """The scheduled jobs, in the order they run when due together."""
    zone = config.site.timezone
    jobs = [Job(f"backup:{s.name}", s.schedule, zone) for s in config.sources if s.schedule]
    if config.replicate.schedule:
        jobs.append(Job("replicate", config.replicate.schedule, zone))
    if config.prune.schedule:
        jobs.append(Job("prune", config.prune.schedule, zone))
    if config.check.schedule:
        jobs.append(Job("check", config.check.schedule, zone))
    if config.drill.schedule:
        jobs.append(Job("drill", config.drill.schedule, zone))
    return jobs


# -- the state file ---------------------------------------------------------------------


@dataclass
class JobRecord:
    since: str  # when the scheduler first saw the job (ISO 8601)
    last_run: str | None = None  # start of the last finished run
    finished: str | None = None
    outcome: str | None = None  # "ok" or "failed"
    error: str | None = None
    detail: str | None = None
    seconds: float | None = None


class SchedulerState:
    """``state_dir/scheduler.json``: one record per job, written atomically, mode 0600."""

    def __init__(self, path: Path, jobs: dict[str, JobRecord]) -> None:
        self.path = path
        self.jobs = jobs

    @classmethod
    def load(cls, path: Path, warn: Callable[[str], None]) -> SchedulerState:
        """The saved state; one that cannot be read or has the wrong shape is reported,
        moved aside to ``scheduler.json.damaged`` and started afresh (jobs then wait for
        their next slot), never a reason for ``run`` to stop (``statefile``)."""
        jobs: dict[str, JobRecord] = statefile.load(
            path, _parse_jobs, dict, warn, what="a scheduler state",
            then="started afresh: each job waits for its next slot",
        )  # fmt: skip
        return cls(path, jobs)

    def save(self, warn: Callable[[str], None]) -> None:
        """Write the state; a failure (a full disk) is warned about, and the next save
        tries again: the jobs' runs are journaled all the same."""
        data = {"version": 1, "jobs": {name: asdict(r) for name, r in self.jobs.items()}}
        try:
            write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)
        except OSError as exc:
            full = is_disk_full(exc, self.path.parent)
            reason = state_dir_full(self.path.parent) if full else exc.strerror
            warn(f"{self.path}: not saved ({reason}); it is saved again after the next job")

    def adopt(self, jobs: list[Job], now: datetime) -> None:
        """Start counting new jobs from ``now``."""
        for job in jobs:
            self.jobs.setdefault(job.name, JobRecord(since=now.isoformat()))

    def history(self) -> dict[str, History]:
        def parse(text: str | None) -> datetime | None:
            return clock.parse_time(text) if text else None

        return {
            name: History(since=clock.parse_time(r.since), last_run=parse(r.last_run))
            for name, r in self.jobs.items()
        }


class _StateFile(msgspec.Struct):
    jobs: dict[str, JobRecord]


def _parse_jobs(data: bytes) -> dict[str, JobRecord]:
    """The job records of a state file; raises on any wrong type or unreadable time."""
    jobs = msgspec.json.decode(data, type=_StateFile).jobs
    for record in jobs.values():
        for moment in (record.since, record.last_run, record.finished):
            if moment is not None:
                clock.parse_time(moment)
        if record.outcome not in (None, "ok", "failed"):
            raise ValueError(f"outcome {record.outcome!r} is neither ok nor failed")
    return jobs


# -- events, as the CLI prints them -----------------------------------------------------


@dataclass
class Event:
    kind: str  # "start" or "end"
    job: str
    time: datetime
    outcome: str | None = None
    detail: str | None = None
    error: str | None = None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data = {"event": data.pop("kind"), **data, "time": clock.iso(self.time)}
        return {k: v for k, v in data.items() if v is not None}

    def text(self) -> str:
        head = f"{clock.iso(self.time)} {self.job}"
        if self.kind == "start":
            return f"{head}: started"
        took = f" in {self.seconds:.1f}s" if self.seconds is not None else ""
        if self.outcome == "ok":
            return f"{head}: ok{took}" + (f": {self.detail}" if self.detail else "")
        return f"{head}: FAILED{took}: {self.error}"


# -- the jobs ---------------------------------------------------------------------------


def run_job(
    site: Site, job: Job, read_data_subset: str | None = None, *, progress: Any = None
) -> str:
    """Run one job (runner/jobs.py, journaled with its alerts); a one-line summary, or raises.

    Besides the scheduled jobs, ``drill:SOURCE`` drills one source and ``check:TARGET``
    checks one target: the dashboard's actions run this same function (web/dashboard.py),
    and ``progress`` (an ``engine.backup.Progress``) watches its backups."""
    from . import jobs

    kind, scoped, name = job.name.partition(":")
    if kind == "backup" and scoped:
        return jobs.backup(site, name, progress=progress).summary()
    if job.name == "replicate":
        return jobs.replicate(site).summary()
    if job.name == "prune":
        return "; ".join(pruned.summary() for pruned in jobs.prune(site))
    if kind == "check":
        subset = site.config.check.read_data_subset
        # a damaged target stops the job: the targets after it are checked next time
        return "; ".join(
            checked.summary() for checked in jobs.check(site, name or None, subset=subset)
        )
    if kind == "drill":
        return jobs.drills_summary(list(jobs.drill(site, [name] if scoped else [])))
    raise UsageError(f"unknown job {job.name!r}")


def _error_text(exc: Exception) -> str:
    if isinstance(exc, EmberkeepError):
        return str(exc)
    return f"{type(exc).__name__}: {exc} (unexpected; please report it)"


# -- clocks -----------------------------------------------------------------------------


class SimulatedClock:
    """Jumps instead of sleeping."""

    simulated = True

    def __init__(self, start: datetime) -> None:
        self.moment = start

    def now(self) -> datetime:
        return self.moment

    def wait_until(self, moment: datetime, stopping: Callable[[], bool]) -> bool:
        self.moment = max(self.moment, moment)
        return not stopping()


class RealClock:
    """Real time, shifted so that it starts at ``start`` (EMBERKEEP_NOW, when pinned)."""

    simulated = False

    def __init__(self, start: datetime | None, sleep: Callable[[float], None] = time.sleep):
        self.offset = start - datetime.now(UTC) if start else timedelta(0)
        self.pinned = start is not None
        self.sleep = sleep

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def wait_until(self, moment: datetime, stopping: Callable[[], bool]) -> bool:
        while not stopping():
            left = (moment - self.now()).total_seconds()
            if left <= 0:
                return True
            self.sleep(min(left, SLEEP_STEP))
        return False


@contextlib.contextmanager
def _single_instance(state_dir: Path) -> Iterator[None]:
    path = state_dir / "scheduler.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmberkeepError(
                f"another `emberkeep run` uses {state_dir} (it holds {path}); stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


# -- the loop ---------------------------------------------------------------------------


@dataclass
class Options:
    until: datetime | None = None
    once: bool = False
    jitter: float = 0.0  # seconds: each wake-up is delayed by up to this much


class Scheduler:
    def __init__(
        self,
        site: Site,
        options: Options,
        on_event: Callable[[Event], None] = lambda event: None,
        rng: random.Random | None = None,
        after_jobs: Callable[[], None] = lambda: None,
        warn: Callable[[str], None] = lambda text: None,
        job_lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self.site = site
        # held around each job: `run --web` shares it with the dashboard's, one at a time
        self.job_lock = job_lock or contextlib.nullcontext()
        self.warn = warn
        self.after_jobs = after_jobs  # at the start and after each batch: status, metrics
        self.options = options
        self.on_event = on_event
        self.rng = rng or random.Random()
        self.jobs = jobs_of(site.config)
        self.failures = 0
        pinned = bool(os.environ.get(clock.ENV_VAR))
        start = clock.now()
        if options.until is not None and options.until < start:
            raise UsageError(
                f"--until {clock.iso(options.until)} is before the start, {clock.iso(start)} "
                f"(EMBERKEEP_NOW or now); give a later time"
            )
        self.clock: SimulatedClock | RealClock = (
            SimulatedClock(start) if options.until else RealClock(start if pinned else None)
        )
        self.pin_time = self.clock.simulated or pinned

    def run(self) -> int:
        """Run until stopped (or past ``until``, or once).

        Returns 1 when a job failed in a bounded run (``once`` or ``until``), else 0: a
        daemon stopped by a signal stopped as asked; its jobs' failures are in the state.
        """
        if not self.jobs:
            raise UsageError(
                f"{self.site.config.path}: nothing to run: give a source, [prune] or [check] a "
                'schedule (like schedule = "@daily")'
            )
        state_dir = self.site.state_dir
        with _single_instance(state_dir), Stopper("the running job").installed() as stopper:
            state = SchedulerState.load(state_dir / STATE_FILE, self.warn)
            state.adopt(self.jobs, self.clock.now())
            state.save(self.warn)
            self._after_jobs()
            self._loop(state, stopper)
        bounded = self.options.once or self.options.until is not None
        return 1 if self.failures and bounded else 0

    def _loop(self, state: SchedulerState, stopper: Stopper) -> None:
        def stopping() -> bool:
            return stopper.stopping

        while True:
            ran = False
            for job in due_jobs(self.jobs, state.history(), self.clock.now()):
                if stopping():
                    break
                self._run_one(job, state)
                ran = True
            if ran:
                self._after_jobs()
            if self.options.once or stopping():
                return
            upcoming = next_due(self.jobs, state.history(), self.clock.now())
            if upcoming is None or (self.options.until and upcoming > self.options.until):
                return
            wake = upcoming + timedelta(seconds=self.rng.uniform(0, self.options.jitter))
            if not self.clock.wait_until(wake, stopping):
                return

    def _after_jobs(self) -> None:
        """Status alerts and metrics, at the scheduler's time (a simulated one too)."""
        with _time_pinned(self.clock.now() if self.pin_time else None):
            self.after_jobs()

    def _run_one(self, job: Job, state: SchedulerState) -> None:
        started = self.clock.now()
        self.on_event(Event("start", job.name, started))
        t0 = time.monotonic()
        try:
            with self.job_lock, _time_pinned(started if self.pin_time else None):
                detail, error = run_job(self.site, job), None
        except Exception as exc:  # the loop survives any job's failure
            detail, error = None, _error_text(exc)
        seconds = round(time.monotonic() - t0, 3)
        record = state.jobs[job.name]
        record.last_run = started.isoformat()
        record.finished = (started if self.clock.simulated else self.clock.now()).isoformat()
        record.outcome = "failed" if error else "ok"
        record.error, record.detail, record.seconds = error, detail, seconds
        state.save(self.warn)
        self.failures += bool(error)
        event = Event("end", job.name, started, record.outcome, detail, error, seconds)
        self.on_event(event)


@contextlib.contextmanager
def _time_pinned(moment: datetime | None) -> Iterator[None]:
    """``EMBERKEEP_NOW`` set to ``moment`` while a job runs (its hooks and children read the
    same time), and put back as it was after: the pin is the job's, not the process's."""
    if moment is None:
        yield
        return
    before = os.environ.get(clock.ENV_VAR)
    os.environ[clock.ENV_VAR] = clock.iso(moment)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(clock.ENV_VAR, None)
        else:
            os.environ[clock.ENV_VAR] = before
