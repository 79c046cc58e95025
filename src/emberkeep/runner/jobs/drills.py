"""drill: restore into scratch, verify, time it; one journaled run per source."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import EmberkeepError, UsageError
from ...monitor.jobs import JournalFields, Rto, watch
from ...site import Site
from .base import Warn, silent

if TYPE_CHECKING:
    from ..kinds import DrillResult


# -- drill ----------------------------------------------------------------------------------


@dataclass
class Drilled:
    result: DrillResult

    def journal_fields(self) -> JournalFields:
        result = self.result
        return JournalFields(
            row={
                "source": result.source,
                "target": result.target,
                "snapshot": result.snapshot or None,
                "bytes": result.bytes,
            },
            details={
                "rto_seconds": round(result.rto_seconds, 3),
                "rto_ok": result.rto_ok,
                "rto_objective_seconds": result.rto_objective_seconds,
                "phases": {k: round(v, 3) for k, v in result.phases.items()},
            },
            rto=Rto(result.rto_ok, result.rto_seconds, result.rto_objective_seconds),
            failed=None
            if result.passed
            else result.error or f"restored data differs: {result.first_difference}",
        )


def drills_summary(drills: list[Drilled]) -> str:
    """The scheduler's line for a batch of drills; raises naming the first that failed."""
    failed = [d.result for d in drills if not d.result.passed]
    if failed:
        first = failed[0]
        raise EmberkeepError(
            f"drill of {first.source} FAILED: {first.error or first.first_difference}"
        )
    return ", ".join(f"{d.result.source} ok in {d.result.rto_seconds:.1f}s" for d in drills)


def drill(
    site: Site,
    sources: list[str],
    *,
    target: str | None = None,
    snapshot: str | None = None,
    status: Callable[[str], AbstractContextManager[object]] | None = None,
    warn: Warn = silent,
) -> Iterator[Drilled]:
    """A drill of each of ``sources`` (none: ``[drill] sources``, else every source), one
    journaled run each; ``status`` makes each one's display (a spinner)."""
    from ..drill import drill_sources, run_drill

    names = drill_sources(site, sources)
    if snapshot and len(names) != 1:
        raise UsageError("--snapshot needs exactly one SOURCE")
    for name in names:
        shown = status(name) if status is not None else contextlib.nullcontext()
        with shown, watch(site, "drill", source=name, target=target, warn=warn) as job:
            done = job.took(Drilled(run_drill(site, name, target=target, snapshot=snapshot)))
        yield done
