"""``emberkeep recover``: a site back from one target on a new host, in one command.

Needs only the target's URL (with the credentials its backend reads from the
environment or ~/.ssh), and an identity. From the target it reads the newest stored
site config (``repository/siteconfig.py``), writes it back to its path (or ``-c``),
rebuilds the writer key and state dir, then restores each source's latest snapshot (at
or before ``--at``): files to their original paths (under ``--root`` when given), git
repositories checked out in their path (over the files already there, such as the
config restored into the app's folder; an existing ``.git`` is moved aside, never lost),
databases into the configured server with ``--drop``. Each source's restore hooks run
around its step (stop the app before the database, start it after).

Order: the smaller sources first (configuration, then code, then media: what is quick
to bring back is back first), the databases last. Each finished step is recorded in
``state_dir/recover.json``; a recover run again with the same arguments skips the steps
that finished with the same snapshot, so an interrupted recovery resumes. Every step's
time and the total are measured and set against the sources' RTO objectives, and a
report is written to ``state_dir/recover-report.md``. ``--dry-run`` prints the plan and
writes nothing at all.
"""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from .. import clock, config, keys
from ..config import Config, FilesSource, GitSource, MongoSource, Target
from ..errors import UsageError
from ..fsutil import write_atomic
from ..redact import redact_url
from ..repository import siteconfig
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from ..storage import open_storage
from .site import Site

FROM_TARGET = "recover-from"
STATE_FILE = "recover.json"
REPORT_FILE = "recover-report.md"


@dataclass
class Step:
    source: str
    type: str
    snapshot: Snapshot
    destination: str
    status: str = "planned"  # planned, restored, skipped (done before), failed
    seconds: float = 0.0
    rto_objective_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "type": self.type,
            "snapshot": self.snapshot.id,
            "snapshot_time": clock.iso(self.snapshot.time),
            "destination": self.destination,
            "bytes": int(self.snapshot.summary.get("bytes", 0)),
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "rto_objective_seconds": self.rto_objective_seconds,
            "rto_ok": None
            if self.rto_objective_seconds is None or self.status != "restored"
            else self.seconds <= self.rto_objective_seconds,
        }


@dataclass
class Recovery:
    url: str
    config_path: Path
    config_time: datetime
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    report: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.url,
            "config": str(self.config_path),
            "config_time": clock.iso(self.config_time),
            "dry_run": self.dry_run,
            "steps": [s.to_json() for s in self.steps],
            "seconds": round(self.seconds, 3),
            "report": str(self.report) if self.report else None,
        }


def run_recover(
    url: str,
    identity_file: Path,
    *,
    config_path: Path | None = None,
    at: datetime | None = None,
    only: list[str] | None = None,
    root: Path | None = None,
    dry_run: bool = False,
    on_step: Any = lambda step: None,
) -> Recovery:
    started = time.monotonic()
    identities = keys.load_identities(identity_file)
    storage = open_storage(url, name=redact_url(url))  # messages name the URL given
    stored = siteconfig.newest(storage, identities, at)  # wrong identity fails here
    path = _rooted(root, Path(config_path or stored.path))
    cfg = _config_from(stored.text, path, url)
    repo = Repository.open(
        storage, writer_key=None, recipients=keys.parse_recipients(cfg.keys.recipients),
        identities=identities,
    )  # fmt: skip
    recovery = Recovery(url, path, stored.time, dry_run=dry_run)
    recovery.steps = _plan(cfg, repo, at, only or [], root)
    if dry_run:
        return recovery
    _write_config(path, stored.text)
    site = Site(cfg, identity_file=identity_file)
    done = _load_progress(site, url)
    for step in recovery.steps:
        if done.get(step.source) == step.snapshot.id:
            step.status = "skipped"
            on_step(step)
            continue
        began = time.monotonic()
        _restore_step(site, cfg, step, root)
        step.seconds, step.status = time.monotonic() - began, "restored"
        done[step.source] = step.snapshot.id
        _save_progress(site, url, done)
        on_step(step)
    recovery.seconds = time.monotonic() - started
    recovery.report = _write_report(site, recovery)
    return recovery


def _rooted(root: Path | None, path: Path) -> Path:
    return root / str(path).lstrip("/") if root else path


def _config_from(text: str, path: Path, url: str) -> Config:
    """The stored config, with the target recovered from first (added when not listed)."""
    cfg = config.parse(tomllib.loads(text), path)
    listed = [t for t in cfg.targets if t.url == url]
    source = listed[0] if listed else Target(name=FROM_TARGET, url=url)
    targets = [source, *(t for t in cfg.targets if t is not source)]
    return msgspec.structs.replace(cfg, targets=targets)


def _plan(
    cfg: Config, repo: Repository, at: datetime | None, only: list[str], root: Path | None
) -> list[Step]:
    known = {s.name for s in cfg.sources}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise UsageError(
            f"--only {unknown[0]}: no such source in the stored config "
            f"(sources: {', '.join(sorted(known))})"
        )
    snapshots = repo.snapshots()
    steps = []
    for source in cfg.sources:
        if only and source.name not in only:
            continue
        chosen = [s for s in snapshots if s.source == source.name and (at is None or s.time <= at)]
        if not chosen:
            when = f" at or before {clock.iso(at)}" if at else ""
            raise UsageError(
                f"target {repo.storage.label} holds no snapshot of source {source.name}{when}; "
                "leave it out with --only, or pick another --at"
            )
        objective = source.objectives.rto_delta if source.objectives else None
        steps.append(
            Step(
                source.name,
                source.type,
                chosen[-1],
                _destination(source, root),
                rto_objective_seconds=None if objective is None else objective.total_seconds(),
            )
        )
    return sorted(steps, key=_order)


def _order(step: Step) -> tuple[int, int]:
    """Databases last; before them the smallest first (config, code, then media)."""
    return (step.type == "mongodb", int(step.snapshot.summary.get("bytes", 0)))


def _destination(source: Any, root: Path | None) -> str:
    if isinstance(source, MongoSource):
        return redact_url(source.uri)
    if isinstance(source, GitSource):
        return str(_rooted(root, source.path))
    assert isinstance(source, FilesSource)
    return str(root or "/")


def _restore_step(site: Site, cfg: Config, step: Step, root: Path | None) -> None:
    from .restore import run_restore, run_restore_mongodb

    source = cfg.source(step.source)
    target = cfg.targets[0].name
    if isinstance(source, MongoSource):
        from ..sources.mongodb.restore import Selection

        run_restore_mongodb(
            site, step.snapshot.id, source.uri, drop=True, selection=Selection(), target=target
        )
        return
    dest = Path(step.destination)
    if isinstance(source, GitSource) and (dest / ".git").exists():
        # a repository is there (a resumed or repeated recover): keep it aside, never lose it
        (dest / ".git").rename(dest / f".git.before-recover-{int(time.time())}")
    run_restore(site, step.snapshot.id, dest, paths=[], target=target, git_in_place=True)


def _write_config(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    if path.exists():
        path.rename(path.with_name(f"{path.name}.before-recover-{int(time.time())}"))
    write_atomic(path, text.encode(), mode=0o600)


def _load_progress(site: Site, url: str) -> dict[str, str]:
    path = site.state_dir / STATE_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return dict(saved.get("done", {})) if saved.get("from") == url else {}


def _save_progress(site: Site, url: str, done: dict[str, str]) -> None:
    data = json.dumps({"from": url, "done": done}, indent=1).encode()
    write_atomic(site.state_dir / STATE_FILE, data, mode=0o600)


def _write_report(site: Site, recovery: Recovery) -> Path:
    lines = [
        "# Recovery report",
        "",
        f"- From: `{recovery.url}`",
        f"- Config: `{recovery.config_path}` (stored {clock.iso(recovery.config_time)})",
        f"- Finished: {clock.iso(clock.now())}; total {recovery.seconds:.1f} s",
        "",
        "| Source | Type | Snapshot | Taken | Destination | Status | Seconds | RTO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step in recovery.steps:
        row = step.to_json()
        rto = "" if row["rto_objective_seconds"] is None else (
            f"{'ok' if row['rto_ok'] else 'OVER'} ({row['rto_objective_seconds']:.0f} s)"
            if row["rto_ok"] is not None else f"{row['rto_objective_seconds']:.0f} s"
        )  # fmt: skip
        lines.append(
            f"| {step.source} | {step.type} | `{step.snapshot.short_id}` | "
            f"{row['snapshot_time']} | `{step.destination}` | {step.status} | "
            f"{step.seconds:.1f} | {rto} |"
        )
    path = site.state_dir / REPORT_FILE
    write_atomic(path, ("\n".join(lines) + "\n").encode(), mode=0o600)
    return path
