"""The restore job: a snapshot into a directory as its kind restores it (runner/kinds),
mongodb ones into a server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bson import Timestamp

from ..engine.restore import RestoreResult
from ..repository.snapshot import Snapshot
from ..site import Site
from ..sources.mongodb.restore import MongoRestoreResult, Selection, check_mongo_snapshot
from .kinds.base import check_directory, restore_into
from .kinds.mongodb import restore_into_server


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
    check_directory(dest)
    repo = site.repository(target, read=True)
    snapshot = site.find_snapshot(repo, spec, source)
    result = restore_into(
        site, repo, snapshot, dest, paths, on_file=on_file, on_total=on_total,
        in_place=git_in_place, partial=partial,
    )  # fmt: skip
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
    result = restore_into_server(
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
    result = restore_into_server(
        site, repo, plan.base, uri, what, drop=drop, selection=selection,
        on_file=on_file, on_total=on_total, extension=plan.extension,
    )  # fmt: skip
    result.point = point
    return plan.base, result
