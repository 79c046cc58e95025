"""The restore drill: restore a snapshot into a scratch place, prove it equals what the
backup read, time it, and clean up. How is the snapshot's kind's (runner/kinds): files
compared entry by entry and byte by byte, git cloned and ``git fsck``-ed, mongodb
restored into scratch databases and compared document by document.

Phases: ``fetch`` and ``decrypt`` are the time spent reading blobs, summed over the
restore's threads; ``restore`` and ``verify`` are wall-clock. The measured RTO is the
restore's wall-clock time (what a real recovery of this snapshot would take from this
target), compared with the source's ``objectives.rto``.
"""

from __future__ import annotations

from .. import clock
from ..errors import EmberkeepError, UsageError
from ..site import Site
from .kinds import DrillResult, for_snapshot


def drill_sources(site: Site, names: list[str]) -> list[str]:
    if names:
        return [site.config.source(n).name for n in names]
    configured = site.config.drill.sources
    if configured:
        return list(configured)
    if not site.config.sources:
        raise UsageError(f"{site.config.path} defines no [[sources]] to drill")
    return [s.name for s in site.config.sources]


def run_drill(
    site: Site, source_name: str, *, target: str | None = None, snapshot: str | None = None
) -> DrillResult:
    """One drill; a difference or a failure to restore is in the result, not raised."""
    source = site.config.source(source_name)
    target = target or site.config.drill.target or site.config.targets[0].name
    result = DrillResult(source.name, source.type, target, started=clock.iso(clock.now()))
    objective = source.objectives.rto_delta if source.objectives else None
    result.rto_objective_seconds = None if objective is None else objective.total_seconds()
    repo = site.repository(target, read=True)
    chosen = site.find_snapshot(repo, snapshot or "latest", None if snapshot else source.name)
    if chosen.source != source.name:
        raise UsageError(
            f"snapshot {chosen.short_id} is of source {chosen.source}, not {source.name}"
        )
    result.snapshot, result.snapshot_time = chosen.id, clock.iso(chosen.time)
    result.bytes = int(chosen.summary.get("bytes", 0))
    try:
        for_snapshot(chosen).drill(site, repo, chosen, source, result)
    except EmberkeepError as exc:
        damaged = "; ".join(f"{d.obj}: {d.detail}" for d in repo.damage)
        result.error = (
            f"{exc} (damaged while opening the repository: {damaged})" if damaged else str(exc)
        )
    result.phases["fetch"] = repo.read_times.fetch_seconds
    result.phases["decrypt"] = repo.read_times.decrypt_seconds
    return result
