"""Shared fixtures: a site in a temp dir, driven through the real CLI in a subprocess."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from servers import S3Server, SshServer, start_sshd, start_versitygw

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Site:
    """A sandboxed emberkeep site: identities, a config file, a state dir, targets."""

    root: Path
    recipients: list[str] = field(default_factory=list)
    identities: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "emberkeep.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    def run(
        self, *args: str | os.PathLike[str], ok: bool | None = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run `emberkeep -c CONFIG ARGS`; ``ok=True`` asserts exit 0, False asserts non-zero."""
        cmd = [sys.executable, "-m", "emberkeep", "-c", str(self.config_path), *map(str, args)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=timeout
        )
        if ok is True:
            assert proc.returncode == 0, (
                f"{cmd} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
            )
        elif ok is False:
            assert proc.returncode != 0, f"{cmd} should have failed:\n{proc.stdout}"
        if proc.returncode != 0:
            assert "Traceback" not in proc.stderr, f"traceback for a user error:\n{proc.stderr}"
        return proc

    def json(self, *args: str | os.PathLike[str]) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def keygen(self, name: str = "identity.txt") -> tuple[Path, str]:
        path = self.root / name
        proc = subprocess.run(
            [sys.executable, "-m", "emberkeep", "keygen", "-o", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        recipient = proc.stdout.strip().splitlines()[-1]
        self.identities.append(path)
        self.recipients.append(recipient)
        return path, recipient

    def write_config(
        self,
        paths: list[Path] | None = None,
        *,
        identity: Path | bool | None = True,
        exclude: list[str] | None = None,
        extra_sources: str = "",
        targets: str | None = None,
        extra: str = "",
        source_extra: str = "",
    ) -> Path:
        if not self.recipients:
            self.keygen()
        ident = self.identities[0] if identity is True else identity
        lines = [
            "[site]",
            'name = "test-site"',
            f'state_dir = "{self.state_dir}"',
            "[keys]",
            f"recipients = {json.dumps(self.recipients)}",
        ]
        if ident:
            lines.append(f'identity_file = "{ident}"')
        if paths is not None:
            lines += [
                "[[sources]]",
                'name = "files"',
                'type = "files"',
                f"paths = {json.dumps([str(p) for p in paths])}",
                f"exclude = {json.dumps(exclude or [])}",
                source_extra,  # more keys of the files source
            ]
        lines.append(extra_sources)
        lines.append(
            targets
            if targets is not None
            else f'[[targets]]\nname = "local"\nurl = "file://{self.repo}"'
        )
        lines.append(extra)
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def snapshots(self) -> list[dict[str, Any]]:
        return self.json("snapshots")


# The groups of the suite (CONTRIBUTING.md, "Tests"), as markers set at collection, so a
# file keeps the tests of one concept together: `scripts/test -m unit` runs what needs no
# server and no CLI subprocess, `-m integration` what talks to a real server, `-m e2e` what
# drives the CLI. A test may be both integration and e2e.
SERVER_FIXTURES = {
    "mongo_server",
    "mongo_client",
    "mongo_db_name",
    "documentdb",
    "documentdb_ferretdb",
    "sftp_server",
    "s3_server",
    "browser",  # tests/test_web.py: headless chromium
}
SERVER_MODULES = ("servers", "servers_mongo", "notify_servers")


def _imports(module: Any, names: tuple[str, ...]) -> bool:
    """The module imports one of ``names`` or something from it."""
    for value in vars(module).values():
        name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", "")
        if isinstance(name, str) and name.split(".")[0] in names:
            return True
    return False


def suite_groups(item: pytest.Item) -> set[str]:
    fixtures = set(getattr(item, "fixturenames", ()))
    module = getattr(item, "module", None)
    groups = set()
    # a module that imports a server helper may start a server without a shared fixture
    if fixtures & SERVER_FIXTURES or (module is not None and _imports(module, SERVER_MODULES)):
        groups.add("integration")
    # the CLI in a subprocess: the `site` fixture, this file's Site, or a module's own
    # subprocess calls (the demo, the scheduler, the dashboard's server)
    drives_cli = module is not None and (
        vars(module).get("Site") is Site or _imports(module, ("subprocess",))
    )
    if "site" in fixtures or drives_cli:
        groups.add("e2e")
    return groups or {"unit"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for group in suite_groups(item):
            item.add_marker(group)


@pytest.fixture(autouse=True)
def no_emberkeep_env_leak() -> Iterator[None]:
    """A test must leave the process's EMBERKEEP_* variables as it found them: every CLI
    subprocess of later tests inherits os.environ, and a leaked EMBERKEEP_NOW pins their
    clock (the scheduler once left one behind)."""
    before = {k: v for k, v in os.environ.items() if k.startswith("EMBERKEEP_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("EMBERKEEP_")}
    for key in set(before) | set(after):  # put back first, so one leak fails one test
        if key in before:
            os.environ[key] = before[key]
        else:
            os.environ.pop(key, None)
    assert after == before, f"the test changed the environment: {before} -> {after}"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield Site(tmp_path)


def tree_listing(root: Path) -> dict[str, tuple[Any, ...]]:
    """Content and metadata of every entry under root, for comparing trees exactly."""
    import hashlib
    import stat

    listing: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # a fixed order, so a hardlink group is named the same in both trees
        for name in dirnames + sorted(filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                detail: Any = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    detail = (detail, "link-group:" + inodes.setdefault(st.st_ino, rel))
            else:
                detail = None
            mtime = None if stat.S_ISDIR(st.st_mode) and path.is_symlink() else st.st_mtime_ns
            listing[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, detail)
    return listing


def restored(out: Path, path: Path) -> Path:
    """Where ``restore --to out`` puts the snapshot path ``path`` (kept at its absolute place)."""
    return out / str(path).lstrip("/")


def stored_bytes(
    repo: Path, folders: tuple[str, ...] = ("data", "meta", "index", "snapshots")
) -> int:
    """Bytes on disk of a file:// repository's objects in ``folders``."""
    total = 0
    for folder in folders:
        for dirpath, _dirs, files in os.walk(repo / folder):
            total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return total


def repo_objects(repo: Path, folder: str) -> list[Path]:
    """The objects (no temp files) in one folder of a file:// repository."""
    return sorted(
        p for p in (repo / folder).rglob("*") if p.is_file() and not p.name.startswith(".")
    )


# ---- MongoDB wire-protocol test server (docs/design.md, "Test servers") ------------------
# FerretDB (or mongod with EMBERKEEP_TEST_MONGO=mongod), one per test session, with an oplog.
# A server that cannot start makes every test that uses it error out: never a skip.


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The started ``servers_mongo.MongoTestServer``; ``.uri``, ``.client()``, ``.kind``."""
    from servers_mongo import MongoTestServer

    server = MongoTestServer(tmp_path_factory.mktemp("mongo-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_client(mongo_server: Any) -> Iterator[Any]:
    """A ``pymongo.MongoClient`` to the session's server."""
    from servers_mongo import client_of

    yield from client_of(mongo_server)


_mongo_db_counter = iter(range(1, 1 << 30))


@pytest.fixture
def mongo_db_name(mongo_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database name no other test uses (FerretDB allows [A-Za-z0-9_-]{1,63}); dropped after."""
    import re

    test = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    name = f"t{next(_mongo_db_counter)}_{test}"
    yield name
    mongo_client.drop_database(name)


# ---- DocumentDB (PostgreSQL + DocumentDB, the gateway in front): the faithful server ----
# One per test session (its first start takes seconds): every test that uses it takes a
# database of its own (``mongo_db_name``-style names, dropped after). A second front end,
# FerretDB v2.5 on the same PostgreSQL, is the server that silently drops views.


@pytest.fixture(scope="session")
def documentdb() -> Iterator[Any]:
    """The started ``emberkeep.demo.docdbserver.DocumentDBServer`` (gateway front end)."""
    from emberkeep.demo.docdbserver import DocumentDBServer

    server = DocumentDBServer("gateway")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def documentdb_ferretdb(documentdb: Any) -> Any:
    """FerretDB v2.5 in front of the session's DocumentDB (same data): ``.uri``, ``.client()``."""
    return documentdb.frontend("ferretdb")


# -- real servers for sftp:// and s3:// targets (tests/servers.py) --------------------------


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """Debian's sshd on a loopback port for the session; an error, never a skip, if it fails."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """versitygw on a loopback port for the session; an error, never a skip, if it fails."""
    server = start_versitygw(tmp_path_factory.mktemp("versitygw"))
    yield server
    server.stop()
