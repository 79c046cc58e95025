"""`emberkeep demo`: the whole main job on a generated site, through the real CLI.

Steps: generate the site (files, a git repository, and the shop's MongoDB database on a
FerretDB server the demo starts), keygen, write a config, init, backup (twice: the second
is nearly free), snapshots, check --read-data, restore, and compare the restore with the
original: files byte for byte and in metadata, refs for the code, raw BSON documents and
indexes for the database; then a restore drill of every source, with its report. With
``--web`` the dashboard (`emberkeep web`) is left running in the background on the demo's
config: its pid in ``demo/web.pid``, its log in ``demo/web.log``; the next demo run stops it
first (so the demo stays safe to run twice), or ``kill`` it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from .. import ui
from ..errors import EmberkeepError, UsageError
from . import shopdb
from .mongoserver import MongoServer
from .sitegen import DemoSite, generate

Cli = Callable[[list[str]], int]  # the CLI's main: arguments in, exit status out

MARKER = ".emberkeep-demo"
WEB_PID = "web.pid"


def prepare_dir(folder: Path) -> None:
    """Start from an empty demo folder; never wipe a folder the demo did not make."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise UsageError(f"{folder} exists and was not made by the demo; choose another --dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by emberkeep demo; safe to delete\n")


def write_config(
    folder: Path, site: DemoSite, recipient: str, identity: Path, mongo_uri: str
) -> Path:
    config = folder / "emberkeep.toml"
    media, (env_local, server_env, nginx) = site.media, site.config_files
    config.write_text(
        f"""# The demo shop's emberkeep config (`emberkeep config doc` lists every key).
[site]
name = "candle-ecommerce-demo"
state_dir = "{folder / "state"}"

[keys]
recipients = ["{recipient}"]
identity_file = "{identity}"

[[sources]]
name = "mongodb"
type = "mongodb"
uri = "{mongo_uri}"
databases = ["{shopdb.DB_NAME}"]
schedule = "0 2 * * *"
retention = {{ daily = 14, weekly = 13, monthly = 12 }}
objectives = {{ rpo = "24h", rto = "1h" }}

[[sources]]
name = "media"
type = "files"
paths = ["{media}"]
exclude = ["*.tmp"]
schedule = "30 2 * * *"
retention = {{ daily = 30 }}
objectives = {{ rpo = "24h", rto = "4h" }}

[[sources]]
name = "config"
type = "files"
paths = ["{env_local}", "{server_env}", "{nginx}", "{site.nginx_enabled}"]
schedule = "0 3 * * 0"
retention = {{ weekly = 26 }}
objectives = {{ rpo = "7d", rto = "15m" }}

[[sources]]
name = "code"
type = "git"
path = "{site.app}"
objectives = {{ rpo = "24h", rto = "30m" }}

[[targets]]
name = "local"
url = "file://{folder / "backups"}"
"""
    )
    return config


def _refs(repo: Path) -> str:
    """Every ref with its object, and where HEAD points: what a restore must bring back."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout

    return git("for-each-ref", "--format=%(objectname) %(refname)") + git("symbolic-ref", "HEAD")


def tree_digest(root: Path) -> dict[str, tuple[object, ...]]:
    """Content, mode and mtime of ``root`` and everything under it."""
    found: dict[str, tuple[object, ...]] = {}
    if root.is_file() and not root.is_symlink():
        st = os.lstat(root)
        digest = hashlib.sha256(root.read_bytes()).hexdigest()
        found[root.name] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                detail: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            else:
                detail = "dir"
            found[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, detail)
    return found


def run_demo(
    folder: Path,
    *,
    cli: Cli,
    media_files: int = 300,
    db_mb: float = 4,
    web: str | None = None,
) -> int:
    """The demo in ``folder``, each emberkeep step run in-process through ``cli`` (the CLI's
    ``main``, handed in by the CLI's ``demo`` command: the demo sits beside the CLI, not
    below it)."""
    folder = folder.resolve()
    stop_dashboard(folder)  # a dashboard an earlier run left: it holds the port and the folder
    prepare_dir(folder)
    step = _Steps()
    step("start a MongoDB wire-protocol server (FerretDB) for the shop's database")
    with MongoServer(folder / "mongodb", oplog_bytes=64 << 20) as server:
        ui.line(f"  listening at {server.uri}")
        _run_steps(folder, step, server, cli, media_files, db_mb)
    if web is not None:
        step("the dashboard: status, history charts, back up now (`emberkeep web`)")
        start_dashboard(folder, folder / "emberkeep.toml", web)
    return 0


def _demo_dashboard(folder: Path) -> int | None:
    """The pid of the dashboard an earlier demo in ``folder`` started, if it still runs.

    The pid file alone is not trusted: the process must be `emberkeep … web` on this
    folder's config, or the pid was reused by something else."""
    try:
        pid = int((folder / WEB_PID).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    config = str(folder / "emberkeep.toml").encode()
    return pid if b"web" in cmdline and config in cmdline else None


def stop_dashboard(folder: Path) -> None:
    pid = _demo_dashboard(folder)
    if pid is None:
        return
    ui.line(f"stopping the dashboard the last demo started (pid {pid})", style="dim")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _demo_dashboard(folder) == pid and time.monotonic() < deadline:
        time.sleep(0.1)  # it finishes a running backup first; bounded
    if _demo_dashboard(folder) == pid:
        raise EmberkeepError(f"the demo's dashboard (pid {pid}) did not stop; kill {pid}")


def start_dashboard(folder: Path, config: Path, listen: str) -> None:
    """`emberkeep web` in the background, in its own session so it outlives the demo."""
    log = (folder / "web.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emberkeep", "-c", str(config), "web", "--listen", listen],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace").strip()  # printed once listening
    proc.stdout.close()
    if proc.poll() is not None or " at http" not in line:
        proc.wait()
        problem = (folder / "web.log").read_text(errors="replace").strip().splitlines()
        ui.warning(
            f"the dashboard did not start: {problem[-1] if problem else line}; start it "
            f"yourself: emberkeep -c {config} web --listen HOST:PORT"
        )
        return
    (folder / WEB_PID).write_text(f"{proc.pid}\n")
    url = line.split(" at ", 1)[1].split()[0]
    ui.line(url, label="  dashboard: ", style="green")
    ui.line(
        f"  running in the background (pid {proc.pid}, log {folder / 'web.log'}); stop it with "
        f"`kill {proc.pid}` (running the demo again stops it too). The shop's MongoDB server "
        "stopped with the demo, so backing up mongodb from there fails (and is journaled)."
    )


def _run_steps(
    folder: Path, step: _Steps, server: MongoServer, cli: Cli, media_files: int, db_mb: float
) -> None:
    step("generate a demo shop under " + str(folder / "site") + " and its database")
    site = generate(folder / "site", media_files=media_files)
    with server.client() as client:
        shop = shopdb.generate(client, size_mb=db_mb, drop=True)
    counts = ", ".join(f"{n} {c}" for c, n in sorted(shop["counts"].items()))
    ui.line(f"  {shop['database']}: {counts}")
    identity = folder / "identity.txt"
    step("emberkeep keygen: an identity for the admin (kept offline in real life)")
    from ..runner.setup import keygen

    recipient = keygen(identity)
    ui.line(f"  recipient {recipient}")
    config = str(write_config(folder, site, recipient, identity, server.uri))
    ui.line(f"  config written to {config}")

    def emberkeep(*args: str) -> None:
        ui.line(f"$ emberkeep -c {config} {' '.join(args)}", style="dim")
        code = cli(["-c", config, *args])
        if code != 0:
            raise EmberkeepError(f"demo step `emberkeep {' '.join(args)}` failed (exit {code})")

    step("init the repository")
    emberkeep("init")
    step("first backup of every source")
    emberkeep("backup")
    step("second backup: unchanged files come from the files cache, nearly free")
    emberkeep("backup")
    step("list snapshots")
    emberkeep("snapshots")
    step("check, reading and decrypting every pack")
    emberkeep("check", "--read-data")
    step("restore the latest media and config snapshots and compare with the originals")
    restored = folder / "restored"
    emberkeep("restore", "latest", "--source", "media", "--to", str(restored))
    emberkeep("restore", "latest", "--source", "config", "--to", str(restored))
    compared = 0
    for original in (site.media, *site.config_files, site.nginx_enabled):
        copy = restored / str(original).lstrip("/")
        if tree_digest(original) != tree_digest(copy):
            raise EmberkeepError(f"restore differs from the original under {original}")
        compared += len(tree_digest(original))
    ui.line(f"{compared} entries, content, modes and mtimes", label="  identical: ", style="green")
    step("restore the application code (every branch and tag) and compare its refs")
    code = folder / "restored-code"
    emberkeep("restore", "latest", "--source", "code", "--to", str(code))
    if _refs(site.app) != _refs(code):
        raise EmberkeepError("the restored repository's refs differ from the original's")
    ui.line(f"{len(_refs(code).splitlines())} refs and HEAD", label="  identical: ", style="green")
    step("restore the database under another name and compare every document and index")
    copy_db = f"{shopdb.DB_NAME}-restored"
    emberkeep(
        "restore", "latest", "--source", "mongodb", "--to-uri", server.uri,
        "--ns-from", shopdb.DB_NAME, "--ns-to", copy_db, "--drop",
    )  # fmt: skip
    with server.client() as client:
        documents = _compare_databases(client, shopdb.DB_NAME, copy_db)
    ui.line(f"{documents} documents, byte for byte, and every index", label="  identical: ",
            style="green")  # fmt: skip
    step("drill every source: restore into scratch, verify against the backup, time it")
    emberkeep("drill", "--report", str(folder / "drill-report"))
    ui.line(f"{folder / 'drill-report.md'}", label="  report: ", style="green")
    step("status: every source's last backup against its RPO, last drill against its RTO")
    emberkeep("status")
    step(f"done in {time.monotonic() - step.started:.1f}s; everything is under {folder}")


def _compare_databases(client: MongoClient[Any], original: str, copy: str) -> int:
    """Raw BSON of every document and the indexes of every collection; returns documents."""
    raw = client[original].codec_options.with_options(document_class=RawBSONDocument)
    total = 0
    for name in sorted(client[original].list_collection_names()):
        if client[original][name].options().get("viewOn"):
            continue
        docs = [
            sorted(d.raw for d in client[db].get_collection(name, codec_options=raw).find())
            for db in (original, copy)
        ]
        if docs[0] != docs[1]:
            raise EmberkeepError(f"restored collection {copy}.{name} differs from the original")
        indexes = [
            sorted(str(sorted(i.items())) for i in client[db][name].list_indexes())
            for db in (original, copy)
        ]
        if indexes[0] != indexes[1]:
            raise EmberkeepError(f"the indexes of {copy}.{name} differ from the original's")
        total += len(docs[0])
    return total


class _Steps:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.n = 0

    def __call__(self, text: str) -> None:
        self.n += 1
        ui.line(f"\n{self.n}. {text}", style="bold cyan")
