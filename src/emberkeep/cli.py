"""The command line: parse, call a runner job, print (rich) or --json. Nothing else."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, config, memory, ui
from .errors import EmberkeepError, UsageError
from .runner.site import Site

# Exit status beyond DESIGN.md's 0/1/2 (as restic's 3): a backup committed its snapshot, but
# content its sources were asked for could not be read and is not in it.
INCOMPLETE = 3

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from datetime import datetime

    from .runner.drill import DrillResult
    from .runner.jobs import BackedUp
    from .runner.recover import Recovery, Step
    from .runner.replicate import TargetCopy

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

    p = sub.add_parser("keygen", parents=[common], help="make a new identity; prints its recipient")
    p.add_argument("-o", "--output", type=Path, default=Path("emberkeep-identity.txt"))
    p.add_argument(
        "--passphrase",
        action="store_true",
        help="encrypt the identity file with a passphrase (asked on the terminal, or read "
        "from --passphrase-file or EMBERKEEP_IDENTITY_PASSPHRASE_FILE); `age -d` reads it",
    )
    p.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="its first line is the passphrase"
    )

    p = sub.add_parser(
        "keys", parents=[common], help="who can read the backups: list, add, remove, rotate"
    )
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys_sub.add_parser("list", parents=[common], help="recipients, key epochs, writer key")
    k.add_argument("--target")
    for action, what in (("add", "give RECIPIENT access"), ("remove", "take RECIPIENT's away")):
        k = keys_sub.add_parser(action, parents=[common], help=what)
        k.add_argument("recipient", metavar="RECIPIENT", help="an age1… recipient")
        k.add_argument("--target", help="only this target (default: every target)")
        k.add_argument(
            "--update-config",
            action="store_true",
            help="also rewrite [keys] recipients in the config file to the new set",
        )
    k = keys_sub.add_parser("rotate", parents=[common], help="a new key epoch for new data")
    k.add_argument("--target")
    k = keys_sub.add_parser(
        "convert", parents=[common], help="give a repository from before key epochs its epochs"
    )
    k.add_argument("--target")

    p = sub.add_parser("init", parents=[common], help="create the repository in each target")
    p.add_argument("--target")
    p.add_argument(
        "--new",
        action="store_true",
        help="create a repository even in an empty target this host used before "
        "(refused otherwise: its disk may be unmounted)",
    )

    p = sub.add_parser("backup", parents=[common], help="back up sources (all when none named)")
    p.add_argument("sources", nargs="*", metavar="SOURCE")
    p.add_argument("--tag", action="append", default=[], dest="tags")

    p = sub.add_parser("snapshots", parents=[common], help="list snapshots")
    p.add_argument("--source")
    p.add_argument("--target")

    p = sub.add_parser("restore", parents=[common], help="restore a snapshot")
    p.add_argument(
        "snapshot", nargs="?", help="snapshot id (or unique prefix), or 'latest' (not with --at)"
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="only these paths of the snapshot")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=Path, dest="dest", help="directory to restore under")
    where.add_argument(
        "--to-uri",
        metavar="URI",
        type=_uri_argument,
        help="MongoDB server to restore a dump into; env:NAME reads it from the environment "
        "variable NAME (a password on the command line is visible to other users)",
    )
    p.add_argument("--target")
    p.add_argument("--source", help="with 'latest': the latest of this source")
    mongo = p.add_argument_group("mongodb snapshots (with --to-uri)")
    mongo.add_argument("--drop", action="store_true", help="drop each collection before")
    mongo.add_argument("--db", help="only this database of the dump")
    mongo.add_argument("--collection", help="only this collection (with --db)")
    mongo.add_argument("--ns-from", metavar="A", help="restore database or db.collection A…")
    mongo.add_argument("--ns-to", metavar="B", help="…under the name B")
    point = mongo.add_mutually_exclusive_group()
    point.add_argument(
        "--at",
        metavar="TIME",
        dest="at_time",
        help="the source as it was at TIME (its whole second), from a base snapshot and the "
        "archived oplog (no SNAPSHOT: the base is chosen)",
    )
    point.add_argument(
        "--at-op", metavar="T:I", help="…as it was after the oplog entry T:I (inclusive)"
    )

    p = sub.add_parser("ls", parents=[common], help="list a directory of a snapshot")
    p.add_argument("snapshot", help="snapshot id (or unique prefix), or 'latest'")
    p.add_argument("path", nargs="?", default="/", help="a path in the snapshot (default /)")
    p.add_argument("-l", dest="long", action="store_true", help="mode, owner, size, mtime")
    p.add_argument("-R", "--recursive", action="store_true", help="everything below PATH")
    p.add_argument("--target")
    p.add_argument("--source", help="with 'latest': the latest of this source")

    p = sub.add_parser("find", parents=[common], help="which snapshots hold a path or glob")
    p.add_argument("pattern", help="a glob: on the whole path when it holds '/', else on the name")
    p.add_argument("--source", help="only snapshots of this source")
    p.add_argument("--target")

    p = sub.add_parser("diff", parents=[common], help="what changed between two snapshots")
    p.add_argument("snapshot_a", metavar="SNAPSHOT_A")
    p.add_argument("snapshot_b", metavar="SNAPSHOT_B")
    p.add_argument("--target")
    p.add_argument("--source", help="with 'latest': the latest of this source")

    p = sub.add_parser(
        "mount", parents=[common], help="the snapshots as a read-only file system (FUSE)"
    )
    p.add_argument("mountpoint", type=Path, metavar="DIR", help="an existing directory")
    p.add_argument("--source", help="only snapshots of this source")
    p.add_argument("--target")

    p = sub.add_parser("export", parents=[common], help="write a snapshot for other tools")
    p.add_argument("snapshot", help="snapshot id (or unique prefix), or 'latest'")
    p.add_argument("--format", required=True, choices=["mongodump-dir", "mongodump-archive", "tar"])
    p.add_argument("--to", type=Path, required=True, dest="dest", help="directory or file")
    p.add_argument("--target")
    p.add_argument("--source", help="with 'latest': the latest of this source")

    p = sub.add_parser(
        "import", parents=[common], help="make a stock mongodump into a snapshot of a source"
    )
    p.add_argument("dump", type=Path, help="a mongodump --archive file (gzipped or not) or --out")
    p.add_argument("--source", help="the mongodb source it belongs to (default: the only one)")
    p.add_argument("--time", metavar="TIME", help="the snapshot's time (default: the dump's)")
    p.add_argument("--tag", action="append", default=[], dest="tags")

    p = sub.add_parser("drill", parents=[common], help="restore into scratch, verify, time it")
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="default: every source")
    p.add_argument("--target", help="default: [drill] target, else the first target")
    p.add_argument("--snapshot", help="a snapshot id instead of the latest (one source)")
    p.add_argument("--report", type=Path, metavar="FILE", help="write FILE.md and FILE.json")

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

    p = sub.add_parser("runbook", parents=[common], help="the site's recovery runbook")
    p.add_argument("--format", choices=["md"], default="md")

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

    p = sub.add_parser(
        "replicate",
        parents=[common],
        help="copy the primary's snapshots that other targets lack (and their copies rule wants)",
    )
    p.add_argument("--target", help="only this target (default: every target but the first)")
    p.add_argument("--source", help="only snapshots of this source")

    p = sub.add_parser(
        "status", parents=[common], help="RPO/RTO compliance, targets, warnings (exit 1: a breach)"
    )
    p.add_argument(
        "--accept-missing",
        action="store_true",
        help="accept the snapshots gone from a target (deleted on purpose): list and forget them",
    )

    p = sub.add_parser("log", parents=[common], help="the journal: every run of every job")
    p.add_argument("--source")
    p.add_argument("--target")
    p.add_argument(
        "--kind",
        help="backup, replicate, prune, check, drill, restore, recover (every recover and "
        "restore), import or notify",
    )
    p.add_argument("--since", metavar="D", help="a duration back from now (like 7d) or a time")

    sub.add_parser("metrics", parents=[common], help="print Prometheus metrics (text format)")

    p = sub.add_parser(
        "oplog", parents=[common], help="point-in-time recovery: archive a mongodb oplog"
    )
    p.add_argument("action", choices=["run", "status"], help="run: archive (long-running)")
    p.add_argument("--source", help="the mongodb source (default: the only one)")
    p.add_argument("--once", action="store_true", help="run: seal what is settled now, exit")

    p = sub.add_parser("run", parents=[common], help="the scheduler: run due jobs (foreground)")
    p.add_argument(
        "--until",
        metavar="TIME",
        help="simulate: from EMBERKEEP_NOW, jump from due time to due time up to TIME; no sleeping",
    )
    p.add_argument("--once", action="store_true", help="run what is due now, then exit")
    p.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay each wake-up by a random 0..SECONDS",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default [monitor] metrics_port)",
    )
    p.add_argument(
        "--metrics-textfile",
        type=Path,
        metavar="FILE",
        help="write the metrics to FILE after each batch of jobs, for node_exporter",
    )
    p.add_argument(
        "--web",
        nargs="?",
        const="",
        metavar="HOST:PORT",
        help="serve the dashboard meanwhile (default [web] listen; token and TLS from [web])",
    )

    p = sub.add_parser(
        "web", parents=[common], help="the dashboard: status, history charts, back up now"
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where to listen (default [web] listen, else 127.0.0.1:8470); any address but "
        "loopback needs a token",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="the token every request must carry (default [web] token_file); mode 0600",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS ([web] tls_cert)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="its key ([web] tls_key)")
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (a TLS proxy in front)",
    )

    p = sub.add_parser(
        "schedule", parents=[common], help="print a crontab or systemd units for the schedules"
    )
    p.add_argument("--print", choices=["cron", "systemd"], required=True, dest="format")

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

    return parser


def _uri_argument(text: str) -> str:
    """A URI option: ``env:NAME`` takes it from the environment, out of argv and history."""
    if not text.startswith("env:"):
        return text
    name = text[len("env:") :]
    value = os.environ.get(name, "")
    if not name or not value:
        raise argparse.ArgumentTypeError(
            f"{text}: the environment variable {name or '(no name)'} is not set or empty; "
            f"set it to the URI (e.g. `read -rs {name or 'MONGO_URI'}; export "
            f"{name or 'MONGO_URI'}`) and run again"
        )
    return value


def _subset_text(text: str) -> str:
    from .repository.check import Subset

    return _checked(text, Subset.parse)


def _duration_text(text: str) -> str:
    from .durations import parse_duration

    return _checked(text, parse_duration)


def _checked(text: str, parse: Callable[[str], object]) -> str:
    """An option's value, checked as it is parsed: a mistake is a usage error (exit 2)
    before any job starts, rather than a failed job in the journal."""
    try:
        parse(text)
    except (ValueError, UsageError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


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


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        from . import keys as identity_keys
        from .runner import setup

        passphrase = None
        if args.passphrase or args.passphrase_file:
            passphrase = identity_keys.read_passphrase(
                args.passphrase_file, f"the new identity {args.output}", confirm=True
            )
        recipient = setup.keygen(args.output, passphrase)
        if args.json:
            ui.print_json({"identity_file": str(args.output), "recipient": recipient})
        else:
            ui.line(f"identity written to {args.output} (keep it offline, mode 0600)", stderr=True)
            print(recipient)
        return 0
    if args.command == "demo":
        from .demo.run import run_demo

        return run_demo(args.dir, media_files=args.media_files, web=args.web)
    if args.command == "recover":
        return cmd_recover(args)  # it has no config yet: it fetches it from the target
    if args.command == "config":
        return cmd_config(args)  # it works on the file, before (or without) a site
    site = Site(config.load(args.config), identity_file=args.identity)
    handler = globals()[f"cmd_{args.command}"]
    return handler(site, args)


def cmd_keys(site: Site, args: argparse.Namespace) -> int:
    from .runner import rekey

    action = args.keys_command
    if action == "list":
        listing = rekey.list_keys(site, args.target)
        if args.json:
            ui.print_json(listing)
            return 0
        for target, info in listing.items():
            ui.line(f"target {target}: writer key {info['writer_key']['fingerprint']}")
            for recipient in info["recipients"]:
                ui.line(f"  recipient {recipient}")
            if not info["converted"]:
                ui.line(
                    f"  no key epochs yet ({info['legacy_packs']} packs wrapped to the "
                    "recipients directly): `emberkeep keys convert` gives it them"
                )
            for epoch in info["epochs"]:
                flags = " (current)" if epoch["current"] else ""
                flags += " (legacy: packs from before epochs)" if epoch["legacy"] else ""
                ui.line(
                    f"  epoch {epoch['number']}{flags}: since {epoch['created']}, "
                    f"{epoch['packs']} packs, needed by {len(epoch['snapshots'])} snapshots, "
                    f"its key encrypted to {epoch['encrypted_to']} recipients"
                )
        return 0
    if action in ("add", "remove"):
        changes = getattr(rekey, action)(site, args.recipient, args.target)
    else:
        changes = getattr(rekey, action)(site, args.target)
    config_note = None
    if action in ("add", "remove") and changes:
        names = changes[0].recipients
        if args.update_config:
            rekey.update_config(site, names)
            site = Site(config.load(args.config), identity_file=args.identity)
        if sorted(site.config.keys.recipients) == names:
            rekey.store_site_config(site, args.target)  # what recover starts from
        elif sorted(site.config.keys.recipients) != names:
            config_note = (
                f"put this line in [keys] of {site.config.path} (or run again with "
                f"--update-config); backups are refused until it is there: "
                f"{rekey.config_line(names)}"
            )
    if args.json:
        ui.print_json({"changes": [c.to_json() for c in changes], "config": config_note})
        return 0
    for c in changes:
        ui.line(
            f"target {c.target}: {c.message} ({len(c.objects_written)} objects, "
            f"{c.bytes_written} bytes written, {c.seconds:.2f}s)"
        )
    if config_note:
        ui.warning(config_note)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.config_command == "sample":
        from .config_sample import sample

        print(sample(args.recipient), end="")
        return 0
    if args.config_command == "doc":
        from .config_doc import render

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


def cmd_init(site: Site, args: argparse.Namespace) -> int:
    from .runner import setup

    outcomes = setup.init(site, args.target, new=args.new)
    if args.json:
        ui.print_json([o.__dict__ for o in outcomes])
    else:
        for o in outcomes:
            ui.line(f"target {o.target}: {o.message}")
    return 0


def cmd_backup(site: Site, args: argparse.Namespace) -> int:
    memory.return_large_buffers_promptly()  # backup only: it slows restore by a quarter
    from .runner import jobs
    from .runner.backup import sources_to_run
    from .sources.files import scan_size

    done: list[jobs.BackedUp] = []
    for name in sources_to_run(site, args.sources):
        bar = ui.ByteProgress(f"backup {name}", enabled=not (args.json or args.quiet))
        source = site.config.source(name)
        if bar.enabled and isinstance(source, config.FilesSource):

            def scan(s: config.FilesSource = source, b: ui.ByteProgress = bar) -> None:
                b.set_total(scan_size(s.paths, s.exclude))

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


def cmd_snapshots(site: Site, args: argparse.Namespace) -> int:
    found = []
    for target in site.target_names(args.target):
        repo = site.repository(target)
        for snap in repo.snapshots():
            if args.source is None or snap.source == args.source:
                found.append((snap.time, snap.id, snap.to_json(target)))
    found.sort(key=lambda item: item[:2])  # the exact time: JSON shows whole seconds
    rows = [row for _time, _id, row in found]
    if args.json:
        ui.print_json(rows)
        return 0
    from rich.table import Table
    from rich.text import Text

    table = Table("id", "seq", "time", "source", "target", "files", "size", "tags")
    for r in rows:
        cells = (
            r["short_id"],
            "" if r["seq"] is None else str(r["seq"]),
            r["time"],
            r["source"],
            r["target"],
            str(r["summary"].get("files", "")),
            ui.human_bytes(r["summary"].get("bytes", 0)),
            ",".join(r["tags"]),
        )
        table.add_row(*map(Text, cells))
    ui.out.print(table)
    return 0


def cmd_restore(site: Site, args: argparse.Namespace) -> int:
    at = args.at_time or args.at_op
    if at and (args.snapshot or not args.to_uri):
        raise UsageError(
            "--at/--at-op restore a mongodb source to a point into --to-uri URI; give no "
            "SNAPSHOT (the base snapshot is chosen), and --source when there are several"
        )
    if not at and not args.snapshot:
        raise UsageError("give the SNAPSHOT to restore (an id, or latest), or --at/--at-op")
    if args.to_uri:
        return _restore_mongodb(site, args)
    mongo_only = [f for f in ("drop", "db", "collection", "ns_from", "ns_to") if getattr(args, f)]
    if mongo_only:
        flag = "--" + mongo_only[0].replace("_", "-")
        raise UsageError(f"{flag} goes with --to-uri (mongodb snapshots only)")
    from .runner import jobs

    restored = jobs.restore(
        site,
        args.snapshot,
        args.dest,
        paths=args.paths,
        target=args.target,
        source=args.source,
        bar=ui.ByteProgress("restore", enabled=not (args.json or args.quiet)),
    )
    snapshot, result = restored.snapshot, restored.result
    if args.json:
        ui.print_json({"snapshot": snapshot.id, "to": str(args.dest), **result.to_json()})
    else:
        ui.line(
            f"restored snapshot {snapshot.short_id} to {args.dest}: {result.files} files, "
            f"{result.dirs} dirs, {result.symlinks} symlinks, {ui.human_bytes(result.bytes)}"
        )
        for warning in result.warnings:
            ui.warning(f"{warning['path']}: {warning['message']}")
        if result.replaced:
            ui.warning(
                f"{result.replaced} entries already at the destination differed from the "
                f"snapshot's and were replaced; they are kept in {', '.join(result.kept_in)}"
            )
        for entry in result.setid:
            what = "kept" if entry["kept"] else "dropped (the owner is restored only as root)"
            ui.warning(
                f"{entry['path']}: setuid/setgid file (mode {entry['mode']}, owner "
                f"{entry['owner']}): the bit is {what}"
            )
        _print_refused(result.refused, "restored")
    return 1 if result.refused else 0


def _print_refused(refused: list[dict[str, str]], done: str) -> None:
    """Entries the snapshot holds that were not written, each with why (exit status 1)."""
    for entry in refused:
        ui.error(f"{entry['path']}: {entry['reason']}")
    if refused:
        ui.error(
            f"{len(refused)} entries of the snapshot were not {done} (above); everything else "
            "was. The snapshot is damaged or was forged: check the repository"
        )


def _restore_mongodb(site: Site, args: argparse.Namespace) -> int:
    from .runner import jobs
    from .sources.mongodb.restore import Selection

    if args.paths:
        raise UsageError("a mongodb snapshot restores by --db/--collection, not by PATH")
    restored = jobs.restore_mongodb(
        site,
        args.to_uri,
        spec=args.snapshot,
        at_time=args.at_time,
        at_op=args.at_op,
        drop=args.drop,
        selection=Selection(args.db, args.collection, args.ns_from, args.ns_to),
        target=args.target,
        source=args.source,
        bar=ui.ByteProgress("restore", enabled=not (args.json or args.quiet)),
    )
    snapshot, result = restored.snapshot, restored.result
    failed = 1 if result.problems else 0
    if args.json:
        ui.print_json({"snapshot": snapshot.id, **result.to_json()})
        return failed
    if result.extension is not None:
        ext = result.extension_json()
        ui.line(
            f"  base snapshot {snapshot.short_id}, then {ext['entries_applied']} archived oplog "
            f"entries; the last operation applied: {ext['last_applied']} (asked: {ext['asked']})"
        )
    for coll in result.collections:
        what = "view" if coll.type == "view" else f"{coll.documents} documents"
        ui.line(f"  {coll.source} -> {coll.target}: {what}, {coll.indexes} indexes")
    for auth in result.auth:
        for kind, names in (("user", auth.users), ("role", auth.roles)):
            for name in names:
                ui.line(f"  {auth.db}: {kind} {name} restored")
    when = f" at {result.consistent_at}" if result.consistent_at else ""
    ui.line(
        f"restored snapshot {snapshot.short_id}: {len(result.collections)} collections, "
        f"{result.oplog.applied} oplog entries replayed, consistent{when}"
        if result.point_in_time
        else f"restored snapshot {snapshot.short_id}: {len(result.collections)} collections"
    )
    for warning in result.warnings:
        ui.warning(f"{warning['path']}: {warning['message']}")
    for problem in result.problems:
        ui.error(f"{problem['path']}: {problem['message']}")
    return failed


def cmd_oplog(site: Site, args: argparse.Namespace) -> int:
    """``oplog run``: the archiver, one line (or JSON line) per slice sealed; ``oplog
    status``: the chains in the first target, the window and the lag (exit 1: a gap)."""
    from .runner import pitr

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
    try:
        archiver.run(once=args.once)
    except KeyboardInterrupt:
        ui.line("stopped; the next run goes on from the last slice sealed", stderr=True)
        return 130
    return 0


def cmd_ls(site: Site, args: argparse.Namespace) -> int:
    from .runner.browse import entry_json, run_ls

    snapshot, found, seen = run_ls(
        site, args.snapshot, args.path, target=args.target, source=args.source,
        recursive=args.recursive,
    )  # fmt: skip
    rows = [entry_json(path, node) for path, node in found]
    if args.json:
        ui.print_json({"snapshot": snapshot.id, "entries": rows, "refused": seen.refused})
    else:
        for row in rows:
            print(_entry_line(row, long=args.long))
    _print_refused(seen.refused, "listed")
    return 1 if seen.refused else 0


def _entry_line(row: dict[str, object], *, long: bool) -> str:
    """One entry as ``ls`` prints it: its path, or ``ls -l``'s columns before it."""
    import stat
    from datetime import UTC, datetime

    path = str(row["path"]) + ("/" if row["type"] == "dir" else "")
    if row["type"] == "symlink":
        path += f" -> {row['target']}"
    if not long:
        return path
    kind = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK}[str(row["type"])]
    mode = stat.filemode(kind | int(str(row["mode"]), 8))
    when = datetime.fromtimestamp(int(str(row["mtime_ns"])) / 1e9, UTC)
    size = ui.human_bytes(int(str(row["size"]))) if "size" in row else "-"
    return f"{mode} {row['uid']:>5} {row['gid']:>5} {size:>10} {when:%Y-%m-%d %H:%M} {path}"


def cmd_find(site: Site, args: argparse.Namespace) -> int:
    from .runner.browse import run_find

    found, seen = run_find(site, args.pattern, target=args.target, source=args.source)
    if args.json:
        ui.print_json({"snapshots": found, "refused": seen.refused})
    else:
        for snap in found:
            ui.line(f"snapshot {snap['short_id']} {snap['time']} {snap['source']}:")
            for row in snap["matches"]:
                print(f"  {_entry_line(row, long=True)}")
        if not found:
            ui.line(f"no snapshot holds a path matching {args.pattern!r}", stderr=True)
    _print_refused(seen.refused, "searched")
    return 1 if seen.refused else 0


def cmd_diff(site: Site, args: argparse.Namespace) -> int:
    from .runner.browse import run_diff

    a, b, changes, seen = run_diff(
        site, args.snapshot_a, args.snapshot_b, target=args.target, source=args.source
    )
    if args.json:
        ui.print_json(
            {"from": a.id, "to": b.id, "changes": [c.to_json() for c in changes],
             "refused": seen.refused}
        )  # fmt: skip
    else:
        marks = {"added": "+", "removed": "-", "changed": "M"}
        for c in changes:
            sizes = ""
            if c.size_a is not None or c.size_b is not None:
                old = "" if c.size_a is None else ui.human_bytes(c.size_a)
                new = "" if c.size_b is None else ui.human_bytes(c.size_b)
                sizes = f"  ({old} -> {new})" if c.change == "changed" else f"  ({old or new})"
            what = f" [{c.what}]" if c.what else ""
            print(f"{marks[c.change]} {c.path}{'/' if c.type == 'dir' else ''}{what}{sizes}")
        counts = {k: sum(c.change == k for c in changes) for k in marks}
        ui.line(
            f"{a.short_id} -> {b.short_id}: {counts['added']} added, {counts['removed']} "
            f"removed, {counts['changed']} changed",
            stderr=True,
        )
    _print_refused(seen.refused, "compared")
    return 1 if seen.refused else 0


def cmd_mount(site: Site, args: argparse.Namespace) -> int:
    from .runner.mount import run_mount

    def ready(fs) -> None:  # type: ignore[no-untyped-def]
        count = sum(len(names) for names in fs.by_source.values())
        if args.json:
            ui.print_json({"mounted": str(args.mountpoint), "snapshots": count})
            sys.stdout.flush()
        else:
            ui.line(
                f"mounted {count} snapshots at {args.mountpoint} (read-only); unmount with "
                f"`fusermount3 -u {args.mountpoint}` or Ctrl-C",
                stderr=True,
            )

    run_mount(
        site, args.mountpoint, target=args.target, source=args.source, warn=ui.warning,
        on_ready=ready,
    )  # fmt: skip
    return 0


def cmd_export(site: Site, args: argparse.Namespace) -> int:
    from .runner.export import run_export

    bar = ui.ByteProgress("export", enabled=not (args.json or args.quiet))
    with bar.shown():
        snapshot, result = run_export(
            site,
            args.snapshot,
            args.format,
            args.dest,
            target=args.target,
            source=args.source,
            on_file=bar.advance,
            on_total=bar.set_total,
        )
    if args.json:
        ui.print_json({"snapshot": snapshot.id, **result.to_json()})
    else:
        ui.line(
            f"exported snapshot {snapshot.short_id} as {result.format} to {result.to}: "
            f"{ui.human_bytes(result.bytes)}"
        )
        _print_refused(result.refused, "exported")
    return 1 if result.refused else 0


def cmd_import(site: Site, args: argparse.Namespace) -> int:
    from .clock import parse_time
    from .runner import jobs
    from .runner.import_dump import import_source

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


def cmd_drill(site: Site, args: argparse.Namespace) -> int:
    from .runner import jobs
    from .runner.drill_report import write_report

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


def cmd_recover(args: argparse.Namespace) -> int:
    from .clock import parse_time
    from .runner.recover import plan_recover

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
    from .runner import jobs

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
    from .clock import iso

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
    ui.line(f"  recipients: {', '.join(summary['recipients'])}")
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


def cmd_runbook(site: Site, args: argparse.Namespace) -> int:
    from .runner.runbook import last_copies, last_drills, render

    text = render(site, last_drills(site), last_copies(site))
    if args.json:  # a document, not data: handed over whole, as JSON asked for
        ui.print_json({"format": "markdown", "text": text})
    else:
        sys.stdout.write(text)
    return 0


def cmd_check(site: Site, args: argparse.Namespace) -> int:
    from .runner import jobs

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


def cmd_prune(site: Site, args: argparse.Namespace) -> int:
    from .runner import jobs

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


def cmd_replicate(site: Site, args: argparse.Namespace) -> int:
    from .runner import jobs

    copies = jobs.replicate(
        site, args.target, args.source, bar=_copy_bar("replicate", site, args)
    ).copies
    if args.json:
        ui.print_json([c.to_json() for c in copies])
    elif not copies:
        ui.line(f"nothing to replicate: {site.config.path} has one target, the primary")
    for copy in copies:
        if not args.json:
            _print_copy(copy)
        if copy.failed:
            ui.error(
                f"{copy.reason}; run `emberkeep replicate` again when {copy.target} is reachable"
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


def cmd_run(site: Site, args: argparse.Namespace) -> int:
    import contextlib
    import threading

    memory.return_large_buffers_promptly()
    from . import clock
    from .errors import UsageError
    from .runner import scheduler

    if args.jitter < 0:
        raise UsageError(f"--jitter {args.jitter}: give a number of seconds >= 0")
    until = clock.parse_time(args.until) if args.until else None
    options = scheduler.Options(until=until, once=args.once, jitter=args.jitter)

    def show(event: scheduler.Event) -> None:
        if args.json:
            print(json.dumps(event.to_json()), flush=True)
        else:
            ui.line(event.text())

    from .monitor.metrics import Exporter

    monitor = site.config.monitor
    exporter = Exporter(
        site,
        port=args.metrics_port or monitor.metrics_port,
        textfile=args.metrics_textfile or monitor.metrics_textfile,
        warn=ui.warning,
    )
    web: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    job_lock = threading.Lock()  # the dashboard's jobs and the scheduler's, one at a time
    if args.web is not None:
        from .web.server import in_background

        web = in_background(
            str(site.config.path) if site.config.path else args.config,
            args.identity,
            listen=args.web or None,
            job_lock=job_lock,
            ready=lambda text: print(
                text, file=sys.stderr if args.json else sys.stdout, flush=True
            ),
            warn=ui.warning,
        )
    with exporter.serving(), web:
        return scheduler.Scheduler(
            site,
            options,
            on_event=show,
            after_jobs=exporter.refresh,
            warn=ui.warning,
            job_lock=job_lock,
        ).run()


def cmd_status(site: Site, args: argparse.Namespace) -> int:
    from .journal import Journal
    from .monitor import status
    from .monitor.notify import Notifier

    report = status.collect(site, accept_missing=args.accept_missing)
    with Journal.open(site) as journal:
        notifier = Notifier(site.config.site.name, site.config.notify, journal, warn=ui.warning)
        status.send_alerts(report, notifier)
    if args.json:
        ui.print_json(report.to_json())
    else:
        status.show(report)
    return report.exit_code


def cmd_log(site: Site, args: argparse.Namespace) -> int:
    from . import clock
    from .journal import KIND_GROUPS, KINDS, Journal

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
    from . import clock

    return clock.since(text, "--since")


def cmd_metrics(site: Site, args: argparse.Namespace) -> int:
    from .monitor import metrics

    if args.json:
        ui.print_json(metrics.collect(site).to_json())
    else:
        print(metrics.collect_text(site), end="")
    return 0


def cmd_web(site: Site, args: argparse.Namespace) -> int:
    from .web.server import serve

    def ready(text: str) -> None:
        print(text, flush=True)  # a line to wait for: a test or a script reads the URL here

    config_file = str(site.config.path) if site.config.path else args.config
    return serve(
        config_file,
        args.identity,
        listen=args.listen,
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure_http=args.insecure_http,
        ready=ready,
        warn=ui.warning,
    )


def cmd_schedule(site: Site, args: argparse.Namespace) -> int:
    from .runner import unitfiles

    print(unitfiles.render(site.config, args.format, unitfiles.executable()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
