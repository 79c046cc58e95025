"""Schedules that clash: a scheduled prune against every other job that takes a lease
(part of the meaning pass, ``checks``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from ..cron import Cron
from .schema import Config

# Schedules that cannot both run. A scheduled prune takes the exclusive lease on every
# target, so a backup, check or replicate started by cron or a systemd timer in the same
# minute fails on its lease (or the prune does). Two jobs of one kind on one source cannot
# clash: each source has one schedule and a unique name. Compared over a fixed year
# (deterministic, and every month and weekday), in whole minutes as cron fires.
SCHEDULE_HORIZON_START = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE_HORIZON = timedelta(days=366)
SCHEDULE_SCAN_LIMIT = 20_000  # steps per expression for one pair; then assume no clash


def schedule_clash_problems(config: Config, field: Callable[..., str]) -> Iterator[tuple[str, str]]:
    """``prune.schedule`` against every schedule whose job takes a lease on the targets."""
    prune = _cron(config.prune.schedule)
    if prune is None:  # unset, or invalid: that is its own problem
        return
    others = [(field("sources", i, "schedule"), s.schedule) for i, s in enumerate(config.sources)]
    others.append((field("check", "schedule"), config.check.schedule))
    others.append((field("replicate", "schedule"), config.replicate.schedule))
    others.append((field("drill", "schedule"), config.drill.schedule))
    for where, value in others:
        other = _cron(value)
        if other is None:
            continue
        first = _first_shared_minute(prune, other)
        if first is None:
            continue
        yield (
            field("prune", "schedule"),
            (
                f"fires at the same minute as {where} ({value!r}; first at "
                f"{first:%Y-%m-%d %H:%M} UTC); prune locks every target, so one of them "
                f"would fail: move one of them (got {config.prune.schedule!r})"
            ),
        )


def _first_shared_minute(a: str, b: str) -> datetime | None:
    """The first minute of the horizon at which cron expressions ``a`` and ``b`` both fire.

    A leapfrog join: the side that is behind jumps to its first slot at or after the other's,
    so the steps number about the rarer schedule's slots, not every minute; at most
    ``SCHEDULE_SCAN_LIMIT`` a side. None when they do not meet within the horizon (or the
    limit, which only expressions firing thousands of times apart without meeting reach).
    """
    from croniter import croniter

    if not _fields_can_meet(a, b):
        return None
    end = SCHEDULE_HORIZON_START + SCHEDULE_HORIZON
    before = SCHEDULE_HORIZON_START - timedelta(minutes=1)  # the start minute counts
    iters = [croniter(a, before), croniter(b, before)]
    times: list[datetime] = [it.get_next(datetime) for it in iters]
    steps = [1, 1]
    while max(times) < end:
        if times[0] == times[1]:
            return times[0]
        behind = 0 if times[0] < times[1] else 1
        if steps[behind] >= SCHEDULE_SCAN_LIMIT:
            return None
        iters[behind].set_current(times[1 - behind] - timedelta(minutes=1), force=True)
        times[behind] = iters[behind].get_next(datetime)
        steps[behind] += 1
    return None


def _fields_can_meet(a: str, b: str) -> bool:
    """False when the minutes, hours or months of ``a`` and ``b`` share no value."""
    from croniter import croniter

    fields_a, fields_b = croniter.expand(a)[0], croniter.expand(b)[0]
    for index in (0, 1, 3):  # minute, hour, month: plain numbers or '*'
        values_a, values_b = fields_a[index], fields_b[index]
        if "*" in values_a or "*" in values_b:
            continue
        if not set(values_a) & set(values_b):
            return False
    return True


def _cron(value: Cron | None) -> str | None:
    """The five-field cron expression of a schedule that parses; None if unset or invalid."""
    return None if value is None or value.problem else value.expr
