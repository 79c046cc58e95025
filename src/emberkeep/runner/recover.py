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
report is written to ``state_dir/recover-report.md`` (and kept as
``recover-report-<time>.md``: one per recovery, the strategy's log of restorations; the CLI
journals each recover as kind ``recover``). ``--dry-run`` prints the plan and writes nothing
at all.

``--only`` restores those sources and nothing else: the config on disk is left as it is
(a database-only recovery on the running server must not put an older config back), and
the stored one is used only to know the sources.

Nothing is trusted for being in the target (README, "How it keeps data safe"): the writer
key comes from ``keys/writer.age`` (a copy that will not decrypt is told apart: damaged,
or not a recipient), ``config`` and the site config must carry the writer key's seal, and
an unsealed or altered site config is refused by name (``repository/siteconfig.py``).
``plan_recover`` reads and verifies everything and changes nothing; the caller shows the
plan (``recover_review.py``: hooks, targets, recipients, what changed), gets the
operator's approval of the hooks, and only then calls ``execute``.
"""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from .. import clock, config, keys, statefile
from ..config import Config, Target
from ..errors import RepositoryError, UsageError
from ..fsutil import write_atomic
from ..redact import redact_url
from ..repository import keycheck, siteconfig
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from ..site import Site
from ..storage import open_storage
from . import kinds, recover_review

FROM_TARGET = "recover-from"
STATE_FILE = "recover.json"
REPORT_FILE = "recover-report.md"
AGE_WORTH_SAYING = timedelta(hours=1)  # younger snapshots are last night's: no warning


@dataclass
class Step:
    source: str
    type: str
    snapshot: Snapshot
    destination: str
    # planned, restored, skipped (done before), incomplete (restored with problems)
    status: str = "planned"
    seconds: float = 0.0
    rto_objective_seconds: float | None = None
    # what the restore reports it did not bring back as it was: path, message
    problems: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "type": self.type,
            "snapshot": self.snapshot.id,
            "snapshot_time": clock.iso(self.snapshot.time),
            "destination": self.destination,
            "bytes": int(self.snapshot.summary.get("bytes", 0)),
            "status": self.status,
            "problems": self.problems,
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
    repository_id: str = ""
    writer_key_fingerprint: str = ""
    config_object: str = ""
    config_sealed: bool = True  # False: an unsealed config, used only with allow_unverified
    allow_unverified: bool = False
    refused: list[siteconfig.Refused] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # older unsealed configs, not used
    summary: dict[str, Any] = field(default_factory=dict)  # recover_review.summarize
    previous_time: datetime | None = None  # the sealed config stored before this one
    changes_since_previous: list[str] | None = None
    seen_time: str | None = None  # when this host last recovered from this repository
    changes_since_seen: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    hooks_run: bool = False
    only: list[str] = field(default_factory=list)  # --only: these sources, never the config
    config_written: bool = False
    _cfg: Config | None = field(default=None, repr=False)
    _text: str = field(default="", repr=False)
    _identity_file: Path | None = field(default=None, repr=False)
    _root: Path | None = field(default=None, repr=False)

    def warn(self, message: str) -> None:
        """A warning for the operator, once (a damaged state file is read by the plan
        and again by the execution)."""
        if message not in self.warnings:
            self.warnings.append(message)

    @property
    def incomplete(self) -> list[Step]:
        """Steps whose restore reported problems: the recovery is not a success."""
        return [s for s in self.steps if s.problems]

    @property
    def restored_under(self) -> str:
        """Where files go: ``--root``, else their own paths."""
        return str(self._root or "/")

    @property
    def restore_hooks(self) -> dict[str, str]:
        """The hooks this recovery would run (those of the sources it restores)."""
        return recover_review.restore_hooks(self.summary, [s.source for s in self.steps])

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.url,
            "repository": self.repository_id,
            "writer_key_fingerprint": self.writer_key_fingerprint,
            "config": str(self.config_path),
            "config_time": clock.iso(self.config_time),
            "config_object": self.config_object,
            "config_sealed": self.config_sealed,
            "refused": [{"object": r.name, "reason": r.reason} for r in self.refused],
            "ignored": self.ignored,
            "recipients": self.summary.get("recipients", []),
            "labels": self.summary.get("labels", {}),
            "targets": self.summary.get("targets", {}),
            "sources": self.summary.get("sources", {}),
            "hooks": self.summary.get("hooks", {}),
            "restore_hooks": self.restore_hooks,
            "hooks_run": self.hooks_run,
            "changes_since_previous": self.changes_since_previous,
            "previous_config_time": clock.iso(self.previous_time) if self.previous_time else None,
            "changes_since_seen": self.changes_since_seen,
            "seen_time": self.seen_time,
            "warnings": self.warnings,
            "dry_run": self.dry_run,
            "only": self.only,
            "config_written": self.config_written,
            "steps": [s.to_json() for s in self.steps],
            "seconds": round(self.seconds, 3),
            "report": str(self.report) if self.report else None,
        }


def plan_recover(
    url: str,
    identity_file: Path,
    *,
    config_path: Path | None = None,
    at: datetime | None = None,
    only: list[str] | None = None,
    root: Path | None = None,
    dry_run: bool = False,
    expect_repository: str | None = None,
    allow_unverified: bool = False,
) -> Recovery:
    """Read and verify what the recovery starts from, and plan it; writes nothing."""
    identities = keys.load_identities(identity_file)
    storage = open_storage(url, name=redact_url(url))  # messages name the URL given
    repo = Repository.open(storage, writer_key=None, recipients=[], identities=identities)
    writer_key = repo.writer_key
    _expect(storage.label, writer_key, expect_repository)
    found = siteconfig.load_all(storage, identities, writer_key, repo.chain)
    choice = siteconfig.choose(storage, found, at, allow_unverified=allow_unverified or dry_run)
    stored = choice.config
    path = _rooted(root, Path(config_path or stored.path))
    parsed = _parse_stored(stored, path)
    cfg = _with_source_target(parsed, url)
    repo.recipients = keys.parse_recipients(cfg.keys.recipient_keys)
    recovery = Recovery(
        url, path, stored.time, dry_run=dry_run, repository_id=writer_key.repo_id,
        writer_key_fingerprint=writer_key.fingerprint, config_object=stored.name,
        config_sealed=stored.sealed, allow_unverified=allow_unverified,
        refused=choice.refused, ignored=choice.ignored,
        summary=recover_review.summarize(parsed), _cfg=cfg, _text=stored.text,
        _identity_file=identity_file, _root=root, only=list(only or []),
    )  # fmt: skip
    _compare(recovery, choice, cfg)
    recovery.warnings += _key_warnings(repo)
    recovery.steps = _plan(cfg, repo, at, only or [], root)
    recovery.warnings += _age_and_thaw(cfg, recovery.steps, storage.label)
    return recovery


def _age_and_thaw(cfg: Config, steps: list[Step], label: str) -> list[str]:
    """How old what the recovery brings back is, and, from an archive storage class, how
    long the thaw waits before the first byte: both set against the RTOs (runbook)."""
    from ..durations import format_duration
    from .runbook import SCENARIOS, archive_class, scenario_rto, thaw_hours

    if not steps:
        return []
    out = []
    oldest = min(steps, key=lambda s: s.snapshot.time)
    age = clock.now() - oldest.snapshot.time
    if age >= AGE_WORTH_SAYING:
        out.append(
            f"{label}: the snapshots recovered are up to {format_duration(age)} old "
            f"(source {oldest.source}, taken {clock.iso(oldest.snapshot.time)}); what changed "
            "since is not in them"
        )
    hours = thaw_hours(cfg.targets[0])
    if hours is not None:
        storage_class, tier = archive_class(cfg.targets[0]) or ("", "")
        disaster = next(s for s in SCENARIOS if s.objective == "disaster")
        _text, rto = scenario_rto(cfg, disaster)
        over = (
            f", more than the disaster RTO of {format_duration(rto)}"
            if rto is not None and hours * 3600 > rto.total_seconds()
            else ""
        )
        out.append(
            f"{label} is {storage_class}: its data must be thawed first, up to {hours:g} hours "
            f"({tier} tier) before the first byte{over}; a target without an archive class "
            "is faster if one survives"
        )
    return out


def execute(recovery: Recovery, *, run_hooks: bool, on_step: Any = lambda step: None) -> Recovery:
    """Carry out a plan the operator approved; ``run_hooks``: the restore hooks too."""
    started = time.monotonic()
    if not recovery.config_sealed and not recovery.allow_unverified:
        raise UsageError(
            f"{recovery.config_object} is not sealed (unverified): recover uses it only with "
            "--allow-unverified, after you have read it (recover --dry-run shows it)"
        )
    cfg = recovery._cfg
    assert cfg is not None, "execute needs a plan from plan_recover"
    if not run_hooks:
        sources = [msgspec.structs.replace(s, hooks=None) for s in cfg.sources]
        cfg = msgspec.structs.replace(cfg, sources=sources)
    recovery.hooks_run = run_hooks and bool(recovery.restore_hooks)
    if not recovery.only:
        recovery.config_written = _write_config(recovery.config_path, recovery._text)
    site = Site(cfg, identity_file=recovery._identity_file)  # hooks as approved
    recover_review.remember(
        site.state_dir, recovery.repository_id, _seen_entry(recovery), recovery.warn
    )
    done = _load_progress(site, recovery.url, recovery.warn)
    for step in recovery.steps:
        if done.get(step.source) == step.snapshot.id:
            step.status = "skipped"
            on_step(step)
            continue
        began = time.monotonic()
        step.problems = _restore_step(site, cfg, step, recovery._root)
        step.seconds = time.monotonic() - began
        step.status = "incomplete" if step.problems else "restored"
        if not step.problems:  # an incomplete step is done again by the next recover
            done[step.source] = step.snapshot.id
            _save_progress(site, recovery.url, done)
        on_step(step)
    recovery.seconds = time.monotonic() - started
    recovery.report = _write_report(site, recovery)
    return recovery


def recovery_site(recovery: Recovery) -> Site:
    """The site a planned recovery restores (the stored config, the target first): where it
    keeps its state and journal."""
    assert recovery._cfg is not None, "a plan from plan_recover"
    return Site(recovery._cfg, identity_file=recovery._identity_file)


def _parse_stored(stored: siteconfig.StoredConfig, path: Path) -> Config:
    try:
        return config.parse(tomllib.loads(stored.text), path)
    except tomllib.TOMLDecodeError as exc:
        raise RepositoryError(f"{stored.name}: the stored config is not TOML ({exc})") from exc
    except UsageError as exc:
        raise RepositoryError(
            f"{stored.name}: the stored config is not valid for this emberkeep ({exc})"
        ) from exc


def _expect(label: str, writer_key: keys.WriterKey, expected: str | None) -> None:
    """``--expect-repository``: the one thing that tells a wholly fabricated repository
    (a new writer key encrypted to the public recipients) from this site's."""
    if expected is None:
        return
    if expected.strip().lower() not in (writer_key.repo_id, writer_key.fingerprint):
        raise RepositoryError(
            f"{label} holds repository {writer_key.repo_id} (writer key fingerprint "
            f"{writer_key.fingerprint}), not the expected {expected}: it is another site's, "
            "or was made by someone who can write to the target (anyone who knows a "
            "recipient can make a repository your identity opens). Nothing was changed; "
            "check the URL, and the id in the site's runbook"
        )


def _compare(recovery: Recovery, choice: siteconfig.Choice, cfg: Config) -> None:
    """What changed since the sealed config before this one, and since this host's last
    recover from this repository (``recover_review``)."""
    if choice.previous is not None:
        try:
            previous = config.parse(tomllib.loads(choice.previous.text), recovery.config_path)
        except (tomllib.TOMLDecodeError, UsageError):
            recovery.warnings.append(
                f"the config stored before this one ({choice.previous.name}) cannot be "
                "parsed any more; nothing to compare with"
            )
        else:
            recovery.previous_time = choice.previous.time
            recovery.changes_since_previous = recover_review.changes(
                recover_review.summarize(previous), recovery.summary
            )
    state_dir = cfg.site.state_dir
    record = recover_review.read_seen(state_dir, recovery.warn)  # reads only: a plan
    seen = recover_review.last_seen(record, recovery.repository_id)
    if seen is not None:
        recovery.seen_time = str(seen.get("recovered_at"))
        recovery.changes_since_seen = recover_review.changes(seen["summary"], recovery.summary)
    other = recover_review.other_repository_at(record, recovery.url, recovery.repository_id)
    if other is not None:
        recovery.warnings.append(
            f"{recovery.url} held repository {other} when this host last recovered from it; "
            f"it now holds {recovery.repository_id}: make sure this is the site's repository"
        )


def _key_warnings(repo: Repository) -> list[str]:
    """What is wrong with the repository's config or key objects: recover can go on (the
    writer key decrypted and the site config is sealed), but the operator should know."""
    return [f"{f.obj}: {f.message}" for f in keycheck.inspect(repo) if f.error]


def _seen_entry(recovery: Recovery) -> dict[str, Any]:
    return {
        "from": recovery.url,
        "writer_key_fingerprint": recovery.writer_key_fingerprint,
        "config_object": recovery.config_object,
        "config_time": clock.iso(recovery.config_time),
        "summary": recovery.summary,
    }


def _rooted(root: Path | None, path: Path) -> Path:
    return root / str(path).lstrip("/") if root else path


def _with_source_target(cfg: Config, url: str) -> Config:
    """The stored config, with the target recovered from first (added when not listed)."""
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
                kinds.kind_for(source).recover_destination(source, root),
                rto_objective_seconds=None if objective is None else objective.total_seconds(),
            )
        )
    return sorted(steps, key=_order)


def _order(step: Step) -> tuple[int, int]:
    """Databases last; before them the smallest first (config, code, then media)."""
    kind = kinds.kind_named(step.type)
    return (bool(kind and kind.recovers_last), int(step.snapshot.summary.get("bytes", 0)))


def _restore_step(site: Site, cfg: Config, step: Step, root: Path | None) -> list[dict[str, str]]:
    """Restore one source; returns what its restore reports it could not bring back as
    it was (a view the server lost, an entry refused), each ``{"path", "message"}``: the
    other sources are restored all the same, and the recovery fails naming them."""
    source = cfg.source(step.source)
    target = cfg.targets[0].name
    kind = kinds.kind_for(source)
    return kind.recover(site, source, step.snapshot.id, step.destination, target)


def _write_config(path: Path, text: str) -> bool:
    """Put the stored config at ``path`` (one there that differs is kept aside); whether
    anything was written."""
    if path.exists() and path.read_text() == text:
        return False
    if path.exists():
        path.rename(path.with_name(f"{path.name}.before-recover-{int(time.time())}"))
    write_atomic(path, text.encode(), mode=0o600)
    return True


class _Progress(msgspec.Struct):
    """``recover.json``: the URL recovered from, and source -> snapshot id restored."""

    from_: str = msgspec.field(name="from")
    done: dict[str, str] = {}


def _load_progress(site: Site, url: str, warn: Any) -> dict[str, str]:
    saved = statefile.load(
        site.state_dir / STATE_FILE, statefile.typed(_Progress | None), lambda: None, warn,
        what="a record of the recovery's progress",
        then="every step is done again",
    )  # fmt: skip
    return dict(saved.done) if saved is not None and saved.from_ == url else {}


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
    for step in recovery.incomplete:
        lines += ["", f"## {step.source}: not restored as it was", ""]
        lines += [f"- `{p['path']}`: {p['message']}" for p in step.problems]
    text = ("\n".join(lines) + "\n").encode()
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    write_atomic(site.state_dir / f"recover-report-{stamp}.md", text, mode=0o600)  # kept
    path = site.state_dir / REPORT_FILE
    write_atomic(path, text, mode=0o600)  # the latest, where the runbook points
    return path
