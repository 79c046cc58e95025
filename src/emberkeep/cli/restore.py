"""`restore` (into a directory or a mongodb server) and `export` (for other tools)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import ui
from ..errors import UsageError
from ..site import Site
from .common import Subparsers, print_refused


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


def add_restore(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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
    p.set_defaults(handler=cmd_restore)


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
    from ..runner import jobs

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
        print_refused(result.refused, "restored")
    return 1 if result.refused else 0


def _restore_mongodb(site: Site, args: argparse.Namespace) -> int:
    from ..runner import jobs
    from ..sources.mongodb.restore import Selection

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


def add_export(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common], help="write a snapshot for other tools")
    p.add_argument("snapshot", help="snapshot id (or unique prefix), or 'latest'")
    p.add_argument("--format", required=True, choices=["mongodump-dir", "mongodump-archive", "tar"])
    p.add_argument("--to", type=Path, required=True, dest="dest", help="directory or file")
    p.add_argument("--target")
    p.add_argument("--source", help="with 'latest': the latest of this source")
    p.set_defaults(handler=cmd_export)


def cmd_export(site: Site, args: argparse.Namespace) -> int:
    from ..runner.export import run_export

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
        print_refused(result.refused, "exported")
    return 1 if result.refused else 0
