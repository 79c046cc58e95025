"""PostgreSQL 15 with DocumentDB on loopback: the MongoDB server that is faithful on data.

FerretDB v1.24 (``mongoserver``) has the oplog the point-in-time tests need but lacks
Decimal128, views, validators, most index kinds and users; PostgreSQL with the DocumentDB
extension has them (``../shared/vendor/documentdb/README.md`` measures both). ``scripts/setup
--test`` builds it into the tool cache (``tools.DOCUMENTDB_VERSION``) with two front ends that
speak the MongoDB wire protocol: DocumentDB's own gateway (views, validators, transactions)
and FerretDB v2.5 (which answers ``ok`` to a view or a validator and makes a plain collection:
the server a restore must catch losing them).

``DocumentDBServer`` runs the vendor's ``start``/``stop`` scripts, copied into the tool
cache, on a free port: PostgreSQL listens on a Unix socket in a folder of its own, the
front end on 127.0.0.1. The gateway (v0.106.0) binds a new listening socket for every
connection it accepts (``pg_documentdb_gw/src/lib.rs``, ``listen_for_connections``), so a
client that opens connections in parallel (the stock tools do, four at a time) meets
"connection refused" or a reset in between; clients therefore reach it through
``SerialProxy``, which takes any number of connections and opens them to the gateway one at
a time, each proven by a ``hello`` round trip before it relays a byte.

``frontend(kind)`` starts another front end on the same database, so both see the same
data. PostgreSQL runs as the OS user ``postgres``, so the data folder
lies under the system's temp folder (traversable by it), not under the caller's 0700 one;
``stop`` removes it. Nothing falls back: a server that does not start raises
``ServerStartError`` with the end of its logs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import bson
from pymongo import MongoClient

from . import tools
from .mongoserver import START_TIMEOUT, START_TRIES, ServerStartError, answers_ping, free_port

FRONTENDS = ("gateway", "ferretdb")
CREDENTIALS = ("admin", "admin-pass")  # the bootstrap user: a PostgreSQL superuser
SETUP_HINT = "scripts/setup --test"


def built_dir() -> Path:
    """Where ``scripts/setup --test`` builds the front ends and copies start/stop to."""
    return tools.tools_dir() / f"documentdb-{tools.DOCUMENTDB_VERSION}"


def _binary(kind: str) -> Path:
    return built_dir() / ("documentdb_gateway" if kind == "gateway" else "ferretdb")


def check_built() -> None:
    missing = [
        p
        for p in (_binary("gateway"), _binary("ferretdb"), built_dir() / "start")
        if not p.exists()
    ]
    if missing:
        raise ServerStartError(
            f"DocumentDB is not built ({missing[0]} is missing): run `{SETUP_HINT}`"
        )


HELLO_TRIES_S = 10.0  # how long one connection may take to get through to the gateway


def _hello_message() -> bytes:
    """``OP_MSG {hello: 1, $db: "admin"}``: answered before authentication."""
    body = struct.pack("<I", 0) + b"\x00" + bson.encode({"hello": 1, "$db": "admin"})
    return struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body


def _read_reply(sock: socket.socket) -> None:
    head = _read_exact(sock, 4)
    (length,) = struct.unpack("<i", head)
    _read_exact(sock, length - 4)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = sock.recv(n - got)
        if not part:
            raise ConnectionResetError("closed before the reply")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class SerialProxy:
    """A loopback TCP relay that opens its upstream connections one at a time.

    Each client connection is accepted at once; its upstream connection is made under a
    lock, retried while refused or reset, and counts as made once the server has answered
    a ``hello`` on it. Then bytes flow both ways until either side closes.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="docdb-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + HELLO_TRIES_S
        with self._lock:
            while True:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.connect(("127.0.0.1", self.upstream_port))
                    sock.sendall(_hello_message())
                    _read_reply(sock)
                    return sock
                except OSError:
                    sock.close()
                    if time.monotonic() > deadline or self._closed.is_set():
                        raise
                    time.sleep(0.005)  # the gateway binds its next listener meanwhile

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = self._connect()
        except OSError:
            client.close()
            return
        pair = (client, upstream)
        self._sockets.update(pair)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                self._sockets.discard(sock)

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Frontend:
    """One MongoDB wire-protocol front end of the server, on its own loopback port."""

    def __init__(self, server: DocumentDBServer, kind: str, port: int) -> None:
        self.server = server
        self.kind = kind
        self.port = port  # where clients connect (the proxy's port, for the gateway)
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: SerialProxy | None = None

    @property
    def uri(self) -> str:
        user, password = (quote(c, safe="") for c in self.server.credentials)
        return (
            f"mongodb://{user}:{password}@127.0.0.1:{self.port}/"
            "?directConnection=true&authMechanism=SCRAM-SHA-256"
        )

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        options.setdefault("serverSelectionTimeoutMS", 10_000)
        return MongoClient(self.uri, **options)

    def answers(self) -> bool:
        return answers_ping(self.uri, 500)


class DocumentDBServer:
    """PostgreSQL + DocumentDB with the ``gateway`` (default) or ``ferretdb`` front end."""

    def __init__(self, frontend: str = "gateway", credentials: tuple[str, str] = CREDENTIALS):
        if frontend not in FRONTENDS:
            raise ServerStartError(f"front end {frontend!r}: expected one of {FRONTENDS}")
        self.kind = frontend
        self.credentials = credentials
        self.datadir: Path | None = None
        self.main: Frontend | None = None
        self.others: list[Frontend] = []

    # -- public ------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        assert self.main is not None, "the server is not started"
        return self.main.uri

    @property
    def port(self) -> int:
        assert self.main is not None, "the server is not started"
        return self.main.port

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        assert self.main is not None, "the server is not started"
        return self.main.client(**options)

    def start(self) -> Self:
        check_built()
        base = Path(tempfile.mkdtemp(prefix="emberkeep-documentdb-"))
        base.chmod(0o755)  # the postgres user must reach the data folder below
        self.datadir = base / "data"
        for _attempt in range(START_TRIES):
            port = free_port()
            done = self._run_script("start", str(port), str(self.datadir))
            if done.returncode == 0:
                self.main = Frontend(self, self.kind, port)
                if self.kind == "gateway":
                    self.main.proxy = SerialProxy(port)
                    self.main.port = self.main.proxy.port
                break
            self._run_script("stop", str(self.datadir))
            if "did not start" not in done.stderr:  # not a port taken meanwhile
                raise ServerStartError(self._failure("DocumentDB did not start", done))
        else:
            raise ServerStartError(self._failure("DocumentDB did not start", done))
        self._wait(self.main)
        self._faster_index_builds()
        return self

    def _faster_index_builds(self) -> None:
        """DocumentDB builds indexes in pg_cron jobs every 2 seconds, two at a time, and each
        createIndexes waits for its job: every second instead (pg_cron's shortest), eight at
        a time, so a restore's indexes take one wait, not several."""
        assert self.datadir is not None
        statements = [
            "SELECT cron.alter_job(jobid, schedule => '1 seconds') FROM cron.job "
            "WHERE command LIKE '%build_index_concurrently%'",
            "ALTER SYSTEM SET documentdb.maxNumActiveUsersIndexBuilds = 8",
            "SELECT pg_reload_conf()",
        ]
        psql = Path("/usr/lib/postgresql/15/bin/psql")
        where = ["-h", str(self.datadir / "run"), "-U", self.credentials[0], "-d", "postgres"]
        done = subprocess.run(
            [str(psql), "-qtA", *where, "-v", "ON_ERROR_STOP=1"]
            + [arg for sql in statements for arg in ("-c", sql)],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": self.credentials[1]},
            timeout=60,
        )
        if done.returncode != 0:
            raise ServerStartError(self._failure("could not reschedule the index builds", done))

    def frontend(self, kind: str) -> Frontend:
        """Another front end on the same PostgreSQL (stopped with the server)."""
        assert self.datadir is not None, "the server is not started"
        if kind != "ferretdb":
            raise ServerStartError("only a ferretdb front end can be added to a started server")
        for _attempt in range(START_TRIES):
            end = Frontend(self, kind, free_port())
            user, password = (quote(c, safe="") for c in self.credentials)
            run = self.datadir / "run"
            state = self.datadir / f"ferretdb-{end.port}"
            state.mkdir(exist_ok=True)
            log = (self.datadir / f"ferretdb-{end.port}.log").open("ab")
            with log:
                end.proc = subprocess.Popen(
                    [
                        str(_binary("ferretdb")),
                        f"--postgresql-url=postgres://{user}:{password}@/postgres?host={run}",
                        f"--listen-addr=127.0.0.1:{end.port}",
                        f"--state-dir={state}",
                        "--debug-addr=",
                        "--telemetry=disable",
                        "--log-level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.others.append(end)
            try:
                self._wait(end)
                return end
            except ServerStartError:
                if end.proc.poll() is None:
                    raise
        raise ServerStartError(self._failure("the ferretdb front end did not start"))

    def stop(self) -> None:
        for end in self.others:
            if end.proc is not None and end.proc.poll() is None:
                end.proc.terminate()
                try:
                    end.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    end.proc.kill()
                    end.proc.wait(timeout=15)
        self.others = []
        if self.main is not None and self.main.proxy is not None:
            self.main.proxy.close()
        if self.datadir is not None:
            self._run_script("stop", str(self.datadir))
            shutil.rmtree(self.datadir.parent, ignore_errors=True)
            self.datadir = None
        self.main = None

    def log_tail(self, lines: int = 20) -> str:
        if self.datadir is None:
            return "(no logs)"
        tails = []
        for log in sorted(self.datadir.glob("*.log")):
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {log} ---\n" + "\n".join(text))
        return "\n".join(tails) or "(no logs)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- process -----------------------------------------------------------------------

    def _run_script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.update(MONGO_USER=self.credentials[0], MONGO_PASS=self.credentials[1])
        if self.kind == "gateway":
            env.update(FRONTEND="gateway", GATEWAY_BIN=str(_binary("gateway")))
        else:
            env["FERRETDB_BIN"] = str(_binary("ferretdb"))
        assert self.datadir is not None
        return subprocess.run(
            [str(built_dir() / name), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.datadir.parent,  # the gateway writes its self-signed cert.pem there
            timeout=START_TIMEOUT * 4,
        )

    def _wait(self, end: Frontend) -> None:
        """Until the front end answers ``ping`` with the credentials."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if end.proc is not None and end.proc.poll() is not None:
                raise ServerStartError(self._failure(f"the {end.kind} front end exited"))
            if end.answers():
                return
            time.sleep(0.2)
        raise ServerStartError(self._failure(f"the {end.kind} front end did not answer in time"))

    def _failure(self, what: str, done: subprocess.CompletedProcess[str] | None = None) -> str:
        said = f"\n{done.stdout}{done.stderr}" if done is not None else ""
        return f"{what}{said}\n{self.log_tail()}"
