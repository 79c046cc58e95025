"""Being ready for, and doing, disaster recovery: `drill`, `recover`, `runbook`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import ui
from ..errors import EmberkeepError, UsageError
from ..site import Site
from .common import Subparsers

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ..runner.kinds import DrillResult
    from ..runner.recover import Recovery, Step


def add_drill(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("drill", parents=[common], help="restore into scratch, verify, time it")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="default: every source")
    p.add_argument("--target", help="default: [drill] target, else the first target")
    p.add_argument("--snapshot", help="a snapshot id instead of the latest (one source)")
    p.add_argument("--report", type=Path, metavar="FILE", help="write FILE.md and FILE.json")
    p.set_defaults(handler=cmd_drill)


def cmd_drill(site: Site, args: argparse.Namespace) -> int:
    from ..runner import jobs
    from ..runner.drill_report import write_report

    def status(name: str) -> AbstractContextManager[None]:
        return ui.status(f"drill {name}", enabled=not (args.json or args.quiet))

    results = []
    for drilled in jobs.drill(
        site, args.sources, target=args.target, snapshot=args.snapshot, status=status,
        warn=ui.warning,
    ):  # fmt: skip
        result = drilled.result
        results.append(result)
        if not args.json:
            _print_drill(result)
    if args.report:
        for path in write_report(args.report, results):
            if not args.json:
                ui.line(f"report written to {path}")
    if args.json:
        ui.print_json([r.to_json() for r in results])
    return 0 if all(r.passed for r in results) else 1


def _print_drill(result: DrillResult) -> None:
    phases = ", ".join(f"{k} {v:.2f}s" for k, v in result.phases.items())
    rto = f"RTO {result.rto_seconds:.1f}s"
    if result.rto_ok is False:
        rto += f" OVER the objective of {result.rto_objective_seconds:.0f}s"
    elif result.rto_ok:
        rto += f" (objective {result.rto_objective_seconds:.0f}s)"
    head = f"drill {result.source}: snapshot {result.snapshot[:12]} from {result.target}"
    if result.passed:
        ui.line(f"{head}: passed; {rto}; {phases}")
    else:
        ui.error(f"{head}: FAILED: {result.error or result.first_difference}")
    if result.rto_ok is False:
        ui.warning(f"drill {result.source}: measured {rto}")


def add_recover(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "recover",
        parents=[common],
        help="bring a site back from one target on a new host (needs no config file)",
    )
    p.add_argument("--from", required=True, dest="from_url", metavar="URL", help="a target URL")
    p.add_argument("--at", metavar="TIME", help="the newest snapshots at or before TIME")
    p.add_argument("--only", nargs="+", default=[], metavar="SOURCE", help="only these sources")
    p.add_argument("--root", type=Path, help="restore files and the config under DIR")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    hooks = p.add_mutually_exclusive_group()
    hooks.add_argument(
        "--yes", action="store_true", help="run the stored config's restore hooks (shown first)"
    )
    hooks.add_argument("--no-hooks", action="store_true", help="restore without running hooks")
    p.add_argument(
        "--expect-repository",
        metavar="ID",
        help="refuse unless the target holds this repository (its id, from the runbook)",
    )
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="use an unsealed site config (from an emberkeep before sealing) when no sealed "
        "one exists; read it with --dry-run first",
    )
    p.set_defaults(handler=cmd_recover)


def cmd_recover(args: argparse.Namespace) -> int:
    from ..clock import parse_time
    from ..runner.recover import plan_recover

    if args.identity is None:
        raise UsageError("recover needs --identity FILE: the key that can read the backups")

    def shown(step: Step) -> None:
        if not args.json:
            what = "already restored before" if step.status == "skipped" else (
                f"restored in {step.seconds:.1f}s"
            )  # fmt: skip
            if step.problems:
                what = f"INCOMPLETE after {step.seconds:.1f}s ({len(step.problems)} problems)"
            ui.line(f"{step.source} ({step.type}) -> {step.destination}: {what}")

    plan = plan_recover(
        args.from_url,
        args.identity,
        config_path=Path(args.config) if args.config else None,
        at=parse_time(args.at) if args.at else None,
        only=args.only,
        root=args.root,
        dry_run=args.dry_run,
        expect_repository=args.expect_repository,
        allow_unverified=args.allow_unverified,
    )
    if not args.json:
        _print_recovery_plan(plan)
    if args.dry_run:
        if args.json:
            ui.print_json(plan.to_json())
        return 1 if plan.refused else 0
    from ..runner import jobs

    run_hooks = _hooks_approved(plan, args)
    shown_before = len(plan.warnings)  # the plan's, printed with it
    recovery = jobs.recover(plan, run_hooks=run_hooks, on_step=shown, warn=ui.warning).recovery
    if not args.json:
        for warning in recovery.warnings[shown_before:]:
            ui.warning(warning)
    if args.json:
        ui.print_json(recovery.to_json())
        return 1 if recovery.refused or recovery.incomplete else 0
    for step in recovery.steps:
        row = step.to_json()
        if row["rto_ok"] is False:
            ui.warning(
                f"{step.source}: took {step.seconds:.0f}s, over its RTO of "
                f"{row['rto_objective_seconds']:.0f}s"
            )
    whole = len(recovery.steps) - len(recovery.incomplete)
    counted = f"{whole} of {len(recovery.steps)}" if recovery.incomplete else str(whole)
    ui.line(
        f"recovered {counted} sources from {args.from_url} in "
        f"{recovery.seconds:.1f}s; config at {recovery.config_path}; report {recovery.report}"
    )
    for step in recovery.incomplete:
        for problem in step.problems:
            ui.error(f"{step.source}: {problem['path']}: {problem['message']}")
    if recovery.incomplete:
        names = ", ".join(s.source for s in recovery.incomplete)
        ui.error(
            f"the recovery is NOT complete: the restore of {names} reported the problems "
            "above (everything else is restored); fix what they name and run recover again: "
            "it redoes only those sources"
        )
    if recovery.refused:
        ui.error(
            f"{len(recovery.refused)} objects in the target were refused (listed above) and "
            "not used: someone who can write to the target put them there, or they are "
            "damaged; the recovery used only what the writer key verifies"
        )
    return 1 if recovery.refused or recovery.incomplete else 0


def _print_recovery_plan(plan: Recovery) -> None:
    """What recover will do, and on what authority, before it does anything."""
    from ..clock import iso

    ui.line(
        f"repository {plan.repository_id} (writer key fingerprint "
        f"{plan.writer_key_fingerprint}) at {plan.url}: compare it with the id in the "
        "site's runbook (or pass --expect-repository ID)"
    )
    sealed = "sealed by the repository's writer key" if plan.config_sealed else (
        "UNVERIFIED: not sealed (stored before sealing, or planted); used only with "
        "--allow-unverified"
    )  # fmt: skip
    ui.line(f"site config {plan.config_object} of {iso(plan.config_time)}: {sealed}")
    summary = plan.summary
    labels = summary.get("labels", {})
    named = [f"{r} ({labels[r]})" if r in labels else r for r in summary["recipients"]]
    ui.line(f"  recipients: {', '.join(named)}")
    for name, where in summary["targets"].items():
        ui.line(f"  target {name}: {where}")
    for name, where in summary["sources"].items():
        ui.line(f"  source {name}: {where}")
    for key, command in summary["hooks"].items():
        ui.line(f"  hook {key}: {command}")
    if not summary["hooks"]:
        ui.line("  hooks: none")
    if plan.changes_since_previous is not None and plan.previous_time is not None:  # set together
        _print_changes(
            f"the config stored before it ({iso(plan.previous_time)})",
            plan.changes_since_previous,
        )
    if plan.changes_since_seen is not None:
        _print_changes(
            f"the config this host last recovered from ({plan.seen_time})",
            plan.changes_since_seen,
        )
    for refused in plan.refused:
        ui.line(f"{refused.name}: {refused.reason}", label="refused: ", style="red", stderr=True)
    if plan.ignored:
        ui.line(f"{len(plan.ignored)} older unsealed site configs (from before sealing) not used")
    for warning in plan.warnings:
        ui.warning(warning)
    head = "plan (dry run: nothing changed)" if plan.dry_run else "plan"
    ui.line(f"{head}: config to {plan.config_path}, then:")
    for step in plan.steps:
        row = step.to_json()
        ui.line(
            f"  {step.source} ({step.type}): snapshot {step.snapshot.short_id} of "
            f"{row['snapshot_time']}, {ui.human_bytes(row['bytes'])} -> {step.destination}"
        )
    if plan.dry_run and plan.restore_hooks:
        ui.line(
            f"restore hooks ({', '.join(plan.restore_hooks)}) would run only with --yes (or "
            "a yes typed at a terminal); --no-hooks restores without them"
        )


def _print_changes(since: str, changes: list[str]) -> None:
    ui.line(f"changed since {since}:" + ("" if changes else " nothing"))
    for change in changes:
        ui.line(f"  {change}")


def _hooks_approved(plan: Recovery, args: argparse.Namespace) -> bool:
    """Whether to run the restore hooks shown: --yes, --no-hooks, or a yes typed at a
    terminal; anything else stops here, before anything is changed."""
    hooks = plan.restore_hooks
    if not hooks or args.no_hooks:
        return False
    if args.yes:
        return True
    listed = ", ".join(hooks)
    if not args.json and sys.stdin.isatty() and sys.stderr.isatty():
        sys.stderr.write(f"run the restore hooks shown above ({listed})? type yes to run them: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() == "yes":
            return True
        raise EmberkeepError(
            "the restore hooks were not approved: nothing was changed; run recover again "
            "and type yes, or pass --no-hooks to restore without them"
        )
    raise UsageError(
        f"the stored config has restore hooks ({listed}), shown above; they run only when "
        "approved, and this is not a terminal: nothing was changed. Run again with --yes to "
        "run them, or --no-hooks to restore without them"
    )


def add_runbook(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runbook", parents=[common], help="the site's recovery runbook")
    p.add_argument("--format", choices=["md"], default="md")
    p.set_defaults(handler=cmd_runbook)


def cmd_runbook(site: Site, args: argparse.Namespace) -> int:
    from ..runner.runbook import last_copies, last_drills, render

    text = render(site, last_drills(site), last_copies(site))
    if args.json:  # a document, not data: handed over whole, as JSON asked for
        ui.print_json({"format": "markdown", "text": text})
    else:
        sys.stdout.write(text)
    return 0
