"""check and prune jobs, per target."""

from __future__ import annotations

from collections.abc import Callable

from .. import clock, seen
from ..durations import Duration
from ..policy import retention as retention_policy
from ..repository.check import CheckResult, Subset, VerifiedLog, check
from ..repository.lease import LeaseWatch
from ..repository.prune import PruneResult, prune
from ..site import Site


def run_check(
    site: Site,
    target: str,
    *,
    read_data: bool,
    subset: str | None,
    on_pack: Callable[[str, int], None] = lambda name, size: None,
    on_total: Callable[[int], None] = lambda size: None,
) -> CheckResult:
    reading = read_data or subset is not None
    repo = site.repository(target, read=reading)
    log = VerifiedLog(site.state_dir / f"verified-{repo.writer_key.repo_id}-{target}.json")
    result = check(
        repo,
        read_data=reading,
        subset=Subset.parse(subset) if subset else None,
        verified=log,
        now=clock.now(),
        on_pack=on_pack,
        on_total=on_total,
    )
    result.warnings[:0] = log.problems
    result.warnings.extend(seen.look(site, target, repo).all())
    return result


def run_prune(
    site: Site,
    target: str,
    *,
    forget: list[str],
    dry_run: bool,
    grace: Duration | None,
    keep_tags: list[str] | None = None,
) -> PruneResult:
    """Apply each source's retention in ``target`` (and remove ``forget``), then free space;
    ``keep_tags``: ``prune --keep-tag``, kept as well."""
    repo = site.repository(target)
    watch = lease_watch(site)
    result = prune(
        repo,
        forget=forget,
        retention=lambda snapshots, now: retention_policy.keep_in_target(
            site.config, target, snapshots, now, keep_tags or ()
        ),
        grace=(grace or site.config.prune.grace).delta,
        dry_run=dry_run,
        watch=watch,
        guard=seen.prune_guard(site, target, repo),
    )
    result.messages[:0] = watch.problems
    return result


def lease_watch(site: Site) -> LeaseWatch:
    """This host's watch over other hosts' leases, kept in the state dir (repository/lease.py)."""
    return LeaseWatch(site.state_dir / "leases-seen.json")
