"""The tests' MongoDB wire-protocol server: ``emberkeep.demo.mongoserver`` with test defaults.

The launcher itself (FerretDB v1.24.2 with its SQLite backend, or a real mongod; a free
loopback port; the oplog turned on) lives in the package, because the demo needs it too.
This layer adds what only the tests want:

- ``EMBERKEEP_TEST_MONGO=mongod`` picks a real ``mongod`` from the PATH instead of FerretDB;
- ``FERRETDB_BIN`` (what ``scripts/setup`` built into the tool cache) is looked up at start
  time, so a test can point it elsewhere with ``monkeypatch.setattr``;
- the "not built" error says to run ``scripts/setup --test``.

Nothing here skips: a server that cannot start raises, with the end of its log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from emberkeep.demo import mongoserver
from emberkeep.demo.mongoserver import (
    OPLOG_BYTES,
    REPL_SET,
    START_TIMEOUT,
    START_TRIES,
    MongoServer,
    ServerStartError,
    free_port,
    mongod_binary,
)

__all__ = [
    "ENV_KIND",
    "FERRETDB_BIN",
    "OPLOG_BYTES",
    "REPL_SET",
    "ROOT",
    "START_TIMEOUT",
    "START_TRIES",
    "MongoTestServer",
    "ServerStartError",
    "client_of",
    "ferretdb_binary",
    "free_port",
    "module_server",
    "mongod_binary",
    "run_stock",
    "server_kind",
    "stock_tool",
]

ROOT = Path(__file__).resolve().parents[1]
FERRETDB_BIN = mongoserver.built_ferretdb()
ENV_KIND = "EMBERKEEP_TEST_MONGO"  # "ferretdb" (default) or "mongod"
SETUP_HINT = "scripts/setup --test"


def server_kind() -> str:
    kind = os.environ.get(ENV_KIND, "ferretdb").strip() or "ferretdb"
    if kind not in mongoserver.KINDS:
        raise ServerStartError(f"{ENV_KIND}={kind!r}: expected 'ferretdb' or 'mongod'")
    return kind


def ferretdb_binary() -> Path:
    """``$EMBERKEEP_FERRETDB``, else ``FERRETDB_BIN`` (read now), else ``ferretdb`` on PATH."""
    return mongoserver.ferretdb_binary(FERRETDB_BIN, setup_hint=SETUP_HINT)


class MongoTestServer(MongoServer):
    """``MongoServer`` whose kind defaults to ``$EMBERKEEP_TEST_MONGO`` (else ferretdb)."""

    setup_hint = SETUP_HINT

    def __init__(self, workdir: Path, *, kind: str | None = None, **options: Any) -> None:
        super().__init__(workdir, kind=kind or server_kind(), **options)

    def ferretdb_binary(self) -> Path:
        return ferretdb_binary()


def module_server(
    factory: pytest.TempPathFactory, name: str, oplog_bytes: int
) -> Iterator[MongoTestServer]:
    """A started server of one test module's own (its own oplog size: window scans on
    FerretDB read the whole oplog), stopped when the module is done."""
    with MongoTestServer(factory.mktemp(name), oplog_bytes=oplog_bytes) as server:
        yield server


def client_of(server: MongoServer) -> Iterator[MongoClient[Any]]:
    """A client of ``server`` for a fixture's lifetime."""
    client = server.client()
    try:
        yield client
    finally:
        client.close()


# -- the stock mongo-tools (mongodump, mongorestore), the reference for our formats --------


def stock_tool(name: str) -> Path:
    """The stock ``mongodump``/``mongorestore``/``bsondump`` that ``scripts/setup --test``
    built into the tool cache; an error naming the fix when it is not there."""
    from emberkeep.demo import tools

    path = tools.built("mongo-tools", tools.MONGO_TOOLS_VERSION, name)
    if not path.exists():
        raise ServerStartError(f"the stock {name} is not built ({path}): run `{SETUP_HINT}`")
    return path


def run_stock(name: str, *args: str | os.PathLike[str]) -> str:
    """Run a stock tool; its stderr (where the tools report) is returned, failure raises."""
    import subprocess

    done = subprocess.run(
        [str(stock_tool(name)), *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{name} {' '.join(map(str, args))} failed:\n{done.stderr}"
    return done.stderr
