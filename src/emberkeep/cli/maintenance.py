"""`check` (verify the repository) and `prune` (retention, then free unused data)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import ui
from ..errors import UsageError
from ..site import Site
from .common import Subparsers

if TYPE_CHECKING:
    from ..durations import Duration


def _subset_text(text: str) -> str:
    from ..repository.check import Subset

    return _checked(text, Subset.parse)


def _duration_text(text: str) -> Duration:
    from ..durations import Duration

    value = Duration(text)
    if value.problem:
        raise argparse.ArgumentTypeError(value.problem)
    return value


def _checked(text: str, parse: Callable[[str], object]) -> str:
    """An option's value, checked as it is parsed: a mistake is a usage error (exit 2)
    before any job starts, rather than a failed job in the journal."""
    try:
        parse(text)
    except (ValueError, UsageError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_check(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check", parents=[common], help="verify the repository")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--read-data", action="store_true", help="read and decrypt every pack")
    group.add_argument(
        "--read-data-subset",
        metavar="SPEC",
        type=_subset_text,
        help="N%% (least recently verified first) or n/t",
    )
    p.add_argument("--target")
    p.set_defaults(handler=cmd_check)


def cmd_check(site: Site, args: argparse.Namespace) -> int:
    from ..runner import jobs

    def bar(target: str) -> ui.ByteProgress:
        return ui.ByteProgress(f"check {target}", enabled=not (args.json or args.quiet))

    results = {}
    for checked in jobs.check(
        site, args.target, read_data=args.read_data, subset=args.read_data_subset, bar=bar,
        warn=ui.warning,
    ):  # fmt: skip
        target, result = checked.target, checked.result
        results[target] = result
        if not args.json:
            ui.line(
                f"{result.snapshots} snapshots, {result.packs} packs, "
                f"{result.blobs} blobs; {result.packs_read} packs read and verified "
                f"({ui.human_bytes(result.bytes_read)})",
                label=f"target {target}: {'ok' if result.ok else 'FAILED'}: ",
                style="green" if result.ok else "red",
            )
            for error in result.errors:
                ui.line(f"{error['object']}: {error['error']}", label="  damaged: ", style="red")
            for note in result.notes:
                ui.line(f"{note['object']}: {note['note']}", label="  note: ")
            for warning in result.warnings:
                ui.line(warning, label="  warning: ", style="yellow")
            if result.leftovers or result.incomplete:
                ui.line(
                    f"  {len(result.leftovers)} packs no index lists and "
                    f"{len(result.incomplete)} unfinished writes (left by an interrupted "
                    "backup, or one still running; harmless, `emberkeep prune` removes them)"
                )
    if args.json:
        ui.print_json({t: r.to_json() for t, r in results.items()})
    return 0 if all(r.ok for r in results.values()) else 1


def add_prune(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prune",
        parents=[common],
        help="apply each source's retention in every target, then free unused data",
    )
    p.add_argument(
        "--forget",
        action="append",
        default=[],
        metavar="ID",
        help="also remove this snapshot, whatever retention says",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="show what would be kept and removed; change nothing"
    )
    p.add_argument(
        "--keep-tag",
        action="append",
        default=[],
        dest="keep_tags",
        metavar="TAG",
        help="also keep every snapshot with this tag, whatever retention says",
    )
    p.add_argument(
        "--grace",
        type=_duration_text,
        help="how long condemned packs wait before deletion (default [prune] grace)",
    )
    p.add_argument("--target")
    p.set_defaults(handler=cmd_prune)


def cmd_prune(site: Site, args: argparse.Namespace) -> int:
    from ..runner import jobs

    results = {}
    for pruned in jobs.prune(
        site, args.target, forget=args.forget, dry_run=args.dry_run, grace=args.grace,
        keep_tags=args.keep_tags, warn=ui.warning,
    ):  # fmt: skip
        target, result = pruned.target, pruned.result
        results[target] = result
        if not args.json:
            verb = "would remove" if args.dry_run else "removed"
            removed = [d for d in result.decisions if d["action"] == "remove"]
            ui.line(f"target {target}: {verb} {len(removed)} of {len(result.decisions)} snapshots")
            for d in result.decisions:
                tags = f" [{','.join(d['tags'])}]" if d.get("tags") else ""
                ui.line(
                    f"  {d['action']:6} {d['id'][:12]} {d['time']} {d['source']}{tags}: "
                    f"{d['reason']}"
                )
            if not args.dry_run:
                ui.line(
                    f"  packs: {result.packs_condemned} condemned, {result.packs_deleted} deleted "
                    f"({ui.human_bytes(result.bytes_freed)} freed), {result.packs_deferred} waiting"
                )
            for message in result.messages:
                ui.line(f"  {message}")
    if args.json:
        ui.print_json({t: r.to_json() for t, r in results.items()})
    return 0
