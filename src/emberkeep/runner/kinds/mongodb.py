"""The mongodb kind: a server's databases, dumped collection by collection.

Backed up as a streamed dump (``sources/mongodb``); restored into a server (``restore
--to-uri``: ``restore_into_server``), or some of the dump's files under a directory;
drilled into scratch databases (``emberkeep_drill_<snapshot>_<n>``) on ``drill_uri``
(default: the source's server; never a database that exists), documents compared with the
dump's counts and content digests, indexes and options with its metadata, then the oplog
window replayed to show it applies, the scratch dropped; recovered last, into its server,
dropping what is there. With the oplog archived (``pitr``), ``status`` counts the archive's
newest point as its last backup and reports a gap or a lag (monitor/pitr.py).
"""

from __future__ import annotations

import shlex
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ... import clock
from ...config import MongoSource, SourceConfig
from ...engine.backup import BackupResult, Progress, backup
from ...engine.restore import RestoreResult
from ...engine.walk import walk_tree
from ...errors import EmberkeepError, UsageError
from ...monitor.report import Report, SourceStatus
from ...redact import redact_url
from ...repository.repo import Repository
from ...repository.snapshot import Snapshot
from ...site import Site
from .. import hooks
from .base import DrillResult, OnFile, OnTotal, TreeKind, open_snapshot, restore_tree

if TYPE_CHECKING:  # pymongo loads only when a mongodb source is worked on (startup time)
    from ...sources.mongodb.pitr import PointExtension
    from ...sources.mongodb.restore import MongoRestoreResult, Selection

SCRATCH_PREFIX = "emberkeep_drill_"


def _mongo(source: SourceConfig) -> MongoSource:
    assert isinstance(source, MongoSource), f"source {source.name} is not a mongodb source"
    return source


class MongoKind(TreeKind):
    source_type = "mongodb"
    config = MongoSource
    recovers_last = True  # the database after the code and config that serve it

    def backup(
        self, site: Site, source: SourceConfig, repo: Repository, *, tags: list[str] | None,
        progress: Progress | None,
    ) -> BackupResult:  # fmt: skip
        """The dump streamed into the target; the client closes whatever happens."""
        from ...sources.mongodb.connection import client_for
        from ...sources.mongodb.dump import DumpSpec, MongoDump

        src = _mongo(source)
        spec = DumpSpec(src.name, src.uri, src.databases, src.exclude, src.parallel)
        with client_for(src.uri, f"source {src.name}") as client:
            dump = MongoDump(spec, client)
            return backup(
                repo,
                dump.events(),
                source=src.name,
                source_type=src.type,
                paths=dump_paths(src),
                now=clock.now(),
                tags=tags,
                progress=progress,
                streams=src.parallel,
                extra=dump.extra,
            )

    def restore(
        self, repo: Repository, snapshot: Snapshot, dest: Path, paths: list[str], *,
        on_file: OnFile, on_total: OnTotal, in_place: bool,
    ) -> RestoreResult:  # fmt: skip
        if not paths:
            raise UsageError(
                f"snapshot {snapshot.short_id} is a MongoDB dump: restore it into a server "
                "with --to-uri URI, or write it as files with `emberkeep export`"
            )
        return restore_tree(repo, snapshot, dest, paths, on_file, on_total)

    def drill(
        self, site: Site, repo: Repository, snapshot: Snapshot, source: SourceConfig,
        result: DrillResult,
    ) -> None:  # fmt: skip
        from ...sources.mongodb.connection import client_for
        from ...sources.mongodb.restore import MongoRestore, Selection
        from ...sources.mongodb.verify import verify_collection

        src = _mongo(source)
        uri = src.drill_uri or src.uri
        nodes = {path: node for path, node in walk_tree(repo, snapshot.tree)}
        who = f"drill of source {src.name}"
        with client_for(uri, who) as client, ExitStack() as cleanup:
            existing = set(client.list_database_names())
            dumped = sorted({p.strip("/").split("/")[0] for p in nodes if p.count("/") == 2})
            scratch = {
                db: f"{SCRATCH_PREFIX}{snapshot.short_id}_{i}" for i, db in enumerate(dumped)
            }
            taken = sorted(set(scratch.values()) & existing)
            if taken:
                raise EmberkeepError(
                    f"{who}: scratch database {taken[0]} already exists on the drill server; "
                    "a drill never writes into an existing database: drop it if a crashed "
                    "drill left it"
                )
            for name in scratch.values():
                cleanup.callback(client.drop_database, name)
            job = MongoRestore(
                repo, snapshot, nodes, client, uri=uri, drop=False,
                selection=Selection(databases=scratch), replay=False,
            )  # fmt: skip
            record = job.record()
            started = time.monotonic()
            restored = job.run()
            result.phases["restore"] = result.rto_seconds = time.monotonic() - started
            if restored.problems:  # each fails the drill; all of them are listed
                first = restored.problems[0]
                result.first_difference = f"{first['path']}: {first['message']}"
                result.checked.append({"problems": restored.problems})
            started = time.monotonic()
            for item in job.planned:
                check = verify_collection(client, item.info, item.to_db, item.to_name, record)
                result.checked.append(check.to_json())
                if not check.ok and result.first_difference is None:
                    result.first_difference = f"{check.ns}: {check.problem}"
            replayed = job.replay_oplog()
            result.phases["verify"] = time.monotonic() - started
            result.checked.append({"oplog_entries_replayed": replayed.applied})

    def recover_destination(self, source: SourceConfig, root: Path | None) -> str:
        return redact_url(_mongo(source).uri)

    def recover(
        self, site: Site, source: SourceConfig, snapshot_id: str, destination: str, target: str
    ) -> list[dict[str, str]]:
        from ...sources.mongodb.restore import Selection, check_mongo_snapshot

        repo, snapshot = open_snapshot(site, target, snapshot_id)
        check_mongo_snapshot(snapshot)
        result = restore_into_server(
            site, repo, snapshot, _mongo(source).uri, f"restore of snapshot {snapshot.short_id}",
            drop=True, selection=Selection(),
        )  # fmt: skip
        return list(result.problems)

    def describe(self, source: SourceConfig) -> str:
        src = _mongo(source)
        databases = f" ({', '.join(src.databases)})" if src.databases else ""
        return f"mongodb {redact_url(src.uri)}{databases}"

    def runbook(self, source: SourceConfig, ek: str) -> list[str]:
        src = _mongo(source)
        return _mongo_commands(src, ek) + _pitr_commands(src, ek)

    def add_status(
        self, site: Site, source: SourceConfig, snapshots: list[Snapshot], status: SourceStatus,
        report: Report,
    ) -> None:  # fmt: skip
        """A PITR source's oplog archive: what it covers is what can be restored, so its
        newest archived point is the source's last backup for the RPO; a gap is a breach."""
        src = _mongo(source)
        if not (src.pitr and src.pitr.enabled):
            return
        from ...monitor.pitr import status_of

        primary = site.config.targets[0].name
        archive = status_of(site, src, snapshots)
        status.pitr = archive.to_json()
        if archive.windows:
            end = datetime.fromtimestamp(archive.windows[-1][1].time, tz=UTC)
            if status.last_backup is None or end > status.last_backup:
                status.last_backup, status.last_backup_target = end, primary
                status.last_snapshot = archive.chains[-1].slices[-1].id
        for gap in archive.gaps:
            report.breaches.append(
                f"source {src.name}: the oplog archive has a gap: nothing between "
                f"{gap['after']} and {gap['until']} can be restored to (found {gap['found']}; "
                f"a new chain began from base {gap['new_chain'][:12]})"
            )
        if archive.state_word == "late":
            report.warnings.append(
                f"source {src.name}: the oplog archive lags {archive.lag_seconds:.0f}s behind "
                f"the server (max_lag {src.pitr.max_lag}): is `emberkeep oplog run` running?"
            )


def dump_paths(source: MongoSource) -> list[str]:
    """What a mongodb snapshot lists as its paths: the server and its databases."""
    return [redact_url(source.uri), *source.databases]


def restore_into_server(
    site: Site,
    repo: Repository,
    snapshot: Snapshot,
    uri: str,
    what: str,
    *,
    drop: bool,
    selection: Selection,
    on_file: OnFile = lambda path, size: None,
    on_total: OnTotal = lambda size: None,
    extension: PointExtension | None = None,
) -> MongoRestoreResult:
    """One mongodb snapshot (and, for a point in time, the oplog after it) into ``uri``,
    between the source's restore hooks."""
    from ...sources.mongodb.connection import client_for
    from ...sources.mongodb.restore import MongoRestore

    nodes = {path: node for path, node in walk_tree(repo, snapshot.tree)}
    configured = next((s.hooks for s in site.config.sources if s.name == snapshot.source), None)
    context = {"snapshot": snapshot.id, "target": repo.storage.label, "to": redact_url(uri)}
    with client_for(uri, what) as client:
        job = MongoRestore(
            repo, snapshot, nodes, client, uri=uri, drop=drop, selection=selection,
            on_bytes=on_file, extension=extension,
        )  # fmt: skip
        on_total(job.total_bytes(job.plan()))
        job_hooks = hooks.for_job(configured, "restore")
        with hooks.around(job_hooks, "restore", snapshot.source, **context) as run:
            result = job.run()
    result.warnings.extend(run.warnings)
    return result


def _mongo_commands(source: MongoSource, ek: str) -> list[str]:
    shown = redact_url(source.uri)
    if shown == source.uri:
        return [
            f"{ek} snapshots --source {source.name}",
            f"{ek} restore latest --source {source.name} --to-uri {shlex.quote(shown)} "
            "--drop   # or: --db D --collection C for one collection",
        ]
    return [  # the URI holds a password: out of argv, through the environment
        f"{ek} snapshots --source {source.name}",
        f"read -rs MONGO_URI; export MONGO_URI   # type {shown} with its password",
        f"{ek} restore latest --source {source.name} --to-uri env:MONGO_URI --drop"
        "   # or: --db D --collection C for one collection",
    ]


def _pitr_commands(source: MongoSource, ek: str) -> list[str]:
    """With the oplog archived (README, "Point-in-time recovery"): the lag, the window and
    the chain first, then a restore to the moment before the damage."""
    if not (source.pitr and source.pitr.enabled):
        return []
    shown = redact_url(source.uri)
    uri = shlex.quote(shown) if shown == source.uri else "env:MONGO_URI"
    return [
        "# to a point in time (the oplog archived; RPO = its lag): window, chain, any gap",
        f"{ek} oplog status --source {source.name}",
        f"{ek} restore --source {source.name} --at 2026-03-01T14:03:27Z --to-uri {uri} "
        "--drop   # or --at-op T:I: up to that operation, inclusive",
    ]


KIND = MongoKind()
