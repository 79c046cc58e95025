"""`backup`, `import` (a snapshot, then its copies to the other targets) and `replicate`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .. import config, memory, ui
from ..site import Site
from .common import Subparsers

if TYPE_CHECKING:
    from ..runner.jobs import BackedUp
    from ..runner.replicate import TargetCopy

# Exit status beyond docs/design.md's 0/1/2 (as restic's 3): a backup committed its snapshot, but
# content its sources were asked for could not be read and is not in it.
INCOMPLETE = 3


def add_backup(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backup", parents=[common], help="back up sources (all when none named)")
    p.add_argument("sources", nargs="*", metavar="SOURCE")
    p.add_argument("--tag", action="append", default=[], dest="tags")
    p.set_defaults(handler=cmd_backup)


def cmd_backup(site: Site, args: argparse.Namespace) -> int:
    memory.return_large_buffers_promptly()  # backup only: it slows restore by a quarter
    from ..runner import jobs, kinds
    from ..runner.backup import sources_to_run

    done: list[jobs.BackedUp] = []
    for name in sources_to_run(site, args.sources):
        bar = ui.ByteProgress(f"backup {name}", enabled=not (args.json or args.quiet))
        source = site.config.source(name)
        if bar.enabled:

            def scan(s: config.Source = source, b: ui.ByteProgress = bar) -> None:
                total = kinds.kind_for(s).scan_size(s)  # None: the kind cannot tell beforehand
                if total is not None:
                    b.set_total(total)

            ui.in_background(scan)
        backup = jobs.backup(
            site,
            name,
            tags=args.tags,
            bar=bar,
            copy_bar=_copy_bar(f"copy {name}", site, args),
            warn=ui.warning,
            show=(lambda b: None) if args.json else _print_backup,
        )
        done.append(backup)
    if args.json:
        ui.print_json([b.to_json() for b in done])
    for backup in done:
        for copy in backup.failed_copies:
            outcome = backup.outcome
            ui.error(
                f"copying snapshot {outcome.result.snapshot.short_id} of source "
                f"{outcome.source} to target {copy.target} failed: {copy.reason}; the snapshot "
                f"is committed in {outcome.target}; run `emberkeep replicate` when "
                f"{copy.target} is reachable"
            )
    incomplete = [b.outcome for b in done if b.outcome.result.unreadable]
    for outcome in incomplete:
        ui.error(
            f"snapshot {outcome.result.snapshot.short_id} of source {outcome.source} is "
            f"incomplete: {len(outcome.result.unreadable)} files or directories could not be "
            "read (warned above) and are not in it; give emberkeep read access to them, or "
            "exclude them, and back up again"
        )
    failed = any(b.failed_copies for b in done)
    return 1 if failed else INCOMPLETE if incomplete else 0


def _print_backup(backup: BackedUp) -> None:
    outcome = backup.outcome
    snap = outcome.result.snapshot
    s = snap.summary
    ui.line(
        f"source {outcome.source}: snapshot {snap.short_id} in target {outcome.target}: "
        f"{s['files']} files, {ui.human_bytes(s['bytes'])} read "
        f"({ui.human_bytes(s['bytes_from_cache'])} unchanged), "
        f"{ui.human_bytes(s['bytes_new'])} new, {ui.human_bytes(s['bytes_stored'])} stored, "
        f"{s['seconds']:.1f}s"
    )
    for copy in backup.copies:
        _print_copy(copy, indent="  ")
    for warning in outcome.result.warnings:
        ui.warning(f"{warning['path']}: {warning['message']}")


def add_import(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "import", parents=[common], help="make a stock mongodump into a snapshot of a source"
    )
    p.add_argument("dump", type=Path, help="a mongodump --archive file (gzipped or not) or --out")
    p.add_argument("--source", help="the mongodb source it belongs to (default: the only one)")
    p.add_argument("--time", metavar="TIME", help="the snapshot's time (default: the dump's)")
    p.add_argument("--tag", action="append", default=[], dest="tags")
    p.set_defaults(handler=cmd_import)


def cmd_import(site: Site, args: argparse.Namespace) -> int:
    from ..clock import parse_time
    from ..runner import jobs
    from ..runner.import_dump import import_source

    when = parse_time(args.time) if args.time else None
    name = import_source(site, args.source).name
    imported = jobs.import_dump(
        site,
        args.dump,
        source=name,
        time=when,
        tags=args.tags,
        bar=ui.ByteProgress(f"import {name}", enabled=not (args.json or args.quiet)),
        copy_bar=_copy_bar(f"copy {name}", site, args),
        warn=ui.warning,
    )
    outcome, copies = imported.outcome, imported.copies
    if args.json:
        ui.print_json({**outcome.to_json(), "copies": [c.to_json() for c in copies]})
    else:
        _print_backup(imported)
    failed = [c for c in copies if c.failed]
    for copy in failed:
        ui.error(
            f"copying the imported snapshot to target {copy.target} failed: {copy.reason}; "
            f"run `emberkeep replicate` when {copy.target} is reachable"
        )
    return 1 if failed else 0


def add_replicate(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "replicate",
        parents=[common],
        help="copy the primary's snapshots that other targets lack (and their copies rule wants)",
    )
    p.add_argument("--target", help="only this target (default: every target but the first)")
    p.add_argument("--source", help="only snapshots of this source")
    p.add_argument(
        "--re-encrypt",
        action="store_true",
        help="decrypt each blob (needs --identity) and seal it into new packs under the "
        "target's own key epoch, instead of copying packs and their epoch keys as they are: "
        "a new target no removed team member's old key opens (with --target)",
    )
    p.set_defaults(handler=cmd_replicate)


def cmd_replicate(site: Site, args: argparse.Namespace) -> int:
    from ..runner import jobs

    copies = jobs.replicate(
        site,
        args.target,
        args.source,
        re_encrypt=args.re_encrypt,
        bar=_copy_bar("replicate", site, args),
    ).copies
    if args.json:
        ui.print_json([c.to_json() for c in copies])
    elif not copies:
        ui.line(f"nothing to replicate: {site.config.path} has one target, the primary")
    for copy in copies:
        if not args.json:
            _print_copy(copy)
        if copy.failed:
            again = f" --target {copy.target} --re-encrypt" if copy.re_encrypted else ""
            ui.error(
                f"{copy.reason}; run `emberkeep replicate{again}` again when {copy.target} is "
                "reachable"
            )
    return 1 if any(c.failed for c in copies) else 0


def _copy_bar(label: str, site: Site, args: argparse.Namespace) -> ui.ByteProgress:
    """A bar over every copy of a run (shown when there is another target to copy to)."""
    return ui.ByteProgress(
        label, enabled=len(site.config.targets) > 1 and not (args.json or args.quiet)
    )


def _print_copy(copy: TargetCopy, indent: str = "") -> None:
    """One target's outcome of a copy: copied (what was sent), skipped (why) or FAILED."""
    head = f"{indent}target {copy.target}: "
    if copy.status == "copied":
        count = len(copy.snapshots)
        st = copy.stats
        if copy.re_encrypted:
            ui.line(
                f"copied {count} snapshot{'s' if count != 1 else ''} re-encrypted: "
                f"{st.packs_copied} new packs ({ui.human_bytes(st.bytes_copied)}) under its "
                "own key epoch",
                label=head,
            )
            return
        ui.line(
            f"copied {count} snapshot{'s' if count != 1 else ''}: {st.packs_copied} packs sent "
            f"({ui.human_bytes(st.bytes_copied)}), {st.packs_reused} already there",
            label=head,
        )
    elif copy.status == "skipped":
        ui.line(f"skipped: {copy.reason}", label=head)
    else:
        reason = (copy.reason or "").removeprefix(head.strip() + " ")
        ui.line(f"FAILED: {reason}", label=head, style="red")
