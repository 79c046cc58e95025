"""prune and check, one journaled run per target."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import EmberkeepError
from ...monitor.jobs import JournalFields, watch
from ...site import Site
from .base import Bar, Warn, byte_feed, shown_while, silent

if TYPE_CHECKING:
    from ...durations import Duration
    from ...repository.check import CheckResult
    from ...repository.prune import PruneResult


# -- prune and check, per target ------------------------------------------------------------


@dataclass
class Pruned:
    target: str
    result: PruneResult

    @property
    def removed(self) -> int:
        return sum(d["action"] == "remove" for d in self.result.decisions)

    def journal_fields(self) -> JournalFields:
        result = self.result
        return JournalFields(
            row={"bytes": result.bytes_freed},
            details={
                "dry_run": result.dry_run,
                "snapshots_removed": self.removed,
                "snapshots_kept": len(result.decisions) - self.removed,
                "packs_deleted": result.packs_deleted,
            },
        )

    def summary(self) -> str:
        return f"target {self.target}: removed {self.removed} of {len(self.result.decisions)}"


def prune(
    site: Site,
    target: str | None = None,
    *,
    forget: list[str] | None = None,
    dry_run: bool = False,
    grace: Duration | None = None,
    keep_tags: list[str] | None = None,
    warn: Warn = silent,
) -> Iterator[Pruned]:
    """Each target (or ``target``) pruned by its sources' retention, one journaled run each."""
    from ..maintenance import run_prune

    for name in site.target_names(target):
        with watch(site, "prune", target=name, warn=warn) as job:
            result = run_prune(
                site, name, forget=forget or [], dry_run=dry_run, grace=grace, keep_tags=keep_tags
            )
            done = job.took(Pruned(name, result))
        yield done


@dataclass
class Checked:
    target: str
    result: CheckResult

    def _damage(self) -> str:
        return "; ".join(f"{e['object']}: {e['error']}" for e in self.result.errors[:3])

    def journal_fields(self) -> JournalFields:
        result = self.result
        return JournalFields(
            row={"files": result.packs_read, "bytes": result.bytes_read},
            details={"snapshots": result.snapshots, "packs": result.packs},
            failed=None if result.ok else f"check found damage: {self._damage()}",
        )

    def summary(self) -> str:
        if not self.result.ok:
            raise EmberkeepError(f"target {self.target}: check FAILED: {self._damage()}")
        return f"target {self.target}: ok, {self.result.packs_read} packs read"


def check(
    site: Site,
    target: str | None = None,
    *,
    read_data: bool = False,
    subset: str | None = None,
    bar: Callable[[str], Bar] | None = None,
    warn: Warn = silent,
) -> Iterator[Checked]:
    """Each target (or ``target``) verified, one journaled run each; ``bar`` makes each
    target's progress display."""
    from ..maintenance import run_check

    for name in site.target_names(target):
        shown = bar(name) if bar is not None else None
        with watch(site, "check", target=name, warn=warn) as job, shown_while(shown):
            on_pack, on_total = byte_feed(shown)
            result = run_check(
                site, name, read_data=read_data, subset=subset, on_pack=on_pack, on_total=on_total
            )
            done = job.took(Checked(name, result))
        yield done
