"""Anomalies: a backup unlike the ones before it, and a target running out of space.

A backup's **measures** are the bytes it read, its file count and, for a mongodb source,
its document count and their bytes (the snapshot's ``extra.mongodb.documents`` and
``bytes``; the oplog window left out). Each is compared with the
median of the same measure over the source's last ``[monitor] anomaly_runs`` (default 5)
successful backups in the journal; a change of more than ``anomaly_change`` (default 0.3,
i.e. 30%) up or down is an anomaly. A database that suddenly backs up half its documents
is the first sign of data loss; a media tree that doubles may be a runaway upload. A
median of 0 (nothing there before) is not compared. The first backup of a source has
nothing to compare with.

**Space**: a target is low on space when its free bytes (local and SFTP targets; S3 does
not say) are under ``[monitor] min_free`` (default 1GiB), or under what the backups are
expected to write there before the next prune: for each source, the median bytes a recent
backup stored times the number of its scheduled runs until the next ``[prune] schedule``
slot (one run each when prune has no schedule, or the source none).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ..config import Config, Target
from ..journal import Entry, Journal
from ..ui import human_bytes

MEASURES = ("bytes", "files", "documents")
MAX_RUNS_COUNTED = 1000  # scheduled runs counted before a prune (an hourly source, 6 weeks)


@dataclass
class Anomaly:
    measure: str  # bytes | files | documents
    value: int
    median: float
    change: float  # (value - median) / median: -0.5 is half of the usual
    runs: int  # how many earlier backups the median is of

    def text(self, source: str) -> str:
        direction = "below" if self.change < 0 else "above"
        value, median = self.value, self.median
        if self.measure == "bytes":
            shown = f"size {human_bytes(value)}"
            usual = human_bytes(median)
        else:
            shown, usual = f"{value} {self.measure}", f"{median:g}"
        return (
            f"source {source}: {shown}, {abs(self.change):.0%} {direction} the median of its "
            f"last {self.runs} backups ({usual})"
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["change"] = round(self.change, 4)
        return data


def measures(entry: Entry) -> dict[str, int]:
    """The measures of one journaled backup (those it has).

    For a mongodb source, bytes are its documents' (``data_bytes``): what it read also holds
    the oplog window, whose size says nothing about the data.
    """
    details = entry.details
    found = {
        "bytes": details.get("data_bytes", entry.bytes),
        "files": entry.files,
        "documents": details.get("documents"),
    }
    return {k: int(v) for k, v in found.items() if isinstance(v, int | float)}


def backup_anomalies(
    current: dict[str, int], history: Sequence[dict[str, int]], *, change: float
) -> list[Anomaly]:
    """The measures of ``current`` that differ from the median of ``history`` by > ``change``."""
    found = []
    for measure in MEASURES:
        if measure not in current:
            continue
        past = [h[measure] for h in history if measure in h]
        if not past:
            continue
        median = statistics.median(past)
        if median <= 0:
            continue
        delta = (current[measure] - median) / median
        if abs(delta) > change:
            found.append(Anomaly(measure, current[measure], median, delta, len(past)))
    return found


def expected_writes(recent: Mapping[str, Iterable[int]], runs_until: dict[str, int]) -> int:
    """Bytes the sources should store before the horizon: median per run times runs."""
    total = 0
    for source, sizes in recent.items():
        values = list(sizes)
        if values:
            total += int(statistics.median(values)) * runs_until.get(source, 1)
    return total


def runs_before(
    schedule: str | None, now: datetime, until: datetime | None, zone: str = "UTC"
) -> int:
    """How many slots of ``schedule`` fall in (now, until]; at least one."""
    if schedule is None or until is None:
        return 1
    from ..policy.schedule import next_time

    count, moment = 0, now
    while count < MAX_RUNS_COUNTED:
        moment = next_time(schedule, moment, zone)
        if moment > until:
            break
        count += 1
    return max(count, 1)


def space_problem(
    target: str, free: int | None, *, min_free: int, need: int, until: datetime | None
) -> str | None:
    """Why ``target`` is low on space, or None (also when its free space is unknown)."""
    if free is None:
        return None
    if free < min_free:
        return (
            f"target {target}: {human_bytes(free)} free, under the minimum of "
            f"{human_bytes(min_free)} ([monitor] min_free)"
        )
    if need > free:
        when = f"the next prune at {until:%Y-%m-%d %H:%M} UTC" if until else "the next backups"
        return (
            f"target {target}: {human_bytes(free)} free, but backups are expected to store "
            f"about {human_bytes(need)} before {when}: it will run out"
        )
    return None


def horizon(prune_schedule: str | None, now: datetime, zone: str = "UTC") -> datetime | None:
    """Until when space must last: the next scheduled prune (None when prune has none)."""
    if prune_schedule is None:
        return None
    from ..policy.schedule import next_time

    return next_time(prune_schedule, now, zone)


def expected_need(
    config: Config, journal: Journal, target: Target, now: datetime
) -> tuple[int, datetime | None]:
    """Bytes backups should store in ``target`` before the next prune, and when that is.

    Only the primary and targets that take every snapshot (``copies = "all"``) are
    predicted; the others receive a snapshot a week or a month.
    """
    until = horizon(config.prune.schedule, now, config.site.timezone)
    if target.name != config.targets[0].name and target.copies != "all":
        return 0, until
    recent: dict[str, list[int]] = {}
    runs: dict[str, int] = {}
    for source in config.sources:
        entries = journal.entries(
            kind="backup",
            source=source.name,
            outcome="ok",
            limit=config.monitor.anomaly_runs,
            newest_first=True,
        )
        recent[source.name] = [e.bytes_written for e in entries if e.bytes_written is not None]
        runs[source.name] = runs_before(source.schedule, now, until, config.site.timezone)
    return expected_writes(recent, runs), until
