"""`config`: a sample config, the reference of every key, or a check of one."""

from __future__ import annotations

import argparse

from .. import config, ui
from .common import Subparsers


def add_config(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="a sample config, or check one")
    actions = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    q = actions.add_parser(
        "sample", parents=[common], help="print a complete, commented sample config"
    )
    q.add_argument(
        "--recipient",
        action="append",
        default=[],
        help="an age recipient to fill in (repeat for several); without, a placeholder",
    )
    actions.add_parser(
        "check", parents=[common], help="validate the config: exit 0, or 2 naming each problem"
    )
    actions.add_parser("doc", parents=[common], help="print the reference of every config key")
    p.set_defaults(handler=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    if args.config_command == "sample":
        from ..config_sample import sample

        print(sample(args.recipient), end="")
        return 0
    if args.config_command == "doc":
        from ..config_doc import render

        print(render(), end="")
        return 0
    loaded = config.load(args.config)  # a ConfigError names every problem (exit 2)
    summary = {
        "path": str(loaded.path),
        "ok": True,
        "sources": [s.name for s in loaded.sources],
        "targets": [t.name for t in loaded.targets],
    }
    if args.json:
        ui.print_json(summary)
    else:
        ui.line(
            f"{loaded.path}: valid ({len(loaded.sources)} sources, {len(loaded.targets)} targets)"
        )
    return 0
