"""The restore job: files and git snapshots into a directory, mongodb ones into a server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bson import Timestamp

from ..engine.fetch import read_in_order
from ..engine.restore import RestoreIncomplete, Restorer, RestoreResult
from ..engine.tree import Node, shown
from ..engine.walk import file_problem, walk_tree
from ..errors import IntegrityError, UsageError
from ..fsutil import make_dirs, storage_error
from ..redact import redact_url
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from ..site import Site
from ..sources import git
from ..sources.mongodb.pitr import PointExtension
from ..sources.mongodb.restore import (
    MongoRestore,
    MongoRestoreResult,
    Selection,
    check_mongo_snapshot,
)
from . import hooks


def run_restore(
    site: Site,
    spec: str,
    dest: Path,
    *,
    paths: list[str],
    target: str | None = None,
    source: str | None = None,
    on_file: Callable[[str, int], None] = lambda path, size: None,
    on_total: Callable[[int], None] = lambda size: None,
    git_in_place: bool = False,
    partial: bool = False,
) -> tuple[Snapshot, RestoreResult]:
    """``git_in_place``: a git snapshot may go into a non-empty directory without a
    repository (recover: the config files already restored into the app's folder).

    Entries the restore refuses (``engine.restore``) leave the rest restored; they raise
    ``RestoreIncomplete`` at the end unless ``partial``, where the caller reports
    ``result.refused`` itself (the CLI, which lists them and exits 1)."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--to {dest} is a file; give a directory to restore under")
    repo = site.repository(target, read=True)
    snapshot = site.find_snapshot(repo, spec, source)
    configured = next((s.hooks for s in site.config.sources if s.name == snapshot.source), None)
    context = {"snapshot": snapshot.id, "target": repo.storage.label, "to": str(dest)}
    job_hooks = hooks.for_job(configured, "restore")
    with hooks.around(job_hooks, "restore", snapshot.source, **context) as run:
        result = _restore(repo, snapshot, dest, paths, on_file, on_total, git_in_place)
    result.warnings.extend(run.warnings)
    if result.refused and not partial:
        raise RestoreIncomplete(
            f"restore of snapshot {snapshot.short_id} to {dest}", result.refused
        )
    return snapshot, result


def run_restore_mongodb(
    site: Site,
    spec: str,
    uri: str,
    *,
    drop: bool,
    selection: Selection,
    target: str | None = None,
    source: str | None = None,
    on_file: Callable[[str, int], None] = lambda path, size: None,
    on_total: Callable[[int], None] = lambda size: None,
) -> tuple[Snapshot, MongoRestoreResult]:
    """A mongodb snapshot into the server at ``uri``, between the source's restore hooks."""
    repo = site.repository(target, read=True)
    snapshot = site.find_snapshot(repo, spec, source)
    check_mongo_snapshot(snapshot)
    what = f"restore of snapshot {snapshot.short_id}"
    result = _restore_mongodb(
        site, repo, snapshot, uri, what, drop=drop, selection=selection,
        on_file=on_file, on_total=on_total,
    )  # fmt: skip
    return snapshot, result


def run_restore_mongodb_at(
    site: Site,
    point: Timestamp,
    uri: str,
    *,
    drop: bool,
    selection: Selection,
    target: str | None = None,
    source: str | None = None,
    on_file: Callable[[str, int], None] = lambda path, size: None,
    on_total: Callable[[int], None] = lambda size: None,
) -> tuple[Snapshot, MongoRestoreResult]:
    """The source's state at oplog ``point`` (inclusive) into ``uri``: the base snapshot
    ``pitr.plan_point`` chooses, then the archived oplog after it up to the point."""
    from .pitr import mongo_source, plan_point

    name = mongo_source(site, source).name
    repo = site.repository(target, read=True)
    plan = plan_point(repo, name, point)
    what = f"restore of source {name} to {point.time}:{point.inc}"
    result = _restore_mongodb(
        site, repo, plan.base, uri, what, drop=drop, selection=selection,
        on_file=on_file, on_total=on_total, extension=plan.extension,
    )  # fmt: skip
    result.point = point
    return plan.base, result


def _restore_mongodb(
    site: Site,
    repo: Repository,
    snapshot: Snapshot,
    uri: str,
    what: str,
    *,
    drop: bool,
    selection: Selection,
    on_file: Callable[[str, int], None],
    on_total: Callable[[int], None],
    extension: PointExtension | None = None,
) -> MongoRestoreResult:
    """One mongodb snapshot (and, for a point in time, the oplog after it) into ``uri``,
    between the source's restore hooks."""
    from ..sources.mongodb.connection import client_for

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


def _restore(
    repo: Repository,
    snapshot: Snapshot,
    dest: Path,
    paths: list[str],
    on_file: Callable[[str, int], None],
    on_total: Callable[[int], None],
    git_in_place: bool = False,
) -> RestoreResult:
    if snapshot.source_type == "git":
        return restore_git(repo, snapshot, dest, paths, on_file, in_place=git_in_place)
    if snapshot.source_type == "mongodb" and not paths:
        raise UsageError(
            f"snapshot {snapshot.short_id} is a MongoDB dump: restore it into a server with "
            "--to-uri URI, or write it as files with `emberkeep export`"
        )
    if not paths:
        on_total(int(snapshot.summary.get("bytes", 0)))
    try:
        return Restorer(repo, dest, on_file=on_file).restore(snapshot, paths)
    except OSError as exc:
        raise storage_error(exc.filename or dest, exc) from exc


def restore_git(
    repo: Repository,
    snapshot: Snapshot,
    dest: Path,
    paths: list[str],
    on_file: Callable[[str, int], None],
    *,
    in_place: bool = False,
) -> RestoreResult:
    """Clone the snapshot's bundle into ``dest`` (new or empty) at the recorded HEAD.

    ``in_place``: ``dest`` may hold files but no ``.git``; the checkout writes the tracked
    files over it and leaves the others (ignored secrets, media) alone.

    ``git fetch`` needs the bundle as a file: it is written next to ``dest`` under a
    hidden temp name and removed afterwards. A failed restore removes what it made.
    """
    if paths:
        raise UsageError(f"snapshot {snapshot.short_id} is a git repository; it restores whole")
    if in_place and (dest / ".git").exists():
        raise UsageError(f"{dest} already holds a git repository; move its .git aside first")
    if not in_place and dest.exists() and any(dest.iterdir()):
        raise UsageError(f"--to {dest} is not empty; a git snapshot restores into a new directory")
    repo.require_identity("restore")
    nodes = {path: node for path, node in walk_tree(repo, snapshot.tree)}
    record = git.GitRecord.from_bytes(_content(repo, nodes, snapshot, git.RECORD))
    bundle = _node(repo, nodes, snapshot, git.BUNDLE)
    repo.prepare_read(bundle["content"])  # a cold target thaws the bundle's packs first
    created = not dest.exists()
    make_dirs(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=".emberkeep-", suffix=".bundle", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for data in read_in_order(repo, bundle["content"]):
                out.write(data)
            if out.tell() != bundle["size"]:
                raise IntegrityError(
                    f"/{git.BUNDLE}", f"{out.tell()} bytes, the snapshot says {bundle['size']}"
                )
        git.restore_bundle(Path(tmp), dest, record)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        os.unlink(tmp)
    on_file(f"/{git.BUNDLE}", bundle["size"])
    return RestoreResult(files=1, bytes=bundle["size"])


def _node(repo: Repository, nodes: dict[str, Node], snapshot: Snapshot, name: str) -> Node:
    """A file of a git snapshot's root, its content checked against its node first."""
    node = nodes.get(f"/{name}")
    if node is None or node["type"] != "file":
        raise IntegrityError(f"snapshot {snapshot.short_id}", f"a git snapshot without {name}")
    problem = file_problem(repo, node)
    if problem:
        raise IntegrityError(f"/{shown(name)}", problem)
    return node


def _content(repo: Repository, nodes: dict[str, Node], snapshot: Snapshot, name: str) -> bytes:
    return b"".join(read_in_order(repo, _node(repo, nodes, snapshot, name)["content"]))
