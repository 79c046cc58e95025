"""`oplog`: point-in-time recovery, archiving a mongodb oplog."""

from __future__ import annotations

import argparse
import json

from .. import ui
from ..site import Site
from .common import Subparsers


def add_oplog(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "oplog", parents=[common], help="point-in-time recovery: archive a mongodb oplog"
    )
    p.add_argument("action", choices=["run", "status"], help="run: archive (long-running)")
    p.add_argument("--source", help="the mongodb source (default: the only one)")
    p.add_argument("--once", action="store_true", help="run: seal what is settled now, exit")
    p.set_defaults(handler=cmd_oplog)


def cmd_oplog(site: Site, args: argparse.Namespace) -> int:
    """``oplog run``: the archiver, one line (or JSON line) per slice sealed; ``oplog
    status``: the chains in the first target, the window and the lag (exit 1: a gap)."""
    from ..runner import pitr
    from ..runner.stopping import Stopper

    source = pitr.mongo_source(site, args.source)
    if args.action == "status":
        report = pitr.pitr_status(site, source)
        if args.json:
            ui.print_json(report.to_json())
        else:
            for line in report.lines():
                ui.line(line)
        return 1 if report.gaps else 0

    def on_slice(outcome: pitr.SliceOutcome) -> None:
        if args.json:
            print(json.dumps(outcome.to_json()), flush=True)
        elif not args.quiet:
            info = outcome.info
            ui.line(
                f"slice {outcome.snapshot[:12]} #{info.n}: {info.entries} entries to "
                f"{pitr.op_text(info.end)}",
                stderr=True,
            )

    archiver = pitr.Archiver(site, source, on_slice=on_slice, on_gap=ui.warning)
    # A signal stops it between polls, never inside a seal or a server call (a second one
    # aborts at once: the slices sealed are whole either way).
    with Stopper("the poll in hand").installed() as stopper:
        archiver.run(once=args.once, stop=stopper.requested)
    if stopper.stopping:
        ui.line("stopped; the next run goes on from the last slice sealed", stderr=True)
        return 130
    return 0
