"""Schedules (issue 5): cron expressions and aliases over UTC, and which jobs are due.

Pure functions of expressions, past runs and a time: no I/O, no clock reads.

Semantics of ``due_jobs`` (anacron's, on cron slots):

- A job is due when a slot of its schedule has passed since it last ran (started), whatever
  that run's outcome: a failed job waits for its next slot rather than retrying in a loop.
- However many slots passed while nothing ran (the daemon was down, or one job ran past
  the next slot), the job runs once: a catch-up, not one run per missed slot.
- A job that never ran counts from ``since`` (when the scheduler first saw it): a slot at
  or after that time makes it due. A newly scheduled job does not fire at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from ..config import SCHEDULE_ALIASES


@dataclass(frozen=True)
class Job:
    """One schedulable job: ``name`` like ``backup:media``, ``prune`` or ``check``."""

    name: str
    schedule: str


@dataclass(frozen=True)
class History:
    """What a job's schedule needs from its past: its last start, or when it was first seen."""

    since: datetime
    last_run: datetime | None = None


def expression(schedule: str) -> str:
    """The five-field cron expression of ``schedule`` (an alias like @daily resolved)."""
    text = schedule.strip()
    return SCHEDULE_ALIASES.get(text, text)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def next_time(schedule: str, after: datetime) -> datetime:
    """The first slot of ``schedule`` strictly after ``after``, in UTC."""
    value = croniter(expression(schedule), _utc(after)).get_next(datetime)
    return _utc(value)


def last_slot(schedule: str, at: datetime) -> datetime:
    """The latest slot of ``schedule`` at or before ``at``, in UTC."""
    at = _utc(at)
    candidate = next_time(schedule, at - timedelta(seconds=1))
    if candidate <= at:
        return candidate
    return _utc(croniter(expression(schedule), at).get_prev(datetime))


def is_due(schedule: str, history: History, now: datetime) -> bool:
    slot = last_slot(schedule, now)
    if history.last_run is None:
        return _utc(history.since) <= slot
    return slot > _utc(history.last_run)


def due_jobs(jobs: Iterable[Job], history: Mapping[str, History], now: datetime) -> list[Job]:
    """The jobs due at ``now``, in the order given; a job without history is never due."""
    return [j for j in jobs if j.name in history and is_due(j.schedule, history[j.name], now)]


def next_due(jobs: Iterable[Job], history: Mapping[str, History], now: datetime) -> datetime | None:
    """When the next job falls due after ``now`` (None when there are no jobs)."""
    times = [next_time(j.schedule, now) for j in jobs if j.name in history]
    return min(times, default=None)


# -- systemd OnCalendar -------------------------------------------------------------------

_DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def on_calendar(schedule: str) -> list[str]:
    """systemd ``OnCalendar=`` values (UTC) that fire exactly at the slots of ``schedule``.

    Each field is expanded to its values (ranges and steps become lists). Cron runs a job
    when the day of month OR the weekday matches if both are restricted, where systemd
    requires both: that case gives two values (a timer ORs its OnCalendar lines). Cron's
    ``L`` (last day) and ``#`` (nth weekday) have no translation: ValueError.
    """
    fields, nth = croniter.expand(expression(schedule))
    if nth or any(isinstance(v, str) and v != "*" for f in fields for v in f):
        raise ValueError(f"{schedule!r}: 'L' and '#' have no systemd OnCalendar translation")
    minute, hour, dom, month, dow = (_listed(f) for f in fields)
    time_part = f"{hour}:{minute}:00"
    if dow != "*":
        dow = ",".join(_DAY_NAMES[int(d) % 7] for d in fields[4])
    if dom != "*" and dow != "*":
        return [f"{dow} *-{month}-* {time_part} UTC", f"*-{month}-{dom} {time_part} UTC"]
    prefix = f"{dow} " if dow != "*" else ""
    return [f"{prefix}*-{month}-{dom} {time_part} UTC"]


def _listed(values: list[Any]) -> str:
    if values == ["*"]:
        return "*"
    return ",".join(f"{int(v):02d}" for v in values)
