"""The replicate job: snapshots of the first target (the primary) copied to the others.

A backup writes its snapshot to the primary only, then ``replicate_after_backup`` copies it
to every other target whose ``copies`` rule wants it; ``emberkeep replicate``
(``run_replicate``) later fills in what a target missed, e.g. while it was unreachable.
Only the packs a target lacks are sent (repository/replicate.py). One target failing never
stops the others: each target's outcome is reported on its own.

The copies rule is policy/replication.py (``wanted``): "all" takes every snapshot, "weekly"
and "monthly" the newest of each ended period, as retention counts them.

`emberkeep replicate` also leaves out what the target's own retention would not keep: a
snapshot that target's prune removed is not sent again (a target whose retention is shorter
than the primary's would otherwise receive, and drop, the same snapshots on every run).

`emberkeep replicate --target NAME --re-encrypt` copies the same snapshots, but decrypted
from the primary with an identity and sealed into new packs under the target's own key
epoch (engine/reencrypt.py): a new target that no removed team member's old key opens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import clock
from ..config import Target
from ..engine.reencrypt import reencrypt_snapshot
from ..errors import EmberkeepError, IdentityRequired, UsageError, error_text
from ..policy.replication import wanted
from ..policy.retention import keep_in_target
from ..repository import layout
from ..repository.replicate import CopyStats, copy_snapshot
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from ..site import Site
from .backup import SourceOutcome

OnPack = Callable[[str, int], None]
OnTotal = Callable[[int], None]
Copier = Callable[..., CopyStats]  # copy_snapshot or reencrypt_snapshot


@dataclass
class TargetCopy:
    """What one target got: ``status`` is "copied", "skipped" (``reason``) or "failed"."""

    target: str
    status: str
    reason: str | None = None  # why it was skipped, or the error (naming the target)
    snapshots: list[str] = field(default_factory=list)  # ids copied
    stats: CopyStats = field(default_factory=CopyStats)
    left_out: int = 0  # snapshots the rule wants but the target's retention would not keep
    re_encrypted: bool = False  # copied with --re-encrypt (engine/reencrypt.py)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": self.target,
            "status": self.status,
            "snapshots": self.snapshots,
            **self.stats.to_json(),
            "left_out": self.left_out,
        }
        if self.re_encrypted:
            data["re_encrypted"] = True
        if self.reason is not None:
            data["error" if self.failed else "reason"] = self.reason
        return data


# -- after a backup --------------------------------------------------------------------------


class _Primary:
    """The repository a snapshot is copied from, opened on first use (not at all when
    nothing is copied), or the one the backup already opened."""

    def __init__(self, site: Site, name: str | None = None, repo: Repository | None = None):
        self.site = site
        self.name = name or site.config.targets[0].name
        self._repo: Repository | None = repo
        self._snapshots: list[Snapshot] | None = None

    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = self.site.repository(self.name)
        return self._repo

    def snapshots(self) -> list[Snapshot]:
        """Its snapshots, read once for every target that asks."""
        if self._snapshots is None:
            self._snapshots = self.repo().snapshots()
        return self._snapshots


def replicate_after_backup(
    site: Site,
    outcome: SourceOutcome,
    *,
    on_pack: OnPack = lambda name, size: None,
    on_total: OnTotal = lambda size: None,
) -> list[TargetCopy]:
    """Copy a backup's new snapshot from the target it went to to every other target that
    takes its source and whose rule wants it; a target the backup found unavailable is
    reported failed, for ``emberkeep replicate`` to fill later.

    A weekly or monthly target is offered every snapshot of the source, not only the new
    one: the new snapshot ends the last period, whose newest (an earlier snapshot) is the
    one its rule wants (module docstring)."""
    primary = _Primary(site, outcome.target)
    snapshot = outcome.result.snapshot
    copies = []
    for target in site.config.targets_for(outcome.source):
        if target.name == outcome.target:
            continue
        if target.name in outcome.unavailable:
            reason = f"unavailable at backup time: {outcome.unavailable[target.name]}"
            copies.append(TargetCopy(target.name, "failed", reason))
            continue
        if target.copies == "all":
            copies.append(_copy_new(site, target, primary, snapshot, on_pack, on_total))
        else:
            copies.append(_copy_periodic(site, target, primary, snapshot, on_pack, on_total))
    return copies


def _copy_new(
    site: Site,
    target: Target,
    primary: _Primary,
    snapshot: Snapshot,
    on_pack: OnPack,
    on_total: OnTotal,
) -> TargetCopy:
    try:
        dst = site.repository(target.name)
        if snapshot.id in _snapshot_ids(dst):
            return TargetCopy(target.name, "skipped", "it already holds this snapshot")
        stats = copy_snapshot(primary.repo(), dst, snapshot, on_pack=on_pack, on_total=on_total)
    except Exception as exc:  # one target failing never stops the others
        return TargetCopy(target.name, "failed", error_text(exc, target.name))
    return TargetCopy(target.name, "copied", snapshots=[snapshot.id], stats=stats)


def _copy_periodic(
    site: Site,
    target: Target,
    primary: _Primary,
    snapshot: Snapshot,
    on_pack: OnPack,
    on_total: OnTotal,
) -> TargetCopy:
    """What a weekly or monthly target wants of the source's snapshots, copied (``_fill``)."""
    try:
        offered = [s for s in primary.snapshots() if s.source == snapshot.source]
    except Exception as exc:  # one target failing never stops the others
        return TargetCopy(target.name, "failed", error_text(exc, target.name))
    copy = _fill(site, target, primary.repo(), offered, on_pack, on_total)
    if copy.status == "skipped" and not copy.left_out:
        unit = {"weekly": "ISO week", "monthly": "month"}[target.copies]
        copy.reason = (
            f'copies = "{target.copies}": nothing to copy; it takes the newest snapshot of '
            f"each {unit} once the {unit} has ended"
        )
    return copy


# -- emberkeep replicate ---------------------------------------------------------------------


def run_replicate(
    site: Site,
    target: str | None = None,
    source: str | None = None,
    *,
    re_encrypt: bool = False,
    on_pack: OnPack = lambda name, size: None,
    on_total: OnTotal = lambda size: None,
) -> list[TargetCopy]:
    """Copy to each other target (or ``target``) every primary snapshot it lacks and wants.

    Oldest first; a weekly or monthly target receives the newest of each ended period
    (``wanted``); what the target's retention would not keep is left out (``_to_copy``).
    An unreachable primary fails the whole run; an unreachable target fails only its part.
    ``re_encrypt`` (``target`` only): each copied re-encrypted (module docstring).
    """
    primary = site.config.targets[0]
    if target == primary.name:
        raise UsageError(
            f"target {target} is the primary (the first [[targets]] in {site.config.path}): "
            "backups write there and replicate copies from it; name another target"
        )
    if re_encrypt and target is None:
        raise UsageError(
            "--re-encrypt copies into one target: name it, `emberkeep replicate --target "
            "NEW --re-encrypt` (a target a removed team member's old keys never opened)"
        )
    chosen = [site.config.target(target)] if target else site.config.targets[1:]
    if not chosen:
        return []
    src = _primary_to_read(site, primary.name) if re_encrypt else site.repository(primary.name)
    copier: Copier = reencrypt_snapshot if re_encrypt else copy_snapshot
    snapshots = [s for s in src.snapshots() if source is None or s.source == source]
    if source is not None and not snapshots:
        site.config.source(source)  # a name the config does not know: say so
    copies = [_fill(site, t, src, _taken(t, snapshots), on_pack, on_total, copier) for t in chosen]
    for copy in copies:
        copy.re_encrypted = re_encrypt
    if target is None:
        copies += _backfill_primary(site, primary, source, on_pack, on_total)
    return copies


def _primary_to_read(site: Site, name: str) -> Repository:
    """The primary, opened with the identities that decrypt it (--re-encrypt)."""
    if not site.identities():
        raise IdentityRequired(
            f"`emberkeep replicate --re-encrypt` decrypts what it copies from the primary "
            f"{name}: pass --identity FILE (a current recipient's identity) or set "
            f"keys.identity_file in {site.config.path}"
        )
    return site.repository(name, read=True)


def _taken(target: Target, snapshots: list[Snapshot]) -> list[Snapshot]:
    """The snapshots of the sources ``target`` takes."""
    return [s for s in snapshots if not target.sources or s.source in target.sources]


def _backfill_primary(
    site: Site, primary: Target, source: str | None, on_pack: OnPack, on_total: OnTotal
) -> list[TargetCopy]:
    """The snapshots a backup put in another target while the primary was unavailable,
    copied back into the primary (from each other ``copies = "all"`` target that holds
    some it lacks, and that its retention keeps). An unreachable other target is skipped:
    it is reported by its own part of the run."""
    out = []
    for other in site.config.targets[1:]:
        if other.copies != "all":
            continue
        try:
            repo = site.repository(other.name)
            held = [s for s in repo.snapshots() if source is None or s.source == source]
        except EmberkeepError:
            continue
        mine = _taken(primary, _taken(other, held))
        copy = _fill(site, primary, repo, mine, on_pack, on_total)
        if copy.snapshots or copy.failed:
            copy.reason = copy.reason or f"filled in from target {other.name}"
            out.append(copy)
    return out


def _fill(
    site: Site,
    target: Target,
    src: Repository,
    snapshots: list[Snapshot],
    on_pack: OnPack,
    on_total: OnTotal,
    copier: Copier = copy_snapshot,
) -> TargetCopy:
    outcome = TargetCopy(target.name, "skipped")
    try:
        dst = site.repository(target.name)
        chosen, outcome.left_out = _to_copy(site, target, snapshots, dst)
        for snapshot in chosen:
            stats = copier(src, dst, snapshot, on_pack=on_pack, on_total=on_total)
            outcome.snapshots.append(snapshot.id)
            outcome.stats.add(stats)
    except Exception as exc:  # one target failing never stops the others
        outcome.status, outcome.reason = "failed", error_text(exc, target.name)
        return outcome
    if outcome.snapshots:
        outcome.status = "copied"
    else:
        outcome.reason = (
            f'up to date: it holds every snapshot its copies rule ("{target.copies}") wants'
        )
    if outcome.left_out:
        outcome.reason = (outcome.reason + "; " if outcome.reason else "") + (
            f"{outcome.left_out} older snapshots left out: this target's retention would "
            "not keep them"
        )
    return outcome


def _to_copy(
    site: Site, target: Target, snapshots: list[Snapshot], dst: Repository
) -> tuple[list[Snapshot], int]:
    """The snapshots to copy to ``dst``, oldest first, and how many retention leaves out.

    Of those the copies rule wants, only the ones the target's retention keeps (with what it
    holds): a snapshot its prune removed is not sent again, only to be removed again (for
    cold storage, paid again).
    """
    present = _snapshot_ids(dst)
    held = dst.snapshots()
    now = clock.now()
    want = wanted(target, [s for s in snapshots if s.id not in present], held, now)
    kept = keep_in_target(site.config, target.name, [*held, *want], now)
    chosen = [s for s in want if s.id in kept]
    return chosen, len(want) - len(chosen)


# -- helpers ---------------------------------------------------------------------------------


def _snapshot_ids(repo: Repository) -> set[str]:
    return {layout.leaf(name) for name in repo.snapshot_names()}
