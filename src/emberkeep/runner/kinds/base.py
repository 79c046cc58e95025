"""What a source kind is to the jobs: the ``SourceKind`` protocol, and the registry.

A kind (files, mongodb, git, ...) is one module of this package: its config struct (a
``config.SourceConfig`` with its own tag), and what it backs up, how it restores, how a
drill proves its restore, where ``recover`` puts it, what ``status`` and the runbook say
about it. The jobs (backup, restore, drill, recover, runbook, status) ask the kind of a
source through ``kind_for``, and the kind of a snapshot through ``for_snapshot``; nothing
else names a kind. ``register`` adds one, its config struct with it.

``TreeKind`` is a kind whose snapshot is a tree of files that restores as such (files):
the others change what differs from it. Each method gets what its job opened (the site,
the repository, the snapshot) and does the kind's part; the jobs keep the rest (hooks
around a backup, the journal, the choice of target).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ... import config
from ...config import SourceConfig
from ...engine.backup import BackupResult, Progress
from ...engine.restore import RestoreIncomplete, Restorer, RestoreResult
from ...engine.verify import verify_tree
from ...errors import UsageError, is_disk_full, state_dir_full
from ...fsutil import make_dirs, storage_error
from ...monitor.report import Report, SourceStatus
from ...repository.repo import Repository
from ...repository.snapshot import Snapshot
from ...site import Site
from .. import hooks

OnFile = Callable[[str, int], None]
OnTotal = Callable[[int], None]


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


class SourceKind(Protocol):
    """One kind of source; ``source_type`` is its config ``type`` and its snapshots'."""

    @property
    def source_type(self) -> str: ...

    @property
    def config(self) -> type[SourceConfig]:
        """Its ``[[sources]]`` table."""
        ...

    @property
    def recovers_last(self) -> bool:
        """Recover restores it after the others (a database after the app it serves)."""
        ...

    def backup(
        self, site: Site, source: SourceConfig, repo: Repository, *, tags: list[str] | None,
        progress: Progress | None,
    ) -> BackupResult:  # fmt: skip
        """One snapshot of ``source`` committed in ``repo`` (the backup job holds the hooks)."""
        ...

    def scan_size(self, source: SourceConfig) -> int | None:
        """The bytes a backup will read, for a progress bar (None: not known beforehand)."""
        ...

    def restore(
        self, repo: Repository, snapshot: Snapshot, dest: Path, paths: list[str], *,
        on_file: OnFile, on_total: OnTotal, in_place: bool,
    ) -> RestoreResult:  # fmt: skip
        """``snapshot`` (or ``paths`` of it) under ``dest``, within the restore hooks."""
        ...

    def drill(
        self, site: Site, repo: Repository, snapshot: Snapshot, source: SourceConfig,
        result: DrillResult,
    ) -> None:  # fmt: skip
        """Restore into scratch, prove it equals the backup, time it (``result.phases``,
        ``rto_seconds``), note what was checked and the first difference; clean up."""
        ...

    def recover_destination(self, source: SourceConfig, root: Path | None) -> str:
        """Where ``recover`` restores it (``root``: a directory standing for /)."""
        ...

    def recover(
        self, site: Site, source: SourceConfig, snapshot_id: str, destination: str, target: str
    ) -> list[dict[str, str]]:
        """The snapshot restored at ``destination`` for a recovery; what came back other
        than it was (``{"path", "message"}``), the other sources restored all the same."""
        ...

    def describe(self, source: SourceConfig) -> str:
        """One line: what the source reads (recover's review of a stored config)."""
        ...

    def runbook(self, source: SourceConfig, ek: str) -> list[str]:
        """The runbook's shell lines restoring it in place (``ek``: the emberkeep command)."""
        ...

    def add_status(
        self, site: Site, source: SourceConfig, snapshots: list[Snapshot], status: SourceStatus,
        report: Report,
    ) -> None:  # fmt: skip
        """What ``status`` says of it beyond its snapshots (``snapshots``: the primary
        target's): a later restore point, breaches and warnings into ``report``."""
        ...


_KINDS: dict[str, SourceKind] = {}


def register(kind: SourceKind) -> None:
    """Make ``kind`` a source type configs may name and the jobs know."""
    if kind.config.__struct_config__.tag != kind.source_type:
        raise ValueError(f"source kind {kind.source_type!r}: its config struct's tag differs")
    known = _KINDS.get(kind.source_type)
    if known is not None and known is not kind:
        raise ValueError(f"source kind {kind.source_type!r} is registered already")
    config.register_source_type(kind.config)
    _KINDS[kind.source_type] = kind


def unregister(kind: SourceKind) -> None:
    if _KINDS.get(kind.source_type) is kind:
        del _KINDS[kind.source_type]
        config.unregister_source_type(kind.config)


@contextmanager
def registered(kind: SourceKind) -> Iterator[SourceKind]:
    """``kind`` registered for the ``with`` block (a test's kind, say)."""
    register(kind)
    try:
        yield kind
    finally:
        unregister(kind)


def kind_for(source: SourceConfig) -> SourceKind:
    kind = _KINDS.get(source.type)
    if kind is None:
        raise UsageError(f"source {source.name}: no source kind {source.type!r} is registered")
    return kind


def kind_named(name: str) -> SourceKind | None:
    return _KINDS.get(name)


def for_snapshot(snapshot: Snapshot) -> SourceKind:
    """The kind of ``snapshot``'s source; one of a type this emberkeep does not know is a
    tree of files, restored and drilled as files."""
    return _KINDS.get(snapshot.source_type) or _KINDS["files"]


# -- what the kinds share ---------------------------------------------------------------


def open_snapshot(site: Site, target: str | None, spec: str) -> tuple[Repository, Snapshot]:
    repo = site.repository(target, read=True)
    return repo, site.find_snapshot(repo, spec, None)


def check_directory(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--to {dest} is a file; give a directory to restore under")


def restore_into(
    site: Site, repo: Repository, snapshot: Snapshot, dest: Path, paths: list[str], *,
    on_file: OnFile, on_total: OnTotal, in_place: bool, partial: bool,
) -> RestoreResult:  # fmt: skip
    """``snapshot`` under ``dest`` by its kind, between its source's restore hooks.

    Entries the restore refuses (``engine.restore``) leave the rest restored; they raise
    ``RestoreIncomplete`` at the end unless ``partial``, where the caller reports
    ``result.refused`` itself."""
    configured = next((s.hooks for s in site.config.sources if s.name == snapshot.source), None)
    context = {"snapshot": snapshot.id, "target": repo.storage.label, "to": str(dest)}
    job_hooks = hooks.for_job(configured, "restore")
    kind = for_snapshot(snapshot)
    with hooks.around(job_hooks, "restore", snapshot.source, **context) as run:
        result = kind.restore(
            repo, snapshot, dest, paths, on_file=on_file, on_total=on_total, in_place=in_place
        )
    result.warnings.extend(run.warnings)
    if result.refused and not partial:
        raise RestoreIncomplete(
            f"restore of snapshot {snapshot.short_id} to {dest}", result.refused
        )
    return result


def restore_tree(
    repo: Repository, snapshot: Snapshot, dest: Path, paths: list[str], on_file: OnFile,
    on_total: OnTotal,
) -> RestoreResult:  # fmt: skip
    if not paths:
        on_total(int(snapshot.summary.get("bytes", 0)))
    try:
        return Restorer(repo, dest, on_file=on_file).restore(snapshot, paths)
    except OSError as exc:
        raise storage_error(exc.filename or dest, exc) from exc


def scratch_dir(site: Site) -> Path:
    base = site.state_dir / "drill"
    make_dirs(base)
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=base))
    scratch.chmod(0o700)  # mkdtemp's mode is less the umask
    return scratch


def refused(restored: RestoreResult, result: DrillResult, snapshot: Snapshot) -> None:
    """Entries the restore refused fail the drill: the first is its first difference, and
    the restore's failure (all of them, named) its error."""
    if restored.refused:
        first = restored.refused[0]
        result.first_difference = f"{first['path']}: {first['reason']}"
        result.checked.append({"refused": restored.refused})
        raise RestoreIncomplete(f"restore of snapshot {snapshot.short_id}", restored.refused)


def drill_tree(site: Site, repo: Repository, snapshot: Snapshot, result: DrillResult) -> None:
    """Restored into a temp directory, then every entry compared with the snapshot tree and
    every file's bytes with the digest recorded at backup (``engine.verify``)."""
    scratch = scratch_dir(site)
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
        refused(restored, result, snapshot)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def warn_after_commit(result: BackupResult, path: str, what: str, reason: str) -> None:
    """A failure after the snapshot committed: a warning naming it, never the job's failure
    (the backup is done; exit 0, or 3 when files were unreadable)."""
    result.warnings.append(
        {
            "path": path,
            "message": f"snapshot {result.snapshot.short_id} is committed, but {what}: {reason}",
        }
    )


def state_dir_reason(site: Site, exc: Exception) -> str:
    """Why a write under the state dir failed, a full disk named as such."""
    if is_disk_full(exc, site.config.site.state_dir):
        return state_dir_full(site.config.site.state_dir)
    return str(exc) or type(exc).__name__


class TreeKind:
    """A kind whose snapshot is a tree of files restored as such; its ``backup`` is its own.

    Restored under a directory (all or some paths), drilled by restoring into scratch and
    comparing every entry, recovered at /, nothing more in ``status``."""

    source_type: ClassVar[str]
    config: ClassVar[type[SourceConfig]]
    recovers_last: ClassVar[bool] = False

    def scan_size(self, source: SourceConfig) -> int | None:
        return None

    def restore(
        self, repo: Repository, snapshot: Snapshot, dest: Path, paths: list[str], *,
        on_file: OnFile, on_total: OnTotal, in_place: bool,
    ) -> RestoreResult:  # fmt: skip
        return restore_tree(repo, snapshot, dest, paths, on_file, on_total)

    def drill(
        self, site: Site, repo: Repository, snapshot: Snapshot, source: SourceConfig,
        result: DrillResult,
    ) -> None:  # fmt: skip
        drill_tree(site, repo, snapshot, result)

    def recover_destination(self, source: SourceConfig, root: Path | None) -> str:
        return str(root or "/")

    def recover(
        self, site: Site, source: SourceConfig, snapshot_id: str, destination: str, target: str
    ) -> list[dict[str, str]]:
        dest = Path(destination)
        check_directory(dest)
        repo, snapshot = open_snapshot(site, target, snapshot_id)
        result = restore_into(
            site, repo, snapshot, dest, [], on_file=lambda path, size: None,
            on_total=lambda size: None, in_place=True, partial=True,
        )  # fmt: skip
        return [
            {"path": r["path"], "message": f"not restored: {r['reason']}"} for r in result.refused
        ]

    def describe(self, source: SourceConfig) -> str:
        return f"{self.source_type} {source.name}"

    def runbook(self, source: SourceConfig, ek: str) -> list[str]:
        return [f"{ek} restore latest --source {source.name} --to /"]

    def add_status(
        self, site: Site, source: SourceConfig, snapshots: list[Snapshot], status: SourceStatus,
        report: Report,
    ) -> None:  # fmt: skip
        return None
