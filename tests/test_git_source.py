"""The git source (docs/design.md, "Sources"): bundle of every ref, deduplicated; restore;
mirror."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import Site
from servers import http_serving

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Commits need a name; the user's own git config must not leak into the tests."""
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test Person")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 or not check, f"git {args}: {proc.stderr}"
    return proc.stdout


def commit(repo: Path, files: dict[str, bytes], message: str) -> None:
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def make_repo(path: Path, big: int = MiB) -> None:
    """History on two branches, a lightweight and an annotated tag, HEAD on main."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(path, {"README": b"hello\n", "big.bin": os.urandom(big)}, "first")
    git(path, "tag", "v1")
    commit(path, {"src/app.py": b"print('app')\n"}, "second")
    git(path, "checkout", "-q", "-b", "feature", "HEAD~1")
    commit(path, {"feature.txt": b"a feature\n"}, "feature work")
    git(path, "checkout", "-q", "main")
    commit(path, {"README": b"hello again\n"}, "third")
    git(path, "tag", "-a", "v2", "-m", "release two")


def state(repo: Path) -> dict[str, object]:
    """Refs, HEAD and working-tree files: what a restore must reproduce."""
    files = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return {
        "refs": git(repo, "for-each-ref"),
        "head": git(repo, "rev-parse", "HEAD"),
        "symref": git(repo, "symbolic-ref", "-q", "HEAD", check=False),  # "" when detached
        "files": files,
    }


def git_source(path: Path, mirror: str | None = None) -> str:
    lines = ["[[sources]]", 'name = "code"', 'type = "git"', f'path = "{path}"']
    if mirror is not None:
        lines.append(f'mirror = "{mirror}"')
    return "\n".join(lines)


def assert_restores(site: Site, snapshot_id: str, out: Path, expected: dict[str, object]) -> None:
    site.run("restore", snapshot_id, "--to", out)
    assert state(out) == expected
    fsck = subprocess.run(
        ["git", "-C", str(out), "fsck", "--full", "--strict"], capture_output=True, text=True
    )
    assert fsck.returncode == 0, fsck.stderr
    assert "dangling" not in fsck.stdout + fsck.stderr
    assert git(out, "status", "--porcelain") == ""
    assert not list(out.parent.glob(".emberkeep-*.bundle")), "the temp bundle was left behind"


def test_git_round_trip_with_dedup(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "app"
    make_repo(src, big=16 * MiB)  # many chunks: only those at the bundle's edges change
    site.write_config(extra_sources=git_source(src))
    site.run("init")
    first_state = state(src)
    first = site.json("backup", "code")[0]["snapshot"]
    assert first["source"] == "code"

    commit(src, {"src/app.py": b"print('app v3')\n"}, "fourth")
    git(src, "tag", "v3")
    git(src, "branch", "-D", "feature")
    second_state = state(src)
    second = site.json("backup", "code")[0]["snapshot"]
    # Only the chunks at the bundle's edges change: the ref list and pack header before the
    # big blob, the new and reordered small objects after it. Chunk sizes are random (the blob
    # is), so the bound counts chunks, with bytes only as a loose second check.
    assert second["summary"]["blobs_new"] <= 8 < first["summary"]["blobs_new"], (
        first["summary"],
        second["summary"],
    )
    assert second["summary"]["bytes_stored"] < first["summary"]["bytes_stored"] / 2

    assert_restores(site, first["id"], tmp_path / "out1", first_state)
    assert_restores(site, second["id"], tmp_path / "out2" / "nested", second_state)
    assert "refs/heads/feature" in first_state["refs"]  # type: ignore[operator]
    assert "refs/heads/feature" not in second_state["refs"]  # type: ignore[operator]
    assert site.json("check")["local"]["ok"] is True


def test_detached_head_restores_detached(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "app"
    make_repo(src)
    git(src, "checkout", "-q", "--detach", "v1")
    site.write_config(extra_sources=git_source(src))
    site.run("init")
    expected = state(src)
    assert expected["symref"] == ""
    snap = site.json("backup", "code")[0]["snapshot"]
    assert_restores(site, snap["id"], tmp_path / "out", expected)


def test_restore_refuses_a_non_empty_directory_and_paths(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "app"
    make_repo(src)
    site.write_config(extra_sources=git_source(src))
    site.run("init")
    snap = site.json("backup", "code")[0]["snapshot"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    proc = site.run("restore", snap["id"], "--to", busy, ok=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    proc = site.run("restore", snap["id"], "README", "--to", tmp_path / "x", ok=False)
    assert proc.returncode == 2 and "whole" in proc.stderr


@pytest.mark.parametrize("kind", ["missing", "plain-dir", "empty-repo"])
def test_bad_repository_fails_naming_the_path(site: Site, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "notgit"
    if kind != "missing":
        path.mkdir()
        (path / "file.txt").write_text("not a repo")
    if kind == "empty-repo":
        git(path, "init", "-q")
    site.write_config(extra_sources=git_source(path))
    site.run("init")
    proc = site.run("backup", "code", ok=False)
    assert proc.returncode == 1
    assert str(path) in proc.stderr
    expected = {"missing": "does not exist", "plain-dir": "not a git", "empty-repo": "no commits"}
    assert expected[kind] in proc.stderr
    assert site.snapshots() == []


def test_git_failing_mid_bundle_commits_no_snapshot(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "app"
    make_repo(src)
    blob = git(src, "rev-parse", "main:src/app.py").strip()
    (src / ".git" / "objects" / blob[:2] / blob[2:]).unlink()  # a damaged repository
    site.write_config(extra_sources=git_source(src))
    site.run("init")
    proc = site.run("backup", "code", ok=False)
    assert proc.returncode == 1
    assert "source code" in proc.stderr and "git bundle create" in proc.stderr
    assert site.snapshots() == []


def test_mirror_gets_every_ref(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "app"
    make_repo(src)
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    site.write_config(extra_sources=git_source(src, mirror=str(mirror)))
    site.run("init")
    result = site.json("backup", "code")[0]
    assert result["warnings"] == []
    assert git(mirror, "for-each-ref") == git(src, "for-each-ref")


def test_mirror_failure_warns_and_keeps_the_snapshot(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "app"
    make_repo(src)
    site.write_config(extra_sources=git_source(src, mirror=str(tmp_path / "absent.git")))
    site.run("init")
    result = site.json("backup", "code")[0]
    assert len(result["warnings"]) == 1
    assert "push --mirror" in result["warnings"][0]["message"]
    assert [s["id"] for s in site.snapshots()] == [result["snapshot"]["id"]]


# -- a mirror over HTTP with a password: the password never reaches argv or a message -----

MIRROR_USER = "ci"
MIRROR_PASSWORD = "S3cret/pw"  # written %2F in the URL
MIRROR_SECRET = "S3cret"


@dataclass
class GitHttpServer:
    """Smart HTTP (``git http-backend``) for the bare repositories under ``root``, behind
    Basic auth; ``authorizations`` lists the Authorization header of every request."""

    root: Path
    port: int = 0
    authorizations: list[str] = field(default_factory=list)

    def url(self, name: str, password: str = "S3cret%2Fpw") -> str:
        return f"http://{MIRROR_USER}:{password}@127.0.0.1:{self.port}/{name}"


def _handler(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{MIRROR_USER}:{MIRROR_PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, *args: object) -> None:
            pass

        def _serve(self) -> None:
            auth = self.headers.get("Authorization", "")
            server.authorizations.append(auth)
            if auth != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._backend(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _backend(self, body: bytes) -> None:
            path, _, query = self.path.partition("?")
            env = {
                **os.environ,
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": MIRROR_USER,
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            out = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=True
            ).stdout
            head, payload = re.split(rb"\r?\n\r?\n", out, maxsplit=1)
            headers = [line.split(":", 1) for line in head.decode().splitlines()]
            status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
            self.send_response(status)
            for name, value in headers:
                if name.lower() != "status":
                    self.send_header(name, value.strip())
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHttpServer]:
    server = GitHttpServer(tmp_path / "served")
    server.root.mkdir()
    with http_serving(_handler(server)) as server.port:
        yield server


def logged_git(site: Site, tmp_path: Path) -> Path:
    """Put a ``git`` that logs its argv first on the site's PATH; the log's path."""
    log = tmp_path / "git-argv.log"
    bin_dir = tmp_path / "logging-bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "git"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {shutil.which("git")} "$@"\n'
    )
    wrapper.chmod(0o755)
    site.env.update({"PATH": f"{bin_dir}:{os.environ['PATH']}", "NO_PROXY": "*", "no_proxy": "*"})
    return log


def test_mirror_password_stays_out_of_argv_and_credential_stores(
    site: Site, tmp_path: Path, git_http: GitHttpServer
) -> None:
    src = tmp_path / "app"
    make_repo(src, big=1024)  # one small POST: no chunked request body
    subprocess.run(["git", "init", "-q", "--bare", str(git_http.root / "mirror.git")], check=True)
    store = tmp_path / "stored-credentials"  # a user's helper must not be handed the password
    Path(os.environ["GIT_CONFIG_GLOBAL"]).write_text(
        f"[credential]\n\thelper = store --file={store}\n"
    )
    log = logged_git(site, tmp_path)
    site.write_config(extra_sources=git_source(src, mirror=git_http.url("mirror.git")))
    site.run("init")
    proc = site.run("backup", "code", "--json")
    assert MIRROR_SECRET not in proc.stdout + proc.stderr
    assert json.loads(proc.stdout)[0]["warnings"] == [], proc.stdout
    assert git(git_http.root / "mirror.git", "for-each-ref") == git(src, "for-each-ref")
    assert any(a.startswith("Basic ") for a in git_http.authorizations)  # it did log in
    assert "push" in log.read_text() and MIRROR_SECRET not in log.read_text()
    assert not store.exists() or MIRROR_SECRET not in store.read_text()


def test_mirror_refusing_the_password_warns_without_it(
    site: Site, tmp_path: Path, git_http: GitHttpServer
) -> None:
    src = tmp_path / "app"
    make_repo(src, big=1024)
    subprocess.run(["git", "init", "-q", "--bare", str(git_http.root / "mirror.git")], check=True)
    log = logged_git(site, tmp_path)
    mirror = git_http.url("mirror.git", password="S3cret-wrong/pw")  # "/" unescaped
    site.write_config(extra_sources=git_source(src, mirror=mirror))
    site.run("init")
    proc = site.run("backup", "code", "--json")
    assert MIRROR_SECRET not in proc.stdout + proc.stderr, proc.stdout
    assert "push --mirror" in proc.stdout and "127.0.0.1" in proc.stdout
    assert MIRROR_SECRET not in log.read_text()


def test_credentials_come_out_of_the_authority_only() -> None:
    """An ``@`` in the path must not move the host the password is offered to."""
    from emberkeep.sources.git import _without_credentials

    url, env = _without_credentials("https://u:p%40ss@example.com/team@corp/repo.git")
    assert url == "https://example.com/team@corp/repo.git"
    assert (env["EMBERKEEP_GIT_USERNAME"], env["EMBERKEEP_GIT_PASSWORD"]) == ("u", "p@ss")
    assert _without_credentials("https://example.com/a@b.git") == (
        "https://example.com/a@b.git",
        {},
    )
    with_port = "https://example.com:8443/a@b.git"
    assert _without_credentials(with_port) == (with_port, {})
    with pytest.raises(ValueError, match="%2F"):  # a password with a bare "/": never guessed
        _without_credentials("https://u:pa/ss@example.com/repo.git")
