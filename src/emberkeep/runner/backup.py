"""The backup job: each named source (all when none) into its first reachable target.

A source's targets are those whose ``sources`` name it (or every target); the first is its
primary. When the primary cannot be opened (its disk unmounted, its server down) the backup
goes to the next one, as borgmatic backs up to each repository independently: a dead local
disk never costs the night's backup everywhere. ``SourceOutcome.unavailable`` names each
target passed over and why; ``replicate_after_backup`` reports them failed, and
``emberkeep replicate`` fills them in later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import clock, seen, statefile
from ..config import Target
from ..engine.backup import BackupResult, Progress
from ..errors import EmberkeepError, RepositoryError, StorageError, UsageError
from ..fsutil import write_atomic
from ..repository.repo import Repository
from ..site import Site
from . import hooks, kinds
from .kinds.base import state_dir_reason, warn_after_commit


@dataclass
class SourceOutcome:
    source: str
    target: str
    result: BackupResult
    repo: Repository | None = field(default=None, repr=False)  # the target written to
    unavailable: dict[str, str] = field(default_factory=dict)  # target passed over -> why

    def to_json(self) -> dict[str, Any]:
        data = {"source": self.source, **self.result.to_json(self.target)}
        if self.unavailable:
            data["unavailable"] = self.unavailable
        return data


def sources_to_run(site: Site, names: list[str]) -> list[str]:
    if names:
        return [site.config.source(n).name for n in names]
    if not site.config.sources:
        raise UsageError(f"{site.config.path} defines no [[sources]]; add one to back up")
    return [s.name for s in site.config.sources]


def run_backup(
    site: Site,
    source_name: str,
    *,
    tags: list[str] | None = None,
    progress: Progress | None = None,
) -> SourceOutcome:
    source = site.config.source(source_name)
    target, repo, unavailable = open_first_available(site, source.name)
    with hooks.around(
        hooks.for_job(source.hooks, "backup"), "backup", source.name, target=target.name
    ) as run:
        result = kinds.kind_for(source).backup(site, source, repo, tags=tags, progress=progress)
        outcome = SourceOutcome(source.name, target.name, result, repo)
    outcome.unavailable = unavailable
    outcome.result.warnings.extend(run.warnings)
    outcome.result.warnings.extend(site.repairs)  # what opening the repository repaired
    site.repairs.clear()
    _store_site_config(site, outcome)
    _compare_with_seen(site, outcome)
    return outcome


def open_first_available(site: Site, source: str) -> tuple[Target, Repository, dict[str, str]]:
    """The first of ``source``'s targets that opens for writing, and those passed over
    (name -> why); raises the primary's error when none opens."""
    unavailable: dict[str, str] = {}
    first: EmberkeepError | None = None
    for target in site.config.targets_for(source):
        try:
            return target, site.repository_to_write(target.name), unavailable
        except (RepositoryError, StorageError) as exc:
            unavailable[target.name] = str(exc)
            first = first or exc
    assert first is not None, "the config check gives every source a target"
    raise first


def _compare_with_seen(site: Site, outcome: SourceOutcome) -> None:
    """Warn of snapshots gone from the target since this host saw it (seen.py)."""
    result = outcome.result
    if outcome.repo is None:
        return
    found = seen.look(site, outcome.target, outcome.repo, result.previous, result.snapshot).all()
    result.warnings.extend({"path": f"target {outcome.target}", "message": t} for t in found)


def _store_site_config(site: Site, outcome: SourceOutcome) -> None:
    """The config file into the target, for ``recover`` (repository/siteconfig.py).

    Its failure does not undo the committed snapshot: it is a warning. The host remembers
    which config it stored last in each target, so one changed back to an earlier text is
    stored again as the newest."""
    from ..repository import siteconfig

    path, writer_key = site.config.path, site.writer_key()
    if path is None or writer_key is None:
        return
    try:
        stored = siteconfig.StoredConfig(str(path), clock.now(), path.read_text())
        tag = siteconfig.tag_of(writer_key, stored)
        last = _last_stored_configs(site, outcome.result)
        again = last.get(outcome.target) != tag
        storage = site.storage(outcome.target)
        siteconfig.store(storage, writer_key, site.recipients, stored, again=again)
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        what = f"the site config could not be stored in target {outcome.target}"
        warn_after_commit(outcome.result, str(path), what, reason)
        return
    if again:
        last[outcome.target] = tag
        try:
            write_atomic(_last_stored_path(site), json.dumps(last).encode(), mode=0o600)
        except Exception as exc:  # the next backup stores it again: harmless
            what = f"{_last_stored_path(site)} was not updated"
            warn_after_commit(outcome.result, str(path), what, state_dir_reason(site, exc))


def _last_stored_path(site: Site) -> Path:
    return site.state_dir / "siteconfig-stored.json"


def _last_stored_configs(site: Site, result: BackupResult) -> dict[str, str]:
    """Target name -> tag of the config this host stored there last; a damaged file is a
    warning of the backup (``statefile``), and the config is stored again (harmless)."""
    return statefile.load(
        _last_stored_path(site), statefile.typed(dict[str, str]), dict,
        lambda message: result.warnings.append({"path": str(_last_stored_path(site)),
                                                "message": message}),
        what="a record of the site configs stored (target -> tag)",
        then="the site config is stored again in each target",
    )  # fmt: skip
