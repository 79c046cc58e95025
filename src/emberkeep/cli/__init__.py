"""The command line: parse, call a runner job, print (rich) or --json. Nothing else.

``main`` and the parser's assembly are here; each command's parser sits beside its handler
in the module of its group (``cli/backup.py``: backup, import, replicate; ...), and names
that handler (``set_defaults(handler=...)``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__, config, ui
from ..errors import EmberkeepError
from ..site import Site
from . import (
    backup,
    browse,
    config_cmd,
    keys,
    maintenance,
    oplog,
    recover,
    restore,
    run,
    status,
    web,
)
from .common import Subparsers

# Each command imports the runner modules it needs when it runs: a no-change backup from
# cron should not pay for loading check, prune and restore.


def _add_common(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Options every command takes, before or after the command name."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "-c",
        "--config",
        default=default(None),
        help="config file (default ./emberkeep.toml, then /etc/emberkeep/emberkeep.toml)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print data as JSON"
    )
    parser.add_argument(
        "--identity",
        type=Path,
        default=default(None),
        help="identity file to decrypt with (overrides keys.identity_file)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress bars"
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, defaults=False)

    parser = argparse.ArgumentParser(
        prog="emberkeep", description="Encrypted backups and disaster recovery."
    )
    parser.add_argument("--version", action="version", version=f"emberkeep {__version__}")
    _add_common(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # in the order `emberkeep --help` lists them
    keys.add_keygen(sub, common)
    keys.add_keys(sub, common)
    keys.add_init(sub, common)
    backup.add_backup(sub, common)
    browse.add_snapshots(sub, common)
    restore.add_restore(sub, common)
    browse.add_ls(sub, common)
    browse.add_find(sub, common)
    browse.add_diff(sub, common)
    browse.add_mount(sub, common)
    restore.add_export(sub, common)
    backup.add_import(sub, common)
    recover.add_drill(sub, common)
    recover.add_recover(sub, common)
    recover.add_runbook(sub, common)
    maintenance.add_check(sub, common)
    maintenance.add_prune(sub, common)
    backup.add_replicate(sub, common)
    status.add_status(sub, common)
    status.add_log(sub, common)
    status.add_metrics(sub, common)
    oplog.add_oplog(sub, common)
    run.add_run(sub, common)
    web.add_web(sub, common)
    run.add_schedule(sub, common)
    config_cmd.add_config(sub, common)
    add_demo(sub)
    return parser


def add_demo(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="run the main job on a generated demo shop")
    p.add_argument(
        "--dir", type=Path, default=Path("demo"), help="folder for the demo (default ./demo)"
    )
    p.add_argument("--media-files", type=int, default=300)
    p.add_argument(
        "--web",
        nargs="?",
        const="127.0.0.1:8470",
        metavar="HOST:PORT",
        help="at the end, leave the dashboard running in the background (default "
        "127.0.0.1:8470; its pid in DIR/web.pid)",
    )
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    # here, not in a module of its own: the demo drives this CLI in-process (demo/run.py)
    from ..demo.run import run_demo

    return run_demo(args.dir, cli=main, media_files=args.media_files, web=args.web)


# Commands whose last positional takes many values: the ones that came after an option
# (`restore latest --to DIR etc/nginx`) belong to it, as users write them.
TRAILING_POSITIONALS = {"backup": "sources", "restore": "paths", "drill": "sources"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    spill = TRAILING_POSITIONALS.get(args.command)
    if extra and spill and not any(arg.startswith("-") for arg in extra):
        getattr(args, spill).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# What an interrupted command leaves, told to the user who pressed Ctrl-C.
INTERRUPTED = {
    "": "nothing was committed after the last finished step",
    "restore": "every file restored so far is whole (each is written under a temp name, then "
    "renamed); the rest is not there yet: run the restore again to finish it",
    "restore-uri": "the database restore is not complete (collections may be part-filled): "
    "run it again with --drop",
    "export": "the export is not complete: an archive or tar is never left under its final "
    "name; a mongodump-dir is partly written: remove it, then run the export again",
    "recover": "run the same recover again: it goes on from the steps already done",
}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return dispatch(args)
    except EmberkeepError as exc:
        if args.json:
            ui.print_json({"error": str(exc), "exit_code": exc.exit_code})
        else:
            ui.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        what = "restore-uri" if getattr(args, "to_uri", None) else args.command
        ui.line(f"interrupted; {INTERRUPTED.get(what, INTERRUPTED[''])}", stderr=True)
        return 130


# Commands that run without a site: keygen and config work on files, before (or without) a
# config; recover has no config yet: it fetches it from the target.
WITHOUT_SITE = {"keygen", "config", "recover", "demo"}


def dispatch(args: argparse.Namespace) -> int:
    if args.command in WITHOUT_SITE:
        return int(args.handler(args))
    site = Site(config.load(args.config), identity_file=args.identity)
    return int(args.handler(site, args))
