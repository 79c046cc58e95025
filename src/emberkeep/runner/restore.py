"""The restore job for files snapshots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..engine.restore import Restorer, RestoreResult
from ..errors import UsageError
from ..fsutil import storage_error
from ..repository.snapshot import Snapshot
from .site import Site, find_snapshot


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
) -> tuple[Snapshot, RestoreResult]:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--to {dest} is a file; give a directory to restore under")
    repo = site.repository(target, read=True)
    snapshot = find_snapshot(repo, spec, source)
    if snapshot.source_type not in ("files",):
        raise UsageError(
            f"snapshot {snapshot.short_id} is of type {snapshot.source_type}; "
            "restoring it is not supported by this version"
        )
    if not paths:
        on_total(int(snapshot.summary.get("bytes", 0)))
    try:
        result = Restorer(repo, dest, on_file=on_file).restore(snapshot, paths)
    except OSError as exc:
        raise storage_error(exc.filename or dest, exc) from exc
    return snapshot, result
