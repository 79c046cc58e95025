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
from ..config import FilesSource, GitSource, MongoSource, Target
from ..engine.backup import BackupResult, Progress, backup
from ..engine.filescache import FilesCache
from ..errors import (
    EmberkeepError,
    RepositoryError,
    StorageError,
    UsageError,
    is_disk_full,
    state_dir_full,
)
from ..fsutil import write_atomic
from ..repository.repo import Repository
from ..site import Site
from ..sources.files import FilesWalker
from ..sources.git import GitRepo, push_mirror, redact
from . import hooks


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
        if isinstance(source, FilesSource):
            outcome = _backup_files(site, source, tags, progress, target, repo)
        elif isinstance(source, MongoSource):
            outcome = _backup_mongodb(site, source, tags, progress, target, repo)
        else:
            outcome = _backup_git(site, source, tags, progress, target, repo)
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
        _warn_after_commit(outcome.result, str(path), what, reason)
        return
    if again:
        last[outcome.target] = tag
        try:
            write_atomic(_last_stored_path(site), json.dumps(last).encode(), mode=0o600)
        except Exception as exc:  # the next backup stores it again: harmless
            what = f"{_last_stored_path(site)} was not updated"
            _warn_after_commit(outcome.result, str(path), what, _state_dir_reason(site, exc))


def _warn_after_commit(result: BackupResult, path: str, what: str, reason: str) -> None:
    """A failure after the snapshot committed: a warning naming it, never the job's failure
    (the backup is done; exit 0, or 3 when files were unreadable)."""
    result.warnings.append(
        {
            "path": path,
            "message": f"snapshot {result.snapshot.short_id} is committed, but {what}: {reason}",
        }
    )


def _state_dir_reason(site: Site, exc: Exception) -> str:
    """Why a write under the state dir failed, a full disk named as such."""
    if is_disk_full(exc, site.config.site.state_dir):
        return state_dir_full(site.config.site.state_dir)
    return str(exc) or type(exc).__name__


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


def _backup_files(
    site: Site, source: FilesSource, tags: list[str] | None, progress: Progress | None,
    target: Target, repo: Repository,
) -> SourceOutcome:  # fmt: skip
    walker = FilesWalker(source.paths, source.exclude)
    walker.check_paths()
    cache = FilesCache(files_cache_path(site, repo, source.name), repo.writer_key.mac_key)
    try:
        result = backup(
            repo,
            walker.walk(),
            source=source.name,
            source_type=source.type,
            paths=walker.roots,
            now=clock.now(),
            tags=tags,
            cache=cache,
            progress=progress,
        )
        try:
            cache.commit()
        except Exception as exc:
            _warn_after_commit(
                result,
                str(cache.path),
                "the files cache was not saved (the next backup reads every file again)",
                _state_dir_reason(site, exc),
            )
    finally:
        cache.close()
    return SourceOutcome(source.name, target.name, result, repo)


def _backup_git(
    site: Site, source: GitSource, tags: list[str] | None, progress: Progress | None,
    target: Target, repo: Repository,
) -> SourceOutcome:  # fmt: skip
    """The bundle into the target; then the mirror push, whose failure only warns."""
    git = GitRepo(source.name, source.path)
    record = git.check()
    result = backup(
        repo,
        git.events(record),
        source=source.name,
        source_type=source.type,
        paths=[str(source.path)],
        now=clock.now(),
        tags=tags,
        progress=progress,
    )
    if source.mirror:
        problem = push_mirror(source.path, source.mirror)
        if problem:
            result.warnings.append({"path": redact(source.mirror), "message": problem})
    return SourceOutcome(source.name, target.name, result, repo)


def _backup_mongodb(
    site: Site, source: MongoSource, tags: list[str] | None, progress: Progress | None,
    target: Target, repo: Repository,
) -> SourceOutcome:  # fmt: skip
    """The dump streamed into the target; the client closes whatever happens."""
    from ..sources.mongodb.connection import client_for
    from ..sources.mongodb.dump import DumpSpec, MongoDump

    spec = DumpSpec(source.name, source.uri, source.databases, source.exclude, source.parallel)
    with client_for(source.uri, f"source {source.name}") as client:
        dump = MongoDump(spec, client)
        result = backup(
            repo,
            dump.events(),
            source=source.name,
            source_type=source.type,
            paths=dump_paths(source),
            now=clock.now(),
            tags=tags,
            progress=progress,
            streams=source.parallel,
            extra=dump.extra,
        )
    return SourceOutcome(source.name, target.name, result, repo)


def dump_paths(source: MongoSource) -> list[str]:
    """What a mongodb snapshot lists as its paths: the server and its databases."""
    from ..redact import redact_url

    return [redact_url(source.uri), *source.databases]


def files_cache_path(site: Site, repo: Repository, source: str) -> Path:
    """One cache per repository, source and writer key generation: what a cache built
    under a retired key names must never pass for data of the new one (a rotation's
    next backup reads and uploads everything again, docs/design.md)."""
    key = repo.writer_key
    generation = f"-g{key.generation}" if key.generation > 1 else ""
    return site.state_dir / "cache" / f"{key.repo_id}{generation}-{source}.sqlite"
