"""The restore drill: restore a snapshot into a scratch place, prove it equals what the
backup read, time it, and clean up.

- files: restored into a temp directory, then every entry compared with the snapshot
  tree and every file's bytes with the digest recorded at backup (``engine.verify``).
- git: the bundle restored (and its bytes verified the same way), cloned into a temp
  directory, refs compared with the record, ``git fsck --full`` clean.
- mongodb: restored into scratch databases (``emberkeep_drill_<snapshot>_<n>``) on
  ``drill_uri`` (default: the source's server; never a database that exists), documents
  compared with the dump's counts and content digests, indexes and options with its
  metadata, then the oplog window replayed to show it applies; the scratch is dropped.

Phases: ``fetch`` and ``decrypt`` are the time spent reading blobs, summed over the
restore's threads; ``restore`` and ``verify`` are wall-clock. The measured RTO is the
restore's wall-clock time (what a real recovery of this snapshot would take from this
target), compared with the source's ``objectives.rto``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import clock
from ..config import MongoSource
from ..engine.restore import RestoreIncomplete, Restorer, RestoreResult
from ..engine.verify import verify_tree
from ..engine.walk import walk_tree
from ..errors import EmberkeepError, UsageError
from ..fsutil import make_dirs
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from ..site import Site
from ..sources import git

SCRATCH_PREFIX = "emberkeep_drill_"


@dataclass
class DrillResult:
    source: str
    source_type: str
    target: str
    snapshot: str = ""
    snapshot_time: str = ""
    started: str = ""
    bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float = 0.0
    rto_objective_seconds: float | None = None
    checked: list[dict[str, Any]] = field(default_factory=list)
    first_difference: str | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.first_difference is None and self.error is None

    @property
    def rto_ok(self) -> bool | None:
        if self.rto_objective_seconds is None:
            return None
        return self.rto_seconds <= self.rto_objective_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_type": self.source_type,
            "target": self.target,
            "snapshot": self.snapshot,
            "snapshot_time": self.snapshot_time,
            "started": self.started,
            "outcome": "passed" if self.passed else "failed",
            "bytes": self.bytes,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "rto_seconds": round(self.rto_seconds, 3),
            "rto_objective_seconds": self.rto_objective_seconds,
            "rto_ok": self.rto_ok,
            "first_difference": self.first_difference,
            "error": self.error,
            "checked": self.checked,
        }


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
        if chosen.source_type == "mongodb":
            assert isinstance(source, MongoSource)
            _drill_mongodb(repo, chosen, source, result)
        elif chosen.source_type == "git":
            _drill_git(site, repo, chosen, result)
        else:
            _drill_files(site, repo, chosen, result)
    except EmberkeepError as exc:
        damaged = "; ".join(f"{d.obj}: {d.detail}" for d in repo.damage)
        result.error = (
            f"{exc} (damaged while opening the repository: {damaged})" if damaged else str(exc)
        )
    result.phases["fetch"] = repo.read_times.fetch_seconds
    result.phases["decrypt"] = repo.read_times.decrypt_seconds
    return result


def _scratch_dir(site: Site) -> Path:
    base = site.state_dir / "drill"
    make_dirs(base)
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=base))
    scratch.chmod(0o700)  # mkdtemp's mode is less the umask
    return scratch


def _refused(restored: RestoreResult, result: DrillResult, snapshot: Snapshot) -> None:
    """Entries the restore refused fail the drill: the first is its first difference, and
    the restore's failure (all of them, named) its error."""
    if restored.refused:
        first = restored.refused[0]
        result.first_difference = f"{first['path']}: {first['reason']}"
        result.checked.append({"refused": restored.refused})
        raise RestoreIncomplete(f"restore of snapshot {snapshot.short_id}", restored.refused)


def _drill_files(site: Site, repo: Repository, snapshot: Snapshot, result: DrillResult) -> None:
    scratch = _scratch_dir(site)
    try:
        started = time.monotonic()
        restored = Restorer(repo, scratch).restore(snapshot)
        result.phases["restore"] = result.rto_seconds = time.monotonic() - started
        started = time.monotonic()
        verified = verify_tree(repo, snapshot, scratch)
        result.phases["verify"] = time.monotonic() - started
        result.checked.append({"files": verified.files, "entries": verified.entries})
        if verified.differences:
            result.first_difference = str(verified.differences[0])
            result.checked[0]["differences"] = len(verified.differences)
        _refused(restored, result, snapshot)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _drill_git(site: Site, repo: Repository, snapshot: Snapshot, result: DrillResult) -> None:
    from .restore import restore_git

    scratch = _scratch_dir(site)
    try:
        started = time.monotonic()
        restore_git(repo, snapshot, scratch / "repo", [], lambda path, size: None)
        result.phases["restore"] = result.rto_seconds = time.monotonic() - started
        started = time.monotonic()
        bundle_dir = scratch / "bundle"
        files = [f"/{git.BUNDLE}", f"/{git.RECORD}"]
        restored = Restorer(repo, bundle_dir).restore(snapshot, files)
        verified = verify_tree(repo, snapshot, bundle_dir)
        fsck = subprocess.run(
            ["git", "-C", str(scratch / "repo"), "fsck", "--full", "--no-progress"],
            capture_output=True,
            text=True,
        )
        result.phases["verify"] = time.monotonic() - started
        result.checked.append({"files": verified.files, "git_fsck": fsck.returncode == 0})
        if verified.differences:
            result.first_difference = str(verified.differences[0])
        elif fsck.returncode != 0:
            problem = (fsck.stderr or fsck.stdout).strip().splitlines()[:1]
            result.first_difference = f"git fsck of the restored repository: {problem}"
        _refused(restored, result, snapshot)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _drill_mongodb(
    repo: Repository, snapshot: Snapshot, source: MongoSource, result: DrillResult
) -> None:
    from ..sources.mongodb.connection import client_for
    from ..sources.mongodb.restore import MongoRestore, Selection
    from ..sources.mongodb.verify import verify_collection

    uri = source.drill_uri or source.uri
    nodes = {path: node for path, node in walk_tree(repo, snapshot.tree)}
    who = f"drill of source {source.name}"
    with client_for(uri, who) as client, ExitStack() as cleanup:
        existing = set(client.list_database_names())
        dumped = sorted({p.strip("/").split("/")[0] for p in nodes if p.count("/") == 2})
        scratch = {db: f"{SCRATCH_PREFIX}{snapshot.short_id}_{i}" for i, db in enumerate(dumped)}
        taken = sorted(set(scratch.values()) & existing)
        if taken:
            raise EmberkeepError(
                f"{who}: scratch database {taken[0]} already exists on the drill server; "
                "a drill never writes into an existing database: drop it if a crashed drill "
                "left it"
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
