"""A real MongoDB wire-protocol server on loopback: FerretDB (default) or mongod.

The demo seeds and backs up a MongoDB database, and the tests need one too, so the launcher
lives here. FerretDB v1.24.2 with its SQLite backend is built by ``scripts/setup`` into the
machine's tool cache (``emberkeep.demo.tools``). It is started on a free loopback port with
``--repl-set-name``, and the capped collection ``local.oplog.rs`` is created, which turns on
FerretDB's oplog: from then on every insert, update and delete in another collection also
writes an oplog entry (``op`` i/u/d, ``ns``, ``ts``, ``o``, ``o2``, ``wall``).

The ferretdb binary is, in order: ``$EMBERKEEP_FERRETDB`` if set; the one ``scripts/setup``
built into the tool cache; ``ferretdb`` on the PATH.

``kind="mongod"`` picks a real ``mongod`` from the PATH instead: a one-member replica set
(``rs0``) whose oplog mongod keeps itself.

Nothing here falls back silently: a server that cannot start raises ``ServerStartError``,
with its command and the end of its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from emberkeep.demo import tools

ENV_FERRETDB = "EMBERKEEP_FERRETDB"  # an explicit path to the ferretdb binary
KINDS = ("ferretdb", "mongod")
REPL_SET = "rs0"
OPLOG_BYTES = 1 << 30  # local.oplog.rs cap (FerretDB); mongod gets --oplogSize in MiB
START_TIMEOUT = 30.0
START_TRIES = 3  # a free port can be taken between probing and binding it
SETUP_HINT = "scripts/setup"


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries its command and log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def built_ferretdb() -> Path:
    """Where ``scripts/setup`` builds ferretdb (the machine's tool cache)."""
    return tools.built("ferretdb", tools.FERRETDB_VERSION)


def ferretdb_binary(checkout_bin: Path | None = None, *, setup_hint: str = SETUP_HINT) -> Path:
    """``$EMBERKEEP_FERRETDB``, else the built binary, else ``ferretdb`` on PATH.

    ``checkout_bin`` replaces the tool cache's binary (the tests point it elsewhere).
    """
    explicit = os.environ.get(ENV_FERRETDB, "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ServerStartError(
                f"{ENV_FERRETDB}={explicit}: no such file; unset it to use the one that "
                f"`{setup_hint}` builds"
            )
        return path
    built = checkout_bin if checkout_bin is not None else built_ferretdb()
    if built is not None and built.exists():
        return built
    found = shutil.which("ferretdb")
    if found:
        return Path(found)
    where = f"{built} is missing"
    raise ServerStartError(
        f"ferretdb is not built ({where}): run `{setup_hint}`, or set {ENV_FERRETDB}"
    )


def answers_ping(uri: str, timeout_ms: int = 300) -> bool:
    """Whether the server at ``uri`` answers ``ping`` within about ``timeout_ms``."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def mongod_binary() -> Path:
    found = shutil.which("mongod")
    if not found:
        raise ServerStartError("kind 'mongod' but no mongod is on the PATH")
    return Path(found)


class MongoServer:
    """One server process on 127.0.0.1 with its data under ``workdir``.

    ``start()`` returns once the server answers ``ping`` and has an oplog; ``stop()`` ends
    it. A stopped server can be started again on the same port and data. It is also a
    context manager: ``with MongoServer(dir) as server: server.client()...``.
    """

    setup_hint = SETUP_HINT  # the command the "not built" error tells to run

    def __init__(
        self,
        workdir: Path,
        *,
        kind: str = "ferretdb",
        oplog_bytes: int = OPLOG_BYTES,
        credentials: tuple[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``oplog_bytes=0``: no oplog. ``credentials``: a FerretDB that requires this
        user (SCRAM-SHA-256, FerretDB's new authentication); ``uri`` then carries them.
        ``extra_args``: more server flags (a test's ``--test-capped-cleanup-interval=…``)."""
        if kind not in KINDS:
            raise ServerStartError(f"server kind {kind!r}: expected 'ferretdb' or 'mongod'")
        self.workdir = Path(workdir)
        self.kind = kind
        self.oplog_bytes = oplog_bytes
        self.credentials = credentials
        self.extra_args = extra_args
        if credentials and kind != "ferretdb":
            raise ServerStartError("credentials are supported for the ferretdb kind only")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.kind}.log"

    # -- public ------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return self.uri_with(self.credentials)

    def uri_with(self, credentials: tuple[str, str] | None) -> str:
        """The server's URI with these credentials (wrong ones, say, for a test)."""
        if not credentials:
            return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        user, password = (quote(c, safe="") for c in credentials)
        return (
            f"mongodb://{user}:{password}@127.0.0.1:{self.port}/"
            "?directConnection=true&authMechanism=SCRAM-SHA-256"
        )

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        options.setdefault("serverSelectionTimeoutMS", 10_000)
        return MongoClient(self.uri, **options)

    def start(self) -> Self:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(START_TRIES):
            if not self.port or attempt:
                self.port = free_port()
            if self._spawn_and_wait():
                break
        else:
            raise ServerStartError(self._failure(f"{self.kind} did not start"))
        self._enable_oplog()
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

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

    def ferretdb_binary(self) -> Path:
        """The ferretdb to run; subclasses may look elsewhere."""
        return ferretdb_binary(setup_hint=self.setup_hint)

    def command(self) -> list[str]:
        if self.kind == "mongod":
            return self._mongod_command()
        return self._ferretdb_command()

    def _ferretdb_command(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            str(self.ferretdb_binary()),
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            f"--listen-addr=127.0.0.1:{self.port}",
            f"--repl-set-name={REPL_SET}",
            "--telemetry=disable",
            "--debug-addr=-",  # no metrics listener: it would take port 8088 in every session
            f"--state-dir={self.workdir}",
            "--log-level=warn",
            *self._auth_flags(),
            *self.extra_args,
        ]

    def _auth_flags(self) -> list[str]:
        if not self.credentials:
            return []
        user = self.credentials[0]
        return ["--test-enable-new-auth", f"--setup-username={user}", "--setup-database=admin"]

    def _mongod_command(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            str(mongod_binary()),
            f"--port={self.port}",
            "--bind_ip=127.0.0.1",
            f"--dbpath={data}",
            *(
                [f"--replSet={REPL_SET}", f"--oplogSize={max(self.oplog_bytes >> 20, 990)}"]
                if self.oplog_bytes
                else []  # a standalone mongod: no oplog
            ),
            "--quiet",
        ]

    def _spawn_and_wait(self) -> bool:
        """Start the process; True once it answers ping, False if it exited (port taken)."""
        with self.log_path.open("ab") as log:
            env = dict(os.environ)
            if self.credentials:  # the password goes by environment, never argv
                env["FERRETDB_SETUP_PASSWORD"] = self.credentials[1]
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._answers_ping():
                return True
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(self._failure(f"{self.kind} did not answer ping in time"))

    def _answers_ping(self) -> bool:
        return answers_ping(self.uri)

    def _failure(self, what: str) -> str:
        return f"{what}: {' '.join(self.command())}\n--- {self.log_path} ---\n{self.log_tail()}"

    # -- oplog -------------------------------------------------------------------------

    def _enable_oplog(self) -> None:
        """``oplog_bytes=0`` leaves the server without an oplog (dumps are not point-in-time)."""
        if not self.oplog_bytes:
            return
        with self.client() as client:
            if self.kind == "mongod":
                _initiate_replica_set(client, f"127.0.0.1:{self.port}")
            else:
                _create_ferretdb_oplog(client, self.oplog_bytes)


def _create_ferretdb_oplog(client: MongoClient[dict[str, Any]], size: int) -> None:
    """FerretDB writes oplog entries as soon as a capped ``local.oplog.rs`` exists."""
    with contextlib.suppress(CollectionInvalid):  # a restart on the same data: it is there
        client.local.create_collection("oplog.rs", capped=True, size=size)


def _initiate_replica_set(client: MongoClient[dict[str, Any]], host: str) -> None:
    config = {"_id": REPL_SET, "members": [{"_id": 0, "host": host}]}
    try:
        client.admin.command("replSetInitiate", config)
    except OperationFailure as exc:
        if exc.code != 23:  # AlreadyInitialized: a restart on the same data
            raise
    deadline = time.monotonic() + START_TIMEOUT
    while not client.admin.command("hello").get("isWritablePrimary"):
        if time.monotonic() > deadline:
            raise ServerStartError("mongod did not become primary of its replica set in time")
        time.sleep(0.2)
