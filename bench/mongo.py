"""Time emberkeep's MongoDB backup and restore against dump-to-a-file baselines.

Usage::

    .venv/bin/python bench/mongo.py [--sizes 128,512] [--work DIR] [--uri URI]

For each size the shop database (``emberkeep.demo.shopdb``, ``candle-ecommerce``) is generated
on a FerretDB started in the work dir (or on ``--uri``), then every tool is run as a child
process, timed, with its peak RSS and CPU from ``os.wait4`` (as ``bench/run.py`` does):

backup (ratio vs the stand-in dump):
  - ``mongodump --archive | gzip > file`` when ``mongodump`` is on the PATH;
  - stand-in "pymongo dump | gzip": every collection read with ``find_raw_batches`` (4 at a
    time, mongodump's default) into mongodump's archive multiplexing (a namespace header, the
    batch, a terminator) piped into a ``gzip`` process writing a file: mongodump --archive |
    gzip minus the archive's CRCs;
  - stand-in "pymongo dump --oplog | gzip": the same plus what ``mongodump --oplog`` does
    for a point-in-time dump (the newest oplog entry before and after, then the window),
    the like-for-like baseline of
  - ``emberkeep backup`` of a ``type = "mongodb"`` source (point-in-time too);
  - the files engine over a mongodump output: ``mongodump --out DIR`` (or the stand-in dumper
    writing ``<db>/<coll>.bson`` + ``.metadata.json``), then ``emberkeep backup`` of a files
    source over DIR, and the sum of the two: what the strategy's current approach (dump to
    disk, then back the dump up) costs.

restore (ratio vs the stand-in restore), each into ``bench_restore`` with ``--drop``:
  - ``gunzip -c file | mongorestore --archive`` when ``mongorestore`` is on the PATH;
  - stand-in "pymongo restore": ``gzip -dc file`` piped into insert_many of RawBSONDocuments
    in batches (1000 docs / 8 MiB) on 4 threads, then indexes, then views (mongorestore's order);
  - ``emberkeep restore latest --to-uri URI --ns-from candle-ecommerce --ns-to bench_restore``.

Every restore is checked: each collection's document count equals the source's.
``--steps backup`` runs the backup rows alone; ``--pairs N`` instead alternates the stand-in
dump and emberkeep's backup N times with the oplog emptied (the noise between like runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
import bson
import run as harness  # bench/run.py: the child-process runner (wait4, logs, errors)
from bson import json_util
from bson.raw_bson import RawBSONDocument
from bson.son import SON

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = Path("/tmp/emberkeep-mongo-bench")
WORK_MARKER = ".emberkeep-mongo-bench"
DB = "candle-ecommerce"
RESTORE_DB = "bench_restore"
TERMINATOR = b"\xff\xff\xff\xff"  # mongodump's archive: end of a namespace block
DUMP_PARALLEL = 4  # mongodump --numParallelCollections default
INSERT_WORKERS = 4  # the stand-in restore's insert threads
BATCH_DOCS = 1000
BATCH_BYTES = 8 * MiB
CLK_TCK = os.sysconf("SC_CLK_TCK")


BenchError = harness.BenchError  # a fatal benchmark problem: printed, and the run aborts


# --------------------------------------------------------------------------- stand-ins


def _catalog(db: Any) -> list[dict[str, Any]]:
    """Collections and views of ``db`` with options and indexes (mongodump's metadata)."""
    out = []
    for spec in db.list_collections():
        name = spec["name"]
        if name.startswith("system."):
            continue
        entry = {"name": name, "type": spec.get("type", "collection")}
        entry["options"] = spec.get("options", {})
        entry["indexes"] = [] if entry["type"] == "view" else list(db[name].list_indexes())
        out.append(entry)
    return out


def _newest_oplog_ts(client: Any) -> Any:
    """mongodump --oplog's way to the newest entry: one document in reverse natural order."""
    entry = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])
    return None if entry is None else entry["ts"]


def standin_dump(
    uri: str, db_name: str, archive: Path | None, out_dir: Path | None, oplog: bool = False
) -> None:
    """Read every collection as raw batches into a gzipped archive, or into a dump dir.

    ``oplog``: what ``mongodump --oplog`` adds for a point-in-time dump (its queries, from
    mongo-tools' ``mongodump/oplog_dump.go``): the newest oplog entry before and after the
    collections (``$natural: -1``, limit 1), then the entries with ``ts`` between the two,
    written after the collections."""
    from pymongo import MongoClient

    client: Any = MongoClient(uri)
    db = client[db_name]
    start = _newest_oplog_ts(client) if oplog else None
    catalog = _catalog(db)
    lock = threading.Lock()
    gzip: subprocess.Popen[bytes] | None = None
    sink: IO[bytes] | None = None
    if archive is not None:
        with archive.open("wb") as out:
            gzip = subprocess.Popen(["gzip", "-c"], stdin=subprocess.PIPE, stdout=out)
        sink = gzip.stdin
        assert sink is not None
        prelude = {"db": db_name, "collections": catalog}  # mongodump writes one too
        sink.write(bson.encode(prelude))

    def read(entry: dict[str, Any]) -> int:
        name = entry["name"]
        if out_dir is not None:
            where = out_dir / db_name
            meta = {k: entry[k] for k in ("options", "indexes")}
            meta |= {"collectionName": name, "type": entry["type"]}
            text = json_util.dumps(meta, json_options=json_util.CANONICAL_JSON_OPTIONS)
            (where / f"{name}.metadata.json").write_text(text)
        if entry["type"] == "view":
            return 0
        total = 0
        header = bson.encode({"db": db_name, "collection": name})
        if out_dir is not None:
            with (out_dir / db_name / f"{name}.bson").open("wb") as f:
                for batch in db[name].find_raw_batches():
                    f.write(batch)
                    total += len(batch)
            return total
        assert sink is not None
        for batch in db[name].find_raw_batches():
            with lock:
                sink.write(header)
                sink.write(batch)
                sink.write(TERMINATOR)
            total += len(batch)
        return total

    if out_dir is not None:
        (out_dir / db_name).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(DUMP_PARALLEL) as pool:
        total = sum(pool.map(read, catalog))
    if oplog and sink is not None:
        end = _newest_oplog_ts(client)
        window = {"ts": {"$gte": start, "$lte": end}}
        header = bson.encode({"db": "local", "collection": "oplog.rs"})
        for batch in client.local["oplog.rs"].find_raw_batches(window):
            sink.write(header)
            sink.write(batch)
            sink.write(TERMINATOR)
    if gzip is not None:
        assert sink is not None
        sink.close()
        if gzip.wait() != 0:
            raise BenchError(f"gzip exited {gzip.returncode}")
    print(json.dumps({"bytes": total, "collections": len(catalog)}))


def _read_doc(f: IO[bytes]) -> bytes | None:
    head = f.read(4)
    if not head:
        return None
    if head == TERMINATOR:
        return TERMINATOR
    size = int.from_bytes(head, "little")
    body = f.read(size - 4)
    if len(body) != size - 4:
        raise BenchError("archive truncated")
    return head + body


def standin_restore(uri: str, archive: Path, to_db: str, drop: bool) -> None:
    """gzip -dc ARCHIVE | insert_many(RawBSONDocument batches) on 4 threads; indexes; views."""
    from pymongo import MongoClient

    client: Any = MongoClient(uri)
    db = client[to_db]
    gunzip = subprocess.Popen(["gzip", "-dc", str(archive)], stdout=subprocess.PIPE)
    f = gunzip.stdout
    assert f is not None
    first = _read_doc(f)
    if first is None or first == TERMINATOR:
        raise BenchError("no prelude in the archive")
    catalog = bson.decode(first)["collections"]
    for entry in catalog:
        if drop:
            db.drop_collection(entry["name"])
        if entry["type"] != "view":
            db.command(SON([("create", entry["name"]), *entry["options"].items()]))

    counts = {e["name"]: 0 for e in catalog if e["type"] != "view"}
    batches: dict[str, tuple[list[RawBSONDocument], int]] = {}
    pending: deque[Future[None]] = deque()

    def insert(name: str, docs: list[RawBSONDocument]) -> None:
        db[name].insert_many(docs, ordered=False, bypass_document_validation=True)

    with ThreadPoolExecutor(INSERT_WORKERS) as pool:

        def submit(name: str) -> None:
            docs, _ = batches.pop(name)
            counts[name] += len(docs)
            while len(pending) >= INSERT_WORKERS * 2:
                pending.popleft().result()
            pending.append(pool.submit(insert, name, docs))

        while (header := _read_doc(f)) is not None:
            name = bson.decode(header)["collection"]
            while (doc := _read_doc(f)) not in (None, TERMINATOR):
                assert doc is not None
                docs, size = batches.setdefault(name, ([], 0))
                docs.append(RawBSONDocument(doc))
                batches[name] = (docs, size + len(doc))
                if len(docs) >= BATCH_DOCS or size + len(doc) >= BATCH_BYTES:
                    submit(name)
        for name in list(batches):
            submit(name)
        for fut in pending:
            fut.result()
    if gunzip.wait() != 0:
        raise BenchError(f"gzip -dc exited {gunzip.returncode}")
    for entry in catalog:
        specs = [
            {k: v for k, v in i.items() if k not in ("v", "ns")}
            for i in entry["indexes"]
            if i.get("name") != "_id_"
        ]
        if specs:
            db.command(SON([("createIndexes", entry["name"]), ("indexes", specs)]))
    for entry in catalog:
        if entry["type"] == "view":
            db.command(SON([("create", entry["name"]), *entry["options"].items()]))
    print(json.dumps({"counts": counts}))


# --------------------------------------------------------------------------- harness


@dataclass
class Row:
    group: str  # "backup" or "restore"
    tool: str
    size_mb: int  # the size asked of the generator
    db_bytes: int  # raw BSON bytes the stand-in dump read
    wall_s: float
    cpu_s: float  # the tool's processes, user+sys
    server_cpu_s: float | None  # the server's, over the same interval
    maxrss_kib: int
    output_bytes: int | None = None
    baseline: bool = False
    ratio_to: str = ""  # the tool this row is compared with, when not the group's baseline

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
        self.server: Any = None
        self.server_pid: int | None = None
        self.uri: str = args.uri or ""
        self.emberkeep = [str(args.emberkeep)]
        self.env = dict(os.environ)
        self.mongodump = shutil.which("mongodump")
        self.mongorestore = shutil.which("mongorestore")

    # -- processes ---------------------------------------------------------------------

    def _server_cpu(self) -> float | None:
        if self.server_pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def run(self, name: str, argv: list[str]) -> tuple[float, float, float | None, int, str]:
        """Run one child (``bench/run.py``'s runner: wait4, logs, the error on failure);
        wall, cpu, the server's cpu meanwhile, peak RSS (KiB), and its stdout."""
        server0 = self._server_cpu()
        done = harness.Runner(self.logs).run(name, argv, env=self.env)
        server1 = self._server_cpu()
        server = None if server0 is None or server1 is None else server1 - server0
        stdout = Path(done.stdout_log).read_text()
        return done.wall_s, done.user_s + done.sys_s, server, done.maxrss_kib, stdout

    def measure(
        self, group: str, tool: str, name: str, argv: list[str], *, output: Path | None = None
    ) -> tuple[Row, str]:
        wall, cpu, server, rss, stdout = self.run(name, argv)
        row = Row(
            group, tool, self.size, self.db_bytes, wall, cpu, server, rss,
            None if output is None else _du(output),
        )  # fmt: skip
        self.rows.append(row)
        srv = "" if server is None else f", server CPU {server:.1f}s"
        log(
            f"{tool} @ {self.size} MB: {wall:.1f}s, CPU {cpu:.1f}s{srv}, "
            f"peak RSS {rss / 1024:.0f} MiB"
        )
        return row, stdout

    def me(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve())]

    # -- setup -------------------------------------------------------------------------

    def prepare_work(self) -> None:
        work = self.work
        if work.exists() and any(work.iterdir()) and not (work / WORK_MARKER).exists():
            raise BenchError(f"{work} is not empty and not a bench work dir: refusing to wipe")
        if work.exists():
            shutil.rmtree(work)
        self.logs.mkdir(parents=True)
        (work / WORK_MARKER).touch()

    def start_server(self) -> None:
        if self.uri:
            return
        from emberkeep.demo.mongoserver import MongoServer

        self.server = MongoServer(self.work / "server").start()
        self.uri = self.server.uri
        self.server_pid = self.server.proc.pid
        log(f"FerretDB at {self.uri} (data {self.work / 'server'})")

    def keygen(self) -> None:
        self.identity = self.work / "identity.txt"
        proc = subprocess.run(
            [*self.emberkeep, "keygen", "-o", str(self.identity)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.recipient = proc.stdout.strip().splitlines()[-1]

    def config(self, name: str, source: str) -> Path:
        root = self.work / f"{self.size}mb" / name
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

    # -- one size ----------------------------------------------------------------------

    def one_size(self, size: int) -> None:
        from emberkeep.demo import shopdb

        self.size = size
        here = self.work / f"{size}mb"
        here.mkdir(parents=True)
        log(f"generating {DB} at {size} MB ...")
        summary = shopdb.generate(self.client, DB, size_mb=size, drop=True)
        log(f"generated in {summary['seconds']:.0f}s ({summary['mb_per_s']:.2f} MB/s)")
        self.client.drop_database(RESTORE_DB)
        self.source_counts = self.counts(DB)
        self.db_bytes = 0
        mongo_src = (
            '[[sources]]\nname = "db"\ntype = "mongodb"\n'
            f"uri = {json.dumps(self.uri)}\ndatabases = [{json.dumps(DB)}]\n"
            + (f"parallel = {self.args.parallel}\n" if self.args.parallel else "")
        )
        dump_dir = here / "dump"
        files_src = (
            f'[[sources]]\nname = "dump"\ntype = "files"\npaths = [{json.dumps(str(dump_dir))}]\n'
        )
        db_cfg = self.config("emberkeep-db", mongo_src)
        files_cfg = self.config("emberkeep-files", files_src)
        ek = self.emberkeep
        if self.args.pairs:
            self.alternate(size, mongo_src, here)
            return

        # backups ------------------------------------------------------------------
        archive = here / "standin.archive.gz"
        base, out = self.measure(
            "backup", "stand-in: pymongo dump | gzip", f"{size}-standin-dump",
            [*self.me(), "dump", "--uri", self.uri, "--db", DB, "--archive", str(archive)],
            output=archive,
        )  # fmt: skip
        base.baseline = True
        self.db_bytes = base.db_bytes = json.loads(out.strip().splitlines()[-1])["bytes"]
        pit = "stand-in: pymongo dump --oplog | gzip"
        pit_archive = here / "standin-oplog.archive.gz"
        self.measure(
            "backup", pit, f"{size}-standin-dump-oplog",
            [*self.me(), "dump", "--uri", self.uri, "--db", DB, "--archive", str(pit_archive),
             "--oplog"],
            output=pit_archive,
        )  # fmt: skip
        pit_archive.unlink()
        if self.mongodump:
            mongo_archive = here / "mongodump.archive.gz"
            sh = (
                f"{shlex.quote(self.mongodump)} --quiet --uri={shlex.quote(self.uri)} "
                f"--db={shlex.quote(DB)} --archive | gzip > {shlex.quote(str(mongo_archive))}"
            )
            self.measure(
                "backup", "mongodump --archive | gzip", f"{size}-mongodump",
                ["bash", "-o", "pipefail", "-c", sh], output=mongo_archive,
            )  # fmt: skip
        ek_backup, _ = self.measure(
            "backup", "emberkeep backup (mongodb source)", f"{size}-emberkeep-backup",
            [*ek, "-c", str(db_cfg), "-q", "--json", "backup"],
            output=db_cfg.parent / "repo",
        )  # fmt: skip
        ek_backup.ratio_to = pit  # both point-in-time: the like-for-like pair
        if "restore" not in self.args.steps:
            self.empty_oplog_backup(size, mongo_src)
            archive.unlink()
            return
        if self.mongodump:
            dump_tool = "mongodump --out DIR"
            argv = [self.mongodump, "--quiet", f"--uri={self.uri}", f"--db={DB}"]
            argv.append(f"--out={dump_dir}")
        else:
            dump_tool = "stand-in: pymongo dump to DIR"
            argv = [*self.me(), "dump", "--uri", self.uri, "--db", DB, "--dir", str(dump_dir)]
        dump, _ = self.measure("backup", dump_tool, f"{size}-dump-dir", argv, output=dump_dir)
        files, _ = self.measure(
            "backup", "emberkeep backup (files source over DIR)", f"{size}-emberkeep-files",
            [*ek, "-c", str(files_cfg), "-q", "--json", "backup"],
            output=files_cfg.parent / "repo",
        )  # fmt: skip
        self.rows.append(
            Row(
                "backup", f"{dump_tool} + files backup", size, self.db_bytes,
                dump.wall_s + files.wall_s, dump.cpu_s + files.cpu_s,
                None if dump.server_cpu_s is None or files.server_cpu_s is None
                else dump.server_cpu_s + files.server_cpu_s,
                max(dump.maxrss_kib, files.maxrss_kib), files.output_bytes,
            )
        )  # fmt: skip
        shutil.rmtree(dump_dir)

        # restores -----------------------------------------------------------------
        base, _ = self.measure(
            "restore", "stand-in: gzip -dc | pymongo restore (4 threads)",
            f"{size}-standin-restore",
            [*self.me(), "restore", "--uri", self.uri, "--archive", str(archive),
             "--to-db", RESTORE_DB, "--drop"],
        )  # fmt: skip
        base.baseline = True
        self.check_restore("stand-in restore")
        if self.mongorestore and self.mongodump:  # it reads mongodump's archive only
            sh = (
                f"gzip -dc {shlex.quote(str(mongo_archive))} | "
                f"{shlex.quote(self.mongorestore)} --quiet --uri={shlex.quote(self.uri)} "
                f"--archive --drop --nsFrom={shlex.quote(DB + '.*')} "
                f"--nsTo={shlex.quote(RESTORE_DB + '.*')}"
            )
            self.measure(
                "restore", "gzip -dc | mongorestore --archive", f"{size}-mongorestore",
                ["bash", "-o", "pipefail", "-c", sh],
            )  # fmt: skip
            self.check_restore("mongorestore")
            mongo_archive.unlink()
        self.measure(
            "restore", "emberkeep restore --to-uri", f"{size}-emberkeep-restore",
            [*ek, "-c", str(db_cfg), "-q", "--json", "restore", "latest", "--to-uri",
             self.uri, "--ns-from", DB, "--ns-to", RESTORE_DB, "--drop"],
        )  # fmt: skip
        self.check_restore("emberkeep restore")
        archive.unlink()
        self.empty_oplog_backup(size, mongo_src)

    def alternate(self, size: int, mongo_src: str, here: Path) -> None:
        """``--pairs N``: with the oplog emptied, the stand-in dump and emberkeep's backup
        one after the other, N times: a ratio per adjacent pair, the noise between them."""
        from emberkeep.demo.mongoserver import _create_ferretdb_oplog

        if self.server is not None and self.server.kind == "ferretdb":
            self.client.local.drop_collection("oplog.rs")
            _create_ferretdb_oplog(self.client, self.server.oplog_bytes)
        archive = here / "standin.archive.gz"
        for n in range(1, self.args.pairs + 1):
            tool = f"stand-in: pymongo dump | gzip #{n}"
            base, out = self.measure(
                "backup", tool, f"{size}-standin-dump-{n}",
                [*self.me(), "dump", "--uri", self.uri, "--db", DB, "--archive", str(archive)],
                output=archive,
            )  # fmt: skip
            self.db_bytes = base.db_bytes = json.loads(out.strip().splitlines()[-1])["bytes"]
            archive.unlink()
            cfg = self.config(f"emberkeep-db-{n}", mongo_src)
            row, _ = self.measure(
                "backup", f"emberkeep backup (mongodb source) #{n}",
                f"{size}-emberkeep-backup-{n}",
                [*self.emberkeep, "-c", str(cfg), "-q", "--json", "backup"],
                output=cfg.parent / "repo",
            )  # fmt: skip
            row.ratio_to = tool

    def empty_oplog_backup(self, size: int, mongo_src: str) -> None:
        ek = self.emberkeep
        if self.server is not None and self.server.kind == "ferretdb":
            # FerretDB filters the oplog window's `ts` range by reading its whole oplog,
            # which the seeding filled with the database once more; a second backup after
            # the oplog is recreated empty shows what that scan costs.
            from emberkeep.demo.mongoserver import _create_ferretdb_oplog

            self.client.local.drop_collection("oplog.rs")
            _create_ferretdb_oplog(self.client, self.server.oplog_bytes)
            cfg = self.config("emberkeep-db-empty-oplog", mongo_src)
            self.measure(
                "backup", "emberkeep backup (mongodb source), oplog emptied first",
                f"{size}-emberkeep-backup-empty-oplog",
                [*ek, "-c", str(cfg), "-q", "--json", "backup"], output=cfg.parent / "repo",
            )  # fmt: skip

    # -- report ------------------------------------------------------------------------

    def table(self) -> str:
        lines = [
            "| step | tool | size | seconds | MB/s | ratio vs stand-in | peak RSS MB "
            "| CPU s | server CPU s | output MB |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in self.rows:
            base = next(
                (r for r in self.rows if r.size_mb == row.size_mb and (
                    r.tool == row.ratio_to if row.ratio_to
                    else r.baseline and r.group == row.group)),
                None,
            )  # fmt: skip
            ratio = "" if base is None else f"{row.wall_s / base.wall_s:.2f}"
            server = "" if row.server_cpu_s is None else f"{row.server_cpu_s:.0f}"
            output = "" if row.output_bytes is None else f"{row.output_bytes / MiB:.0f}"
            tool = row.tool.replace("|", "\\|")  # markdown
            lines.append(
                f"| {row.group} | {tool} | {row.db_bytes / MiB:.0f} MB | {row.wall_s:.1f} "
                f"| {row.mb_s:.2f} | {ratio} | {row.maxrss_kib / 1024:.0f} | {row.cpu_s:.0f} "
                f"| {server} | {output} |"
            )
        return "\n".join(lines)

    def main(self) -> None:
        self.prepare_work()
        from pymongo import MongoClient

        try:
            self.start_server()
            self.client: Any = MongoClient(self.uri, serverSelectionTimeoutMS=10_000)
            self.keygen()
            for tool, path in (("mongodump", self.mongodump), ("mongorestore", self.mongorestore)):
                log(
                    f"{tool}: {path}"
                    if path
                    else f"{tool}: not on the PATH; its rows are skipped and the stand-in "
                    "is the baseline"
                )
            for size in self.args.sizes:
                self.one_size(size)
                self.report()
        finally:
            if self.server is not None:
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
    sub = parser.add_subparsers(dest="cmd")
    run = sub.add_parser("run", help="the benchmark (default)")
    run.add_argument("--sizes", default="128,512", help="database sizes in MiB (comma list)")
    run.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work dir (wiped)")
    run.add_argument("--uri", help="use this server instead of starting FerretDB")
    run.add_argument("--parallel", type=int, help="the mongodb source's `parallel`")
    run.add_argument("--steps", default="backup,restore", help="backup,restore (default) or backup")
    run.add_argument(
        "--pairs", type=int, default=0,
        help="instead of the steps: N alternating stand-in / emberkeep backups, oplog emptied",
    )  # fmt: skip
    run.add_argument("--emberkeep", help="emberkeep executable")
    dump = sub.add_parser("dump", help="(internal) the stand-in dumper")
    dump.add_argument("--uri", required=True)
    dump.add_argument("--db", required=True)
    where = dump.add_mutually_exclusive_group(required=True)
    where.add_argument("--archive", type=Path)
    where.add_argument("--dir", type=Path)
    restore = sub.add_parser("restore", help="(internal) the stand-in restorer")
    dump.add_argument("--oplog", action="store_true", help="as mongodump --oplog")
    restore.add_argument("--uri", required=True)
    restore.add_argument("--archive", type=Path, required=True)
    restore.add_argument("--to-db", required=True)
    restore.add_argument("--drop", action="store_true")
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.cmd == "run":
        args.sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
        args.steps = {s.strip() for s in args.steps.split(",") if s.strip()}
        if not args.steps <= {"backup", "restore"} or "backup" not in args.steps:
            parser.error("--steps: backup, or backup,restore")
        args.emberkeep = find_emberkeep(args.emberkeep)
        args.work = args.work.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.cmd == "dump":
            standin_dump(args.uri, args.db, args.archive, args.dir, args.oplog)
        elif args.cmd == "restore":
            standin_restore(args.uri, args.archive, args.to_db, args.drop)
        else:
            Bench(args).main()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
