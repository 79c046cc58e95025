"""restore (into a directory, or a mongodb server) and recover."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import UsageError
from ...monitor.jobs import JournalFields, watch
from ...site import Site
from .base import Bar, Warn, byte_feed, shown_while, silent

if TYPE_CHECKING:
    from ...engine.restore import RestoreResult
    from ...repository.snapshot import Snapshot
    from ...sources.mongodb.restore import MongoRestoreResult, Selection
    from ..recover import Recovery, Step


# -- restore and recover --------------------------------------------------------------------


@dataclass
class Restored:
    """A snapshot restored into a directory; ``result.refused``: entries not written."""

    snapshot: Snapshot
    result: RestoreResult

    def journal_fields(self) -> JournalFields:
        refused = self.result.refused
        return JournalFields(
            row={
                "snapshot": self.snapshot.id,
                "source": self.snapshot.source,
                "bytes": self.result.bytes,
                "files": self.result.files,
            },
            failed=f"{len(refused)} entries not restored" if refused else None,
        )


def restore(
    site: Site,
    spec: str,
    dest: Path,
    *,
    paths: list[str],
    target: str | None = None,
    source: str | None = None,
    bar: Bar | None = None,
) -> Restored:
    """Snapshot ``spec`` (or its ``paths``) restored under ``dest``; refused entries are in
    the result, the rest restored."""
    from ..restore import run_restore

    with watch(site, "restore", source=source, target=target) as job, shown_while(bar):
        job.entry.details["to"] = str(dest.resolve())
        on_file, on_total = byte_feed(bar)
        snapshot, result = run_restore(
            site, spec, dest, paths=paths, target=target, source=source, partial=True,
            on_file=on_file, on_total=on_total,
        )  # fmt: skip
        return job.took(Restored(snapshot, result))


@dataclass
class RestoredMongo:
    """A mongodb snapshot (or a point in time) restored into a server."""

    snapshot: Snapshot
    result: MongoRestoreResult

    def journal_fields(self) -> JournalFields:
        result = self.result
        problems = result.problems  # a restore that lost an option or refused a user
        return JournalFields(
            row={
                "snapshot": self.snapshot.id,
                "source": self.snapshot.source,
                "bytes": result.bytes,
                "files": len(result.collections),
            },
            details={"documents": sum(c.documents for c in result.collections)},
            failed="; ".join(f"{p['path']}: {p['message']}" for p in problems[:3]) or None,
        )


def restore_mongodb(
    site: Site,
    uri: str,
    *,
    spec: str | None = None,
    at_time: str | None = None,
    at_op: str | None = None,
    drop: bool,
    selection: Selection,
    target: str | None = None,
    source: str | None = None,
    bar: Bar | None = None,
) -> RestoredMongo:
    """Snapshot ``spec``, or the source as it was at ``at_time`` (its whole second) or
    after the oplog entry ``at_op`` (a base snapshot and the archived oplog), restored into
    the server at ``uri``."""
    from ...redact import redact_url
    from ..restore import run_restore_mongodb, run_restore_mongodb_at

    on_file, on_total = byte_feed(bar)
    with watch(site, "restore", source=source, target=target) as job, shown_while(bar):
        job.entry.details["to"] = redact_url(uri)
        if at_time or at_op:
            point = _restore_point(at_time, at_op)
            done = run_restore_mongodb_at(
                site, point, uri, drop=drop, selection=selection, target=target, source=source,
                on_file=on_file, on_total=on_total,
            )  # fmt: skip
        else:
            assert spec is not None
            done = run_restore_mongodb(
                site, spec, uri, drop=drop, selection=selection, target=target, source=source,
                on_file=on_file, on_total=on_total,
            )  # fmt: skip
        return job.took(RestoredMongo(*done))


def _restore_point(at_time: str | None, at_op: str | None) -> Any:
    """The oplog point of ``--at TIME`` or ``--at-op T:I``."""
    from ...clock import parse_time
    from ...sources.mongodb.pitr import parse_op, point_of_time

    if at_op:
        return parse_op(at_op)
    assert at_time is not None
    try:
        return point_of_time(parse_time(at_time))
    except ValueError as exc:
        raise UsageError(f"--at {at_time!r}: {exc}") from None


@dataclass
class Recovered:
    recovery: Recovery

    def journal_fields(self) -> JournalFields:
        result = self.recovery
        failed = None
        if result.refused:
            failed = f"{len(result.refused)} objects in the target were refused"
        elif result.incomplete:
            failed = f"restored with problems: {', '.join(s.source for s in result.incomplete)}"
        columns = ("source", "snapshot", "destination", "status", "seconds")
        steps = [{k: step[k] for k in columns} for step in (s.to_json() for s in result.steps)]
        return JournalFields(
            row={
                "bytes": sum(int(s.snapshot.summary.get("bytes", 0)) for s in result.steps),
                "files": len(result.steps),
            },
            details={
                "to": result.restored_under,
                "config_written": result.config_written,
                "steps": steps,
            },
            failed=failed,
        )


def recover(
    plan: Recovery,
    *,
    run_hooks: bool,
    on_step: Callable[[Step], None] = lambda step: None,
    warn: Warn = silent,
) -> Recovered:
    """Carry out ``plan`` (``recover.plan_recover``), journaled in the recovered site."""
    from ...redact import redact_url
    from ..recover import execute, recovery_site

    site = recovery_site(plan)
    with watch(site, "recover", target=site.config.targets[0].name, warn=warn) as job:
        job.entry.details.update({"from": redact_url(plan.url), "only": plan.only})
        return job.took(Recovered(execute(plan, run_hooks=run_hooks, on_step=on_step)))
