"""Time emberkeep's MongoDB backup and restore against the stock mongodump and mongorestore.

Usage::

    .venv/bin/python bench/mongo.py [--sizes 64,1024] [--servers ferretdb,documentdb]
                                    [--work DIR] [--uri URI]

For each server and size the shop database (``emberkeep.demo.shopdb``, ``candle-ecommerce``)
is generated on a server started in the work dir (FerretDB 1.24 with its SQLite backend and an
oplog; PostgreSQL + DocumentDB behind its gateway, no oplog), or on ``--uri``; then every tool
runs as a child process, timed, with its peak RSS and CPU from ``os.wait4`` (as
``bench/run.py`` does) and the server's CPU over the same interval. The stock tools are the
ones ``scripts/setup --test`` builds (mongo-tools at ``tools.MONGO_TOOLS_VERSION``).

backup:
  - ``mongodump --db DB --archive --gzip``: a dump that is not point-in-time;
  - ``mongodump --oplog --archive --gzip`` (a whole-server dump, as ``--oplog`` requires),
    where the server has an oplog: the point-in-time baseline emberkeep's backup is compared
    with (the goal: at most 1.0x its time);
  - ``emberkeep backup`` of a ``type = "mongodb"`` source (point-in-time where there is an
    oplog), compared with the row above, else with the plain dump;
  - the strategy's current approach: ``mongodump --out DIR``, then ``emberkeep backup`` of a
    files source over DIR, and the two together;
  - on FerretDB, ``emberkeep backup`` again with the oplog emptied first (FerretDB reads its
    whole oplog for the window's range, which the seeding filled).

restore, each into ``bench_restore`` with ``--drop``:
  - ``mongorestore --archive --gzip`` of the plain dump (``--noIndexRestore`` on FerretDB 1.24,
    which refuses the legacy ``ns`` index option mongorestore sends): the baseline (the goal:
    emberkeep at most 0.7x its time);
  - ``emberkeep restore latest --to-uri URI --ns-from DB --ns-to bench_restore``.

Every restore is checked: each collection's document count equals the source's.
``--steps backup`` runs the backup rows alone; ``--pairs N`` instead alternates the plain
mongodump and emberkeep's backup N times with the oplog emptied (the noise between like runs).
DocumentDB's gateway is reached through ``docdbserver.SerialProxy`` (the gateway takes one
new connection at a time), in this process: its CPU is in neither column.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
import run as harness  # bench/run.py: the child-process runner (wait4, logs, errors)

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = Path("/tmp/emberkeep-mongo-bench")
WORK_MARKER = ".emberkeep-mongo-bench"
DB = "candle-ecommerce"
RESTORE_DB = "bench_restore"
SERVERS = ("ferretdb", "documentdb")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PLAIN = "mongodump --archive --gzip"
POINT_IN_TIME = "mongodump --oplog --archive --gzip"
MONGORESTORE = "mongorestore --archive --gzip"

BenchError = harness.BenchError  # a fatal benchmark problem: printed, and the run aborts


def stock(name: str) -> str:
    from emberkeep.demo import tools

    path = tools.built("mongo-tools", tools.MONGO_TOOLS_VERSION, name)
    if not path.exists():
        raise BenchError(f"the stock {name} is not built ({path}): run `scripts/setup --test`")
    return str(path)


# --------------------------------------------------------------------------- servers


class Server:
    """A started server: its URI, its kind, and the CPU its processes used so far."""

    def __init__(self, kind: str, work: Path, uri: str = "") -> None:
        self.kind = kind
        self.work = work
        self.uri = uri
        self.handle: Any = None

    @property
    def has_oplog(self) -> bool:
        return self.kind == "ferretdb"

    @property
    def restore_flags(self) -> list[str]:
        return ["--noIndexRestore"] if self.kind == "ferretdb" else []

    def start(self) -> None:
        if self.uri:
            return
        if self.kind == "ferretdb":
            from emberkeep.demo.mongoserver import MongoServer

            self.handle = MongoServer(self.work / "ferretdb").start()
        else:
            from emberkeep.demo.docdbserver import DocumentDBServer

            self.handle = DocumentDBServer("gateway").start()
        self.uri = self.handle.uri
        log(f"{self.kind} at 127.0.0.1:{self.handle.port}")

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()

    def pids(self) -> list[int]:
        if self.handle is None:
            return []
        if self.kind == "ferretdb":
            return [self.handle.proc.pid]
        datadir = self.handle.datadir
        return [int((datadir / f"{n}.pid").read_text()) for n in ("postgres", "ferretdb")]

    def cpu(self) -> float | None:
        """utime + stime of the server's processes and their waited-for children (the
        PostgreSQL backends that ended), plus the live children's."""
        pids = self.pids()
        if not pids:
            return None
        total = 0
        for pid in pids:
            fields = _stat(pid)
            if fields is None:
                return None
            total += sum(int(f) for f in fields[11:15])
        for child in _children(pids[0]) if self.kind == "documentdb" else []:
            fields = _stat(child)
            total += sum(int(f) for f in fields[11:13]) if fields else 0
        return total / CLK_TCK

    def reset_oplog(self, client: Any) -> None:
        from emberkeep.demo.mongoserver import _create_ferretdb_oplog

        client.local.drop_collection("oplog.rs")
        _create_ferretdb_oplog(client, self.handle.oplog_bytes)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- harness


@dataclass
class Row:
    server: str
    group: str  # "backup" or "restore"
    tool: str
    size_mb: int  # the size asked of the generator
    db_bytes: int  # the database's BSON bytes
    wall_s: float
    cpu_s: float  # the tool's processes, user+sys
    server_cpu_s: float | None  # the server's, over the same interval
    maxrss_kib: int
    output_bytes: int | None = None
    ratio_to: str = ""  # the tool this row is compared with

    @property
    def mb_s(self) -> float:
        return self.db_bytes / MiB / self.wall_s if self.wall_s > 0 else 0.0


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.logs = self.work / "logs"
        self.rows: list[Row] = []
        self.emberkeep = [str(args.emberkeep)]
        self.env = dict(os.environ)
        self.mongodump, self.mongorestore = stock("mongodump"), stock("mongorestore")

    def measure(
        self,
        group: str,
        tool: str,
        name: str,
        argv: list[str],
        *,
        output: Path | None = None,
        ratio_to: str = "",
    ) -> Row:
        server0 = self.server.cpu()
        done = harness.Runner(self.logs).run(f"{self.server.kind}-{name}", argv, env=self.env)
        server1 = self.server.cpu()
        server = None if server0 is None or server1 is None else server1 - server0
        row = Row(
            self.server.kind, group, tool, self.size, self.db_bytes, done.wall_s,
            done.user_s + done.sys_s, server, done.maxrss_kib,
            None if output is None else _du(output), ratio_to,
        )  # fmt: skip
        self.rows.append(row)
        srv = "" if server is None else f", server CPU {server:.1f}s"
        log(
            f"{self.server.kind}: {tool} @ {self.size} MB: {done.wall_s:.1f}s, CPU "
            f"{row.cpu_s:.1f}s{srv}, peak RSS {done.maxrss_kib / 1024:.0f} MiB"
        )
        return row

    # -- setup -------------------------------------------------------------------------

    def prepare_work(self) -> None:
        work = self.work
        if work.exists() and any(work.iterdir()) and not (work / WORK_MARKER).exists():
            raise BenchError(f"{work} is not empty and not a bench work dir: refusing to wipe")
        if work.exists():
            shutil.rmtree(work)
        self.logs.mkdir(parents=True)
        (work / WORK_MARKER).touch()

    def keygen(self) -> None:
        self.identity = self.work / "identity.txt"
        proc = subprocess.run(
            [*self.emberkeep, "keygen", "-o", str(self.identity)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.recipient = proc.stdout.strip().splitlines()[-1]

    def config(self, name: str, source: str) -> Path:
        root = self.here / name
        root.mkdir(parents=True)
        path = root / "emberkeep.toml"
        path.write_text(
            "[site]\n"
            'name = "mongo-bench"\n'
            f"state_dir = {json.dumps(str(root / 'state'))}\n"
            "[keys]\n"
            f"recipients = [{json.dumps(self.recipient)}]\n"
            f"identity_file = {json.dumps(str(self.identity))}\n"
            f"{source}\n"
            "[[targets]]\n"
            'name = "local"\n'
            f'url = "file://{root / "repo"}"\n'
        )
        subprocess.run(
            [*self.emberkeep, "-c", str(path), "-q", "init"], check=True, capture_output=True
        )
        return path

    def counts(self, db_name: str) -> dict[str, tuple[int, bool]]:
        """Document count and cappedness per collection (collStats: no scan on FerretDB)."""
        db = self.client[db_name]
        out = {}
        for spec in db.list_collections():
            if spec.get("type", "collection") == "collection":
                stats = db.command("collStats", spec["name"])
                out[spec["name"]] = (int(stats["count"]), bool(stats.get("capped")))
        return out

    def check_restore(self, tool: str) -> None:
        """Every collection restored with the source's count; a capped one may hold fewer
        (FerretDB trims a capped collection to its size as it inserts, and the source's
        may be over its size until the server's next cleanup pass)."""
        got = self.counts(RESTORE_DB)
        for name, (count, capped) in self.source_counts.items():
            have = got.get(name, (0, False))[0]
            if have != count and not (capped and 0 < have <= count):
                raise BenchError(f"{tool}: {name} restored {have} documents, source {count}")
        if set(got) != set(self.source_counts):
            raise BenchError(f"{tool}: restored {sorted(got)} != {sorted(self.source_counts)}")
        self.client.drop_database(RESTORE_DB)

    # -- one size on one server --------------------------------------------------------

    def one_size(self, size: int) -> None:
        from emberkeep.demo import shopdb

        self.size = size
        self.here = self.work / self.server.kind / f"{size}mb"
        self.here.mkdir(parents=True)
        log(f"{self.server.kind}: generating {DB} at {size} MB ...")
        summary = shopdb.generate(self.client, DB, size_mb=size, drop=True, users=False)
        log(f"generated in {summary['seconds']:.0f}s ({summary['mb_per_s']:.2f} MB/s)")
        self.db_bytes = summary["total_bytes"]
        self.client.drop_database(RESTORE_DB)
        self.source_counts = self.counts(DB)
        mongo_src = (
            '[[sources]]\nname = "db"\ntype = "mongodb"\n'
            f"uri = {json.dumps(self.server.uri)}\ndatabases = [{json.dumps(DB)}]\n"
            + (f"parallel = {self.args.parallel}\n" if self.args.parallel else "")
        )
        if self.args.pairs:
            self.alternate(mongo_src)
            return
        archive = self.backups(mongo_src)
        if "restore" in self.args.steps:
            self.restores(archive)
        archive.unlink()
        if self.server.has_oplog and self.server.handle is not None:
            self.server.reset_oplog(self.client)
            cfg = self.config("emberkeep-db-empty-oplog", mongo_src)
            self.measure(
                "backup", "emberkeep backup (mongodb source), oplog emptied first",
                f"{size}-emberkeep-backup-empty-oplog",
                [*self.emberkeep, "-c", str(cfg), "-q", "--json", "backup"],
                output=cfg.parent / "repo", ratio_to=PLAIN,
            )  # fmt: skip

    def dump_argv(self, *args: str) -> list[str]:
        return [self.mongodump, "--quiet", f"--uri={self.server.uri}", *args]

    def backups(self, mongo_src: str) -> Path:
        size, here = self.size, self.here
        archive = here / "mongodump.archive.gz"
        self.measure(
            "backup", PLAIN, f"{size}-mongodump",
            self.dump_argv(f"--db={DB}", f"--archive={archive}", "--gzip"), output=archive,
        )  # fmt: skip
        baseline = PLAIN
        if self.server.has_oplog:
            pit = here / "mongodump-oplog.archive.gz"
            self.measure(
                "backup", POINT_IN_TIME, f"{size}-mongodump-oplog",
                self.dump_argv("--oplog", f"--archive={pit}", "--gzip"), output=pit,
            )  # fmt: skip
            pit.unlink()
            baseline = POINT_IN_TIME
        cfg = self.config("emberkeep-db", mongo_src)
        self.db_cfg = cfg
        self.measure(
            "backup", "emberkeep backup (mongodb source)", f"{size}-emberkeep-backup",
            [*self.emberkeep, "-c", str(cfg), "-q", "--json", "backup"],
            output=cfg.parent / "repo", ratio_to=baseline,
        )  # fmt: skip
        dump_dir = here / "dump"
        dump = self.measure(
            "backup", "mongodump --out DIR", f"{size}-dump-dir",
            self.dump_argv(f"--db={DB}", f"--out={dump_dir}"), output=dump_dir, ratio_to=PLAIN,
        )  # fmt: skip
        files_cfg = self.config(
            "emberkeep-files",
            f'[[sources]]\nname = "dump"\ntype = "files"\npaths = [{json.dumps(str(dump_dir))}]\n',
        )
        files = self.measure(
            "backup", "emberkeep backup (files source over DIR)", f"{size}-emberkeep-files",
            [*self.emberkeep, "-c", str(files_cfg), "-q", "--json", "backup"],
            output=files_cfg.parent / "repo",
        )  # fmt: skip
        self.rows.append(
            Row(
                self.server.kind, "backup", "mongodump --out DIR + files backup", size,
                self.db_bytes, dump.wall_s + files.wall_s, dump.cpu_s + files.cpu_s,
                None if dump.server_cpu_s is None or files.server_cpu_s is None
                else dump.server_cpu_s + files.server_cpu_s,
                max(dump.maxrss_kib, files.maxrss_kib), files.output_bytes, ratio_to=baseline,
            )
        )  # fmt: skip
        shutil.rmtree(dump_dir)
        return archive

    def restores(self, archive: Path) -> None:
        size = self.size
        self.measure(
            "restore", MONGORESTORE, f"{size}-mongorestore",
            [self.mongorestore, "--quiet", f"--uri={self.server.uri}", *self.server.restore_flags,
             f"--archive={archive}", "--gzip", "--drop", f"--nsFrom={DB}.*",
             f"--nsTo={RESTORE_DB}.*"],
        )  # fmt: skip
        self.check_restore("mongorestore")
        self.measure(
            "restore", "emberkeep restore --to-uri", f"{size}-emberkeep-restore",
            [*self.emberkeep, "-c", str(self.db_cfg), "-q", "--json", "restore", "latest",
             "--to-uri", self.server.uri, "--ns-from", DB, "--ns-to", RESTORE_DB, "--drop"],
            ratio_to=MONGORESTORE,
        )  # fmt: skip
        self.check_restore("emberkeep restore")

    def alternate(self, mongo_src: str) -> None:
        """``--pairs N``: with the oplog emptied, the plain mongodump and emberkeep's backup
        one after the other, N times: a ratio per adjacent pair, the noise between them."""
        if self.server.has_oplog and self.server.handle is not None:
            self.server.reset_oplog(self.client)
        archive = self.here / "mongodump.archive.gz"
        for n in range(1, self.args.pairs + 1):
            tool = f"{PLAIN} #{n}"
            self.measure(
                "backup", tool, f"{self.size}-mongodump-{n}",
                self.dump_argv(f"--db={DB}", f"--archive={archive}", "--gzip"), output=archive,
            )  # fmt: skip
            archive.unlink()
            cfg = self.config(f"emberkeep-db-{n}", mongo_src)
            self.measure(
                "backup", f"emberkeep backup (mongodb source) #{n}",
                f"{self.size}-emberkeep-backup-{n}",
                [*self.emberkeep, "-c", str(cfg), "-q", "--json", "backup"],
                output=cfg.parent / "repo", ratio_to=tool,
            )  # fmt: skip

    # -- report ------------------------------------------------------------------------

    def table(self) -> str:
        lines = [
            "| server | step | tool | size | seconds | MB/s | ratio | vs | peak RSS MB "
            "| CPU s | server CPU s | output MB |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for row in self.rows:
            base = next(
                (r for r in self.rows if (r.server, r.size_mb, r.tool) ==
                 (row.server, row.size_mb, row.ratio_to)),
                None,
            )  # fmt: skip
            ratio = "" if base is None else f"{row.wall_s / base.wall_s:.2f}"
            vs = "" if base is None else base.tool
            server = "" if row.server_cpu_s is None else f"{row.server_cpu_s:.0f}"
            output = "" if row.output_bytes is None else f"{row.output_bytes / MiB:.0f}"
            lines.append(
                f"| {row.server} | {row.group} | {row.tool} | {row.db_bytes / MiB:.0f} MB "
                f"| {row.wall_s:.1f} | {row.mb_s:.2f} | {ratio} | {vs} "
                f"| {row.maxrss_kib / 1024:.0f} | {row.cpu_s:.0f} | {server} | {output} |"
            )
        return "\n".join(lines)

    def main(self) -> None:
        self.prepare_work()
        from pymongo import MongoClient

        self.keygen()
        log(f"stock tools: {self.mongodump}, {self.mongorestore}")
        for kind in self.args.servers:
            self.server = Server(kind, self.work, self.args.uri or "")
            try:
                self.server.start()
                self.client: Any = MongoClient(self.server.uri, serverSelectionTimeoutMS=10_000)
                for size in self.args.sizes:
                    self.one_size(size)
                    self.report()
                self.client.close()
            finally:
                self.server.stop()

    def report(self) -> None:
        text = self.table()
        print(text, flush=True)
        (self.work / "results.md").write_text(text + "\n")
        rows = [asdict(r) | {"mb_s": r.mb_s} for r in self.rows]
        (self.work / "results.json").write_text(json.dumps(rows, indent=1) + "\n")


def find_emberkeep(override: str | None) -> Path:
    for cand in (override, ROOT / ".venv" / "bin" / "emberkeep", shutil.which("emberkeep")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    raise BenchError("emberkeep not found: `.venv/bin/pip install -e .` or --emberkeep PATH")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,1024", help="database sizes in MiB (comma list)")
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma list of {', '.join(SERVERS)}"
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work dir (wiped)")
    parser.add_argument("--uri", help="use this server (of the one kind --servers names)")
    parser.add_argument("--parallel", type=int, help="the mongodb source's `parallel`")
    parser.add_argument("--steps", default="backup,restore", help="backup,restore or backup")
    parser.add_argument(
        "--pairs", type=int, default=0,
        help="instead of the steps: N alternating mongodump / emberkeep backups, oplog emptied",
    )  # fmt: skip
    parser.add_argument("--emberkeep", help="emberkeep executable")
    args = parser.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.servers or not set(args.servers) <= set(SERVERS):
        parser.error(f"--servers: a comma list of {', '.join(SERVERS)}")
    if args.uri and len(args.servers) != 1:
        parser.error("--uri needs --servers naming the one kind of server it is")
    args.steps = {s.strip() for s in args.steps.split(",") if s.strip()}
    if not args.steps <= {"backup", "restore"} or "backup" not in args.steps:
        parser.error("--steps: backup, or backup,restore")
    args.emberkeep = find_emberkeep(args.emberkeep)
    args.work = args.work.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        Bench(args).main()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
