"""Looking into snapshots: `snapshots`, `ls`, `find`, `diff`, `mount`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import ui
from ..site import Site
from .common import Subparsers, print_refused


def add_snapshots(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("snapshots", parents=[common], help="list snapshots")
    p.add_argument("--source")
    p.add_argument("--target")
    p.set_defaults(handler=cmd_snapshots)


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


def add_ls(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ls", parents=[common], help="list a directory of a snapshot")
    p.add_argument("snapshot", help="snapshot id (or unique prefix), or 'latest'")
    p.add_argument("path", nargs="?", default="/", help="a path in the snapshot (default /)")
    p.add_argument("-l", dest="long", action="store_true", help="mode, owner, size, mtime")
    p.add_argument("-R", "--recursive", action="store_true", help="everything below PATH")
    p.add_argument("--target")
    p.add_argument("--source", help="with 'latest': the latest of this source")
    p.set_defaults(handler=cmd_ls)


def cmd_ls(site: Site, args: argparse.Namespace) -> int:
    from ..runner.browse import entry_json, run_ls

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
    print_refused(seen.refused, "listed")
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


def add_find(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("find", parents=[common], help="which snapshots hold a path or glob")
    p.add_argument("pattern", help="a glob: on the whole path when it holds '/', else on the name")
    p.add_argument("--source", help="only snapshots of this source")
    p.add_argument("--target")
    p.set_defaults(handler=cmd_find)


def cmd_find(site: Site, args: argparse.Namespace) -> int:
    from ..runner.browse import run_find

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
    print_refused(seen.refused, "searched")
    return 1 if seen.refused else 0


def add_diff(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("diff", parents=[common], help="what changed between two snapshots")
    p.add_argument("snapshot_a", metavar="SNAPSHOT_A")
    p.add_argument("snapshot_b", metavar="SNAPSHOT_B")
    p.add_argument("--target")
    p.add_argument("--source", help="with 'latest': the latest of this source")
    p.set_defaults(handler=cmd_diff)


def cmd_diff(site: Site, args: argparse.Namespace) -> int:
    from ..runner.browse import run_diff

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
    print_refused(seen.refused, "compared")
    return 1 if seen.refused else 0


def add_mount(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mount", parents=[common], help="the snapshots as a read-only file system (FUSE)"
    )
    p.add_argument("mountpoint", type=Path, metavar="DIR", help="an existing directory")
    p.add_argument("--source", help="only snapshots of this source")
    p.add_argument("--target")
    p.set_defaults(handler=cmd_mount)


def cmd_mount(site: Site, args: argparse.Namespace) -> int:
    from ..runner.mount import run_mount

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
