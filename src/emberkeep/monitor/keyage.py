"""The age of each target's newest read-key epoch, against ``[keys] rotate_every`` (status).

When an epoch began is listed in the target's sealed ``keys/recipients`` record
(repository/epochs.py, ``Epoch.created``), which is read with the writer key: no identity is
needed, so a write-only backup host sees it. The epoch that counts is the current one, which
new packs are wrapped to (the newest by number if the record names none). Past
``rotate_every`` it is a warning, never a breach: the data is as safe as it was yesterday,
only the rotation the strategy asks for is due (README, "Keys and team changes").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .. import clock
from ..durations import Duration
from ..repository.recipients import Epoch, Record
from .report import Report, TargetStatus, ago


@dataclass(frozen=True)
class NewestEpoch:
    """What ``keys/recipients`` says of a target's epochs: its newest (None: the repository
    is from before epochs), or why it could not be read."""

    epoch: Epoch | None = None
    error: str | None = None


def newest(record: Record | None) -> NewestEpoch:
    if record is None or not record.epochs:
        return NewestEpoch()
    return NewestEpoch(record.current_epoch() or max(record.epochs, key=lambda e: e.number))


def add_status(
    target: str,
    found: NewestEpoch,
    now: datetime,
    rotate_every: Duration | None,
    status: TargetStatus,
    report: Report,
) -> None:
    """The target's ``key_epoch`` (its number, start, age, whether a rotation is due) and the
    warning when it is past ``rotate_every``."""
    if found.error is not None:
        report.warnings.append(f"target {target}: the key epochs cannot be read: {found.error}")
        return
    epoch = found.epoch
    if epoch is None:
        status.key_epoch = {"number": None, "created": None, "age_seconds": None,
                            "rotate_every": rotate_every, "rotation_due": None}  # fmt: skip
        if rotate_every is not None:
            report.warnings.append(
                f"target {target}: its repository is from before key epochs, so "
                f"[keys] rotate_every = {rotate_every} cannot be followed: run "
                "`emberkeep keys convert`, then `emberkeep keys rotate`"
            )
        return
    created = clock.parse_time(epoch.created)
    age = max(now - created, timedelta(0))
    due = rotate_every is not None and age > rotate_every.delta
    status.key_epoch = {
        "number": epoch.number,
        "tag": f"{epoch.tag:08x}",
        "created": clock.iso(created),
        "age_seconds": round(age.total_seconds(), 3),
        "rotate_every": rotate_every,
        "rotation_due": due if rotate_every is not None else None,
    }
    if due:
        report.warnings.append(
            f"target {target}: key rotation due: the newest key epoch ({epoch.number}, begun "
            f"{clock.iso(created)}) is {ago(age)} old, past [keys] rotate_every = "
            f"{rotate_every}: run `emberkeep keys rotate`"
        )
