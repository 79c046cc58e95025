"""The git source: a repository as one bundle of every ref, plus a record of its refs.

A git snapshot's tree is flat, two files at its root:

- ``HEAD.json``: what restore checks out and verifies against: ``{"format": 1,
  "path": ..., "head": {"symref": "refs/heads/main" | null, "commit": sha | null},
  "refs": [[sha, refname], ...]}`` (``git for-each-ref`` order; ``symref`` is null for a
  detached HEAD).
- ``repo.bundle``: ``git bundle create - --all``, streamed from git's stdout into the
  chunker (no temp file), so it deduplicates against earlier bundles like any file.

The refs are read before the bundle is made and again after it; when they differ (a push
landed meanwhile) the backup fails rather than store a record that does not match its
bundle. A repository with no commits cannot be bundled and is an error naming its path.

Restore (``restore_bundle``) makes a new repository with ``git init``, fetches
``+refs/*:refs/*`` from the bundle (every branch, tag and other ref, under its own name),
points HEAD where the record says, checks it out, and verifies that the refs equal the
record. The optional mirror is ``git push --mirror URL`` after a successful backup; its
failure is reported as a warning, never as a failed backup. A password (or an http token)
in the mirror URL never reaches git's argv, which every local user can read in /proc: git
gets the URL without it and asks a credential helper, which reads it from git's environment.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..engine.events import Event, Readable, Stream, bytes_stream, made_node
from ..errors import EmberkeepError, IntegrityError
from ..redact import redact_text
from ..redact import redact_url as redact

BUNDLE = "repo.bundle"
RECORD = "HEAD.json"
PUSH_TIMEOUT = 3600
_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
_PASSWORD_SCHEMES = ("http", "https", "ftp", "ftps")  # where git sends the URL's credentials
_USER_VAR, _PASSWORD_VAR = "EMBERKEEP_GIT_USERNAME", "EMBERKEEP_GIT_PASSWORD"
# Answers git's "get" from the environment; ignores "store" and "erase".
_CREDENTIAL_HELPER = (
    f'!f() {{ test "$1" = get || exit 0; printf "username=%s\\n" "${_USER_VAR}"; '
    f'test -z "${{{_PASSWORD_VAR}+set}}" || printf "password=%s\\n" "${_PASSWORD_VAR}"; }}; f'
)

Refs = list[list[str]]


@dataclass
class GitRecord:
    """HEAD and the refs of a repository at backup time."""

    path: str
    symref: str | None
    commit: str | None
    refs: Refs

    def to_bytes(self) -> bytes:
        head = {"symref": self.symref, "commit": self.commit}
        data = {"format": 1, "path": self.path, "head": head, "refs": self.refs}
        return json.dumps(data, indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> GitRecord:
        """The record read back; refs and HEAD go on git's command line at restore, so each
        must be a ref name or an object id (never an option, nor a path outside refs/)."""
        try:
            raw = json.loads(data)
            record = cls(raw["path"], raw["head"]["symref"], raw["head"]["commit"], raw["refs"])
            refs_ok = all(
                isinstance(r, list) and len(r) == 2 and _is_oid(r[0]) and _is_ref(r[1])
                for r in record.refs
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(RECORD, f"not a git snapshot record ({exc})") from exc
        if not (
            isinstance(record.path, str)
            and (record.symref is None or _is_ref(record.symref))
            and (record.commit is None or _is_oid(record.commit))
            and refs_ok
        ):
            raise IntegrityError(RECORD, "a git snapshot record with a malformed ref or HEAD")
        return record


_OID = re.compile(r"\A(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|\Z)")


def _is_oid(value: object) -> bool:
    return isinstance(value, str) and bool(_OID.match(value))


def _is_ref(value: object) -> bool:
    """A ref name as ``git check-ref-format`` takes it, below ``refs/``."""
    return (
        isinstance(value, str)
        and value.startswith("refs/")
        and not value.endswith(("/", "."))
        and not _REF_FORBIDDEN.search(value)
    )


def _git(*args: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **_ENV},
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise EmberkeepError(f"`git {_shown(args)}` failed: {_tail(proc.stderr)}")
    return proc


def _shown(args: tuple[str | os.PathLike[str], ...]) -> str:
    return " ".join(str(a) for a in args)


def _tail(stderr: str, limit: int = 600) -> str:
    text = stderr.strip() or "(no message)"
    return text if len(text) <= limit else "…" + text[-limit:]


def list_refs(path: Path) -> Refs:
    out = _git("-C", path, "for-each-ref", "--format=%(objectname) %(refname)").stdout
    return [line.split(" ", 1) for line in out.splitlines()]


class GitRepo:
    """One configured repository, backed up as ``HEAD.json`` and ``repo.bundle``."""

    def __init__(self, source: str, path: Path) -> None:
        self.source = source
        self.path = path

    def check(self) -> GitRecord:
        """The record to store; a clear error for a missing, non-git or empty repository."""
        where = f"source {self.source}: {self.path}"
        if not self.path.is_dir():
            raise EmberkeepError(f"{where} does not exist; fix `path` in the config")
        probe = _git("-C", self.path, "rev-parse", "--git-dir", check=False)
        if probe.returncode != 0:
            raise EmberkeepError(f"{where} is not a git repository ({_tail(probe.stderr)})")
        refs = list_refs(self.path)
        if not refs:
            raise EmberkeepError(f"{where} has no commits yet; there is nothing to bundle")
        symref = _git("-C", self.path, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip()
        head = _git("-C", self.path, "rev-parse", "-q", "--verify", "HEAD", check=False)
        commit = head.stdout.strip() if head.returncode == 0 else None
        return GitRecord(str(self.path), symref or None, commit, refs)

    def events(self, record: GitRecord) -> Iterator[Event]:
        data = record.to_bytes()
        yield bytes_stream(made_node(RECORD), data)
        yield Stream(made_node(BUNDLE), lambda: self._bundle(record))

    @contextlib.contextmanager
    def _bundle(self, record: GitRecord) -> Iterator[Readable]:
        cmd = ["git", "-C", str(self.path), "bundle", "create", "-", "--all"]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, **_ENV},
            )  # fmt: skip
            assert isinstance(proc.stdout, io.BufferedReader)  # stdout=PIPE, buffered
            try:
                with proc.stdout:
                    yield proc.stdout
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            code = proc.wait()
            if code != 0:
                err.seek(0)
                message = _tail(err.read().decode(errors="replace"))
                raise EmberkeepError(
                    f"source {self.source}: `git bundle create` of {self.path} failed "
                    f"(exit {code}): {message}; no snapshot was made"
                )
        if list_refs(self.path) != record.refs:
            raise EmberkeepError(
                f"source {self.source}: the refs of {self.path} changed while it was bundled; "
                "no snapshot was made, back it up again"
            )


def push_mirror(path: Path, url: str) -> str | None:
    """``git push --mirror URL``; the failure's message, or None when it worked."""
    try:
        bare, credentials = _without_credentials(url)
    except ValueError as exc:
        return f"push --mirror to {redact(url)} not tried: {exc}"
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), "push", "--quiet", "--mirror", bare],
            capture_output=True,
            text=True,
            env={**os.environ, **_ENV, **credentials},
            stdin=subprocess.DEVNULL,
            timeout=PUSH_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"push --mirror to {redact(url)} timed out after {PUSH_TIMEOUT}s"
    if proc.returncode != 0:
        return f"push --mirror to {redact(url)} failed: {redact_text(_tail(proc.stderr))}"
    return None


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL to put on git's command line, and the environment that gives git what was
    taken out of it: the user and password of an http(s) or ftp(s) URL, through a credential
    helper that replaces the user's own (which could store them). An ssh URL keeps its user
    and loses its password, which ssh would not use."""
    bare, user, password = _split_authority_userinfo(url)
    if user is None:
        return url, {}
    scheme, rest = bare.split("://", 1)
    if scheme.lower() not in _PASSWORD_SCHEMES:
        return f"{scheme}://{user}@{rest}", {}
    env = {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",  # forget the helpers configured before
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": _CREDENTIAL_HELPER,
        _USER_VAR: unquote(user),
    }
    if password is not None:
        env[_PASSWORD_VAR] = unquote(password)
    return bare, env


def _split_authority_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """Like ``redact.split_userinfo``, but the user info ends where the URL's authority does
    (the first ``/``, ``?`` or ``#``): the URL built from it is sent to, so an ``@`` in the
    path (``https://u:p@host/team@corp/repo.git``) must not move the host. A password with
    a ``/`` must be %-escaped here, as URLs require."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, None, None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if not at:
        _, colon, after = authority.partition(":")
        if colon and not after.isdigit() and "@" in tail.split("?", 1)[0]:  # "pa/ss@host"?
            raise ValueError(
                "its user info may hold an unescaped '/' (or its path an '@'): write a '/' in "
                "the password as %2F"
            )
        return url, None, None
    user, colon, password = userinfo.partition(":")
    return f"{scheme}://{host}{tail}", user, password if colon else None


def restore_bundle(bundle: Path, dest: Path, record: GitRecord) -> None:
    """A new repository at ``dest`` with every ref of the bundle and the recorded HEAD."""
    _git("init", "-q", dest)
    _git("-C", dest, "fetch", "-q", "--update-head-ok", bundle, "+refs/*:refs/*")
    if record.symref:
        _git("-C", dest, "symbolic-ref", "HEAD", record.symref)
    elif record.commit:
        _git("-C", dest, "update-ref", "--no-deref", "HEAD", record.commit)
    if record.commit:
        _git("-C", dest, "reset", "-q", "--hard", record.commit)
    got = list_refs(dest)
    if got != record.refs:
        differ = sorted({r[1] for r in got} ^ {r[1] for r in record.refs}) or [
            a[1] for a, b in zip(got, record.refs, strict=False) if a != b
        ]
        raise EmberkeepError(
            f"restored repository {dest} does not match the snapshot's refs "
            f"(first difference: {differ[0] if differ else '?'}); the bundle may be damaged"
        )
