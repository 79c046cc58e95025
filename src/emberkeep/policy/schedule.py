"""Schedules: cron expressions and aliases in the site's timezone, and which jobs are due.

Pure functions of expressions, past runs and a time: no I/O, no clock reads.

Semantics of ``due_jobs`` (anacron's, on cron slots):

- A job is due when a slot of its schedule has passed since it last ran (started), whatever
  that run's outcome: a failed job waits for its next slot rather than retrying in a loop.
- However many slots passed while nothing ran (the daemon was down, or one job ran past
  the next slot), the job runs once: a catch-up, not one run per missed slot.
- A job that never ran counts from ``since`` (when the scheduler first saw it): a slot at
  or after that time makes it due. A newly scheduled job does not fire at once.

Timezones (``[site] timezone``, an IANA name; UTC by default). Expressions are read in
the zone's wall-clock time, and the two daylight-saving changes are handled as cronie does
(README, "Schedules"):

- a wall time that does not exist (02:30 on the spring-forward night in Europe/Berlin)
  fires once, at the first instant after the gap (03:00 local): the night is not skipped;
- a wall time that happens twice (02:30 on the fall-back night) fires once, at its first
  occurrence, when the expression names its hours; a job running every hour (hour field
  ``*``) fires in both passes of the repeated hour, as the hours really pass.

Every instant returned is UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from ..cron import Cron


@dataclass(frozen=True)
class Job:
    """One schedulable job: ``name`` like ``backup:media``, ``prune`` or ``check``."""

    name: str
    schedule: str
    zone: str = "UTC"  # an IANA name: the wall clock the schedule is read in


@dataclass(frozen=True)
class History:
    """What a job's schedule needs from its past: its last start, or when it was first seen."""

    since: datetime
    last_run: datetime | None = None


def expression(schedule: str) -> str:
    """The five-field cron expression of ``schedule`` (an alias like @daily resolved): the
    config's ``Cron`` carries it; a plain string (a test's, or ``schedule --print``'s) is
    read here."""
    return (schedule if isinstance(schedule, Cron) else Cron(schedule)).expr


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


_STUCK_LIMIT = 1000  # slots in a row that do not move on (a repeated hour holds at most 60)


@lru_cache(maxsize=16)
def zone_of(name: str) -> tzinfo:
    """The ``tzinfo`` of an IANA zone name (the config check has vetted it)."""
    return UTC if name == "UTC" else ZoneInfo(name)


def _hours_named(schedule: str) -> bool:
    """Whether the expression restricts its hour field (a repeated hour then fires once)."""
    fields = expression(schedule).split()
    return len(fields) >= 2 and fields[1] != "*"


def _second_pass(moment: datetime, zone: tzinfo) -> bool:
    """Whether the UTC ``moment`` is the second occurrence of a repeated wall time."""
    local = moment.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).astimezone(UTC) != moment


def _slots(schedule: str, start: datetime, zone: str, *, forward: bool) -> Iterator[datetime]:
    """The slots of ``schedule`` from ``start`` on (or back), in UTC, strictly moving away
    from ``start``, each once, second passes of a repeated hour dropped (module docstring)."""
    tz = zone_of(zone)
    start = _utc(start)
    it = croniter(expression(schedule), start.astimezone(tz))
    step = it.get_next if forward else it.get_prev
    drop_repeats = tz is not UTC and _hours_named(schedule)
    last, stuck = start, 0
    while True:
        moment = _utc(step(datetime))
        if (moment > last if forward else moment < last) and not (
            drop_repeats and _second_pass(moment, tz)
        ):
            last, stuck = moment, 0
            yield moment
        else:
            stuck += 1
            if stuck > _STUCK_LIMIT:  # never seen; a loop here would hang the scheduler
                raise ValueError(f"{schedule!r} in {zone}: no further slot found")


def next_time(schedule: str, after: datetime, zone: str = "UTC") -> datetime:
    """The first slot of ``schedule`` strictly after ``after``, in UTC."""
    return next(_slots(schedule, after, zone, forward=True))


def last_slot(schedule: str, at: datetime, zone: str = "UTC") -> datetime:
    """The latest slot of ``schedule`` at or before ``at``, in UTC."""
    at = _utc(at)
    candidate = next_time(schedule, at - timedelta(seconds=1), zone)
    if candidate <= at:
        return candidate
    return next(_slots(schedule, at, zone, forward=False))


def is_due(schedule: str, history: History, now: datetime, zone: str = "UTC") -> bool:
    slot = last_slot(schedule, now, zone)
    if history.last_run is None:
        return _utc(history.since) <= slot
    return slot > _utc(history.last_run)


def due_jobs(jobs: Iterable[Job], history: Mapping[str, History], now: datetime) -> list[Job]:
    """The jobs due at ``now``, in the order given; a job without history is never due."""
    return [
        j for j in jobs if j.name in history and is_due(j.schedule, history[j.name], now, j.zone)
    ]


def next_due(jobs: Iterable[Job], history: Mapping[str, History], now: datetime) -> datetime | None:
    """When the next job falls due after ``now`` (None when there are no jobs)."""
    times = [next_time(j.schedule, now, j.zone) for j in jobs if j.name in history]
    return min(times, default=None)


def skipped_wall_times(schedule: str, zone: str, start: datetime, days: int = 366) -> list[str]:
    """Wall times of ``schedule`` that do not exist in ``zone`` (a spring-forward gap) in
    the ``days`` from ``start``, like ``2026-03-29 02:30``: ``next_time`` runs them at the
    end of the gap, but systemd timers skip them (README, "Schedules")."""
    tz = zone_of(zone)
    if tz is UTC:
        return []
    found = []
    moment = _utc(start).replace(minute=0, second=0, microsecond=0)
    end = moment + timedelta(days=days)
    offset = moment.astimezone(tz).utcoffset()
    while moment < end:
        later = moment + timedelta(hours=1)
        new_offset = later.astimezone(tz).utcoffset()
        if offset is not None and new_offset is not None and new_offset > offset:
            wall = later.astimezone(tz).replace(tzinfo=None) - (new_offset - offset)
            for minute in range(int((new_offset - offset).total_seconds() // 60)):
                candidate = wall + timedelta(minutes=minute)
                if croniter.match(expression(schedule), candidate):
                    found.append(f"{candidate:%Y-%m-%d %H:%M}")
        moment, offset = later, new_offset
    return found


# -- systemd OnCalendar -------------------------------------------------------------------

_DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def on_calendar(schedule: str, zone: str = "UTC") -> list[str]:
    """systemd ``OnCalendar=`` values that fire at the slots of ``schedule`` in ``zone``
    (systemd reads the trailing zone name itself; across a DST change it may place a
    nonexistent time differently from ``next_time``: README, "Schedules").

    Each field is expanded to its values (ranges and steps become lists). Cron runs a job
    when the day of month OR the weekday matches if both are restricted, where systemd
    requires both: that case gives two values (a timer ORs its OnCalendar lines). Cron's
    ``L`` (last day) and ``#`` (nth weekday) have no translation: ValueError.
    """
    fields, nth = croniter.expand(expression(schedule))
    if nth or any(isinstance(v, str) and v != "*" for f in fields for v in f):
        raise ValueError(f"{schedule!r}: 'L' and '#' have no systemd OnCalendar translation")
    minute, hour, dom, month, dow = (_listed(f) for f in fields)
    time_part = f"{hour}:{minute}:00 {zone}"
    if dow != "*":
        dow = ",".join(_DAY_NAMES[int(d) % 7] for d in fields[4])
    if dom != "*" and dow != "*":
        return [f"{dow} *-{month}-* {time_part}", f"*-{month}-{dom} {time_part}"]
    prefix = f"{dow} " if dow != "*" else ""
    return [f"{prefix}*-{month}-{dom} {time_part}"]


def _listed(values: list[Any]) -> str:
    if values == ["*"]:
        return "*"
    return ",".join(f"{int(v):02d}" for v in values)
