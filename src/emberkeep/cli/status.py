"""What happened and how it stands: `status`, `log`, `metrics`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .. import ui
from ..errors import UsageError
from ..site import Site
from .common import Subparsers

if TYPE_CHECKING:
    from datetime import datetime


def add_status(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status", parents=[common], help="RPO/RTO compliance, targets, warnings (exit 1: a breach)"
    )
    p.add_argument(
        "--accept-missing",
        action="store_true",
        help="accept the snapshots gone from a target (deleted on purpose): list and forget them",
    )
    p.set_defaults(handler=cmd_status)


def cmd_status(site: Site, args: argparse.Namespace) -> int:
    from ..journal import Journal
    from ..monitor import status
    from ..monitor.alerts import send_alerts
    from ..monitor.notify import Notifier
    from ..runner import kinds
    from .status_text import show

    report = status.collect(site, kinds.kind_for, accept_missing=args.accept_missing)
    with Journal.open(site) as journal:
        notifier = Notifier(site.config.site.name, site.config.notify, journal, warn=ui.warning)
        send_alerts(report, notifier)
    if args.json:
        ui.print_json(report.to_json())
    else:
        show(report)
    return report.exit_code


def add_log(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("log", parents=[common], help="the journal: every run of every job")
    p.add_argument("--source")
    p.add_argument("--target")
    p.add_argument(
        "--kind",
        help="backup, replicate, prune, check, drill, restore, recover (every recover and "
        "restore), import or notify",
    )
    p.add_argument("--since", metavar="D", help="a duration back from now (like 7d) or a time")
    p.set_defaults(handler=cmd_log)


def cmd_log(site: Site, args: argparse.Namespace) -> int:
    from .. import clock
    from ..journal import KIND_GROUPS, KINDS, Journal

    if args.kind is not None and args.kind not in KINDS:
        raise UsageError(f"--kind {args.kind!r}: not a kind of job; give one of {', '.join(KINDS)}")
    kind = KIND_GROUPS.get(args.kind, args.kind) if args.kind else None
    since = _since(args.since) if args.since else None
    with Journal.open(site) as journal:
        entries = journal.entries(kind=kind, source=args.source, target=args.target, since=since)
    if args.json:
        ui.print_json([e.to_json() for e in entries])
        return 0
    for e in entries:
        where = " ".join(filter(None, (e.source, f"-> {e.target}" if e.target else None)))
        took = f" {e.seconds:.1f}s" if e.seconds is not None else ""
        what = f" snapshot {e.snapshot[:12]}" if e.snapshot else ""
        if e.files is not None and e.bytes is not None:
            what += f", {e.files} files, {ui.human_bytes(e.bytes)}"
        detail = f": {e.error}" if e.error else what
        if e.kind == "notify":
            detail = f": {e.details.get('channel')}, {e.details.get('alert')}{detail}"
        if e.kind in ("restore", "recover") and e.details.get("to"):
            detail = f" to {e.details['to']}{detail}"
        if e.kind == "recover":
            detail = f" from {e.details.get('from')}{detail}"
        started = clock.iso(e.started) if e.started else "?"
        ui.line(
            f"{started} {e.kind} {where}: {e.outcome}{took}{detail}",
            style="" if e.outcome in ("ok", "running") else "red",
        )
    return 0


def _since(text: str) -> datetime:
    from .. import clock

    return clock.since(text, "--since")


def add_metrics(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("metrics", parents=[common], help="print Prometheus metrics (text format)")
    p.set_defaults(handler=cmd_metrics)


def cmd_metrics(site: Site, args: argparse.Namespace) -> int:
    from ..monitor import metrics
    from ..runner import kinds

    if args.json:
        ui.print_json(metrics.collect(site, kinds.kind_for).to_json())
    else:
        print(metrics.collect_text(site, kinds.kind_for), end="")
    return 0
