"""The copies rule: which of the primary's snapshots a target's ``copies`` wants.

"all" takes every snapshot; "weekly" and "monthly" take, of each source, the snapshot the
retention rule of the same name keeps for each ISO week or calendar month (UTC): the newest
of the period, once the period has ended, that is once a snapshot of the source lies in a
later period or the clock is past the period's end (retention.py, ``ended_period_newest``,
the same periods prune counts). So the cold copy of March is the snapshot local and remote
keep as March's ``monthly``: the backup of 1 April copies 31 March's snapshot (its
after-step offers every snapshot of the source, not only the new one), and ``emberkeep
replicate`` (or its scheduled job) copies it when no backup ran since the month ended. The
rule asks what the primary *and the target* hold, so it stays right when the primary later
prunes: a month's snapshot the target holds is not replaced by an older one the primary
still keeps for another rule.

Replicate (runner/replicate.py) copies what it wants, and ``status`` counts what a target
lacks by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..config import Target
from ..repository.snapshot import Snapshot
from .retention import ended_period_newest


def wanted(
    target: Target, offered: Iterable[Snapshot], held: Iterable[Snapshot], now: datetime
) -> list[Snapshot]:
    """Of ``offered`` (the primary's snapshots), those ``target``, holding ``held``, lacks and
    its copies rule wants (module docstring), in the order offered."""
    held = list(held)
    present = {s.id for s in held}
    missing = [s for s in offered if s.id not in present]
    if target.copies == "all":
        return missing
    closed = ended_period_newest(target.copies, [*held, *missing], now)
    return [s for s in missing if s.id in closed]
