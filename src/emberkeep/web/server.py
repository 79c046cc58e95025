"""`emberkeep web`: the dashboard's HTTP server (standard library only, see web/__init__.py).

What it serves (README, "The dashboard"):

- ``GET /`` the page (web/page.py), ``?range=7d|30d|1y`` for its charts (default 30d);
  ``/static/…`` its CSS and script (from the package: no CDN, nothing fetched);
- ``GET /journal`` (and ``/api/journal``) the journal, newest first, filtered by source,
  target, kind, outcome and since (as `emberkeep log`); ``/snapshots`` (and
  ``/api/snapshots``) every snapshot per target with the rule that keeps it or the verdict
  of the next prune (``?source=``, ``?target=``);
- ``GET /api/status`` the same JSON as ``emberkeep status --json``; ``/api/history?source=S
  &range=R`` the journaled backups and drills the charts are drawn from; ``/api/job`` the
  job the dashboard runs (or ran last);
- ``POST /backup/SOURCE``, ``/drill/SOURCE``, ``/check/TARGET`` run that job through
  ``scheduler.run_job``, the function the scheduler runs (journal row, alerts; a backup's
  copies to the other targets), in a thread: one job at a time (409 while one runs). A
  form post is answered 303 to ``/``, a post asking for JSON 202 with the job.

Security:

- Loopback by default (``[web] listen``, ``--listen``). Any other address needs a token
  (``[web] token_file``, ``--token-file``: one line of at least 16 letters, digits or
  ``-._~``, a file only its owner can read), and HTTPS (``[web] tls_cert`` and ``tls_key``)
  or an explicit ``--insecure-http`` (warned about); without them the server refuses to
  start (exit 2), before binding.
- With a token every request must carry it: ``Authorization: Bearer TOKEN``, or the cookie
  ``emberkeep_token`` that opening any page once with ``?token=TOKEN`` sets (HttpOnly,
  SameSite=Strict, Secure over HTTPS), answered with a redirect that drops the token from
  the address. Without it: 401. The token never appears in the log (the query string is
  not logged) or a page.
- Without a token the ``Host`` header must name a loopback host (403 otherwise): a web page
  elsewhere cannot read the dashboard by pointing its own name at 127.0.0.1.
- Every POST needs the CSRF token the page carries (form field ``csrf`` or header
  ``X-CSRF-Token``), new each time the server starts: 403 without it.
- Every response is ``Cache-Control: no-store`` with a Content-Security-Policy that allows
  only the dashboard's own script and style, no framing and no outside requests.
- ``[web] actions = false``: read-only, no button, every POST 403.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timedelta
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .. import clock
from ..errors import EmberkeepError, UsageError, error_text
from ..journal import KINDS, Entry, Journal
from ..site import Site
from .jobstate import JobState

DEFAULT_LISTEN = "127.0.0.1:8470"
COOKIE = "emberkeep_token"
MIN_TOKEN = 16
MAX_BODY = 4096  # a form post carries the CSRF token and nothing else
RANGES = {"7d": timedelta(days=7), "30d": timedelta(days=30), "1y": timedelta(days=365)}
DEFAULT_RANGE = "30d"
ACTIONS = {"backup": "source", "drill": "source", "check": "target"}  # POST /KIND/NAME
JOURNAL_LIMIT = 1000  # rows on the journal page; `emberkeep log` has them all
GROWTH_WINDOW = timedelta(days=30)  # the estimated-full date extrapolates this much growth
STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


# -- where to listen, and the token -----------------------------------------------------


def parse_listen(text: str, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8470`` for IPv6; port 0 picks a free one)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{where} {text!r}: give HOST:PORT, like {DEFAULT_LISTEN}")
    return host, int(port)


def is_loopback(host: str, where: str) -> bool:
    """Whether every address ``host`` names is a loopback one."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise UsageError(f"{where}: cannot resolve {host!r} ({exc}); give an IP address") from exc
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in found)


def read_token(path: Path) -> str:
    """The token in ``path``: its first line, refused when short or readable by others."""
    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"the token file {path} cannot be read ({reason})") from exc
    if st.st_mode & 0o077:
        raise UsageError(
            f"the token file {path} can be read by others (mode {stat.S_IMODE(st.st_mode):o}): "
            f"run `chmod 600 {path}`"
        )
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if not re.fullmatch(rf"[A-Za-z0-9._~-]{{{MIN_TOKEN},}}", token):  # safe in a URL and a cookie
        raise UsageError(
            f"the token file {path} must hold one line of at least {MIN_TOKEN} letters, digits "
            "or -._~ (e.g. from `openssl rand -hex 32`)"
        )
    return token


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server's TLS context; the key refused when others can read it."""
    try:
        mode = os.stat(key).st_mode
    except OSError as exc:
        raise UsageError(f"the TLS key {key} cannot be read ({exc.strerror})") from exc
    if mode & 0o077:
        raise UsageError(
            f"the TLS key {key} can be read by others (mode {stat.S_IMODE(mode):o}): "
            f"run `chmod 600 {key}`"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise UsageError(
            f"the TLS certificate {cert} and key {key} cannot be loaded ({reason}); give a "
            "PEM certificate and its PEM private key"
        ) from exc
    return context


# -- the job the dashboard runs ---------------------------------------------------------


class Jobs:
    """One job at a time, each in its own thread, through the scheduler's ``run_job``."""

    def __init__(self, make_site: Callable[[], Site]) -> None:
        self.make_site = make_site
        self.lock = threading.Lock()
        self.current: JobState | None = None
        self.thread: threading.Thread | None = None
        self.count = 0
        # held while a job runs; `run --web` shares it with the scheduler's jobs
        self.run_lock: contextlib.AbstractContextManager[Any] = threading.Lock()

    def state(self) -> JobState | None:
        with self.lock:
            return None if self.current is None else JobState(**asdict(self.current))

    def start(self, kind: str, name: str) -> JobState | None:
        """Start ``kind`` (backup, drill: a source; check: a target); None while another
        job runs."""
        with self.lock:
            if self.current is not None and self.current.state == "running":
                return None
            self.count += 1
            job = JobState(self.count, kind, name, "running", clock.iso(clock.now()))
            self.current = job
            self.thread = threading.Thread(target=self._run, args=(job,), name=f"{kind} {name}")
            self.thread.start()
            return JobState(**asdict(job))

    def start_backup(self, source: str) -> JobState | None:
        return self.start("backup", source)

    def _run(self, job: JobState) -> None:
        from ..engine.backup import Progress
        from ..policy.schedule import Job
        from ..runner.scheduler import run_job

        def on_file(path: str, size: int) -> None:
            with self.lock:
                job.files += 1
                job.bytes += size

        try:
            site = self.make_site()
            schedule = ""
            if job.kind == "backup":
                schedule = site.config.source(job.source).schedule or ""
            with self.run_lock:
                summary = run_job(
                    site, Job(f"{job.kind}:{job.source}", schedule), progress=Progress(on_file)
                )
        except BaseException as exc:  # the journal has it too; the page shows it
            with self.lock:
                job.state, job.error = "failed", error_text(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            with self.lock:
                job.state, job.summary = "ok", summary

    def join(self) -> None:
        thread = self.thread
        if thread is not None:
            thread.join()


# -- the server ---------------------------------------------------------------------------


class Dashboard:
    """What every request needs: the site, the token, the CSRF token, the jobs."""

    def __init__(
        self,
        config_file: str | None,
        identity_file: Path | None,
        *,
        token: str | None,
        host: str,
        loopback: bool,
        tls: bool = False,
        actions: bool = True,
    ) -> None:
        self.config_file = config_file
        self.identity_file = identity_file
        self.token = token
        self.host = host
        self.loopback = loopback
        self.tls = tls
        self.actions = actions
        self.csrf = secrets.token_urlsafe(32)
        self.jobs = Jobs(self.site)

    def site(self) -> Site:
        """A site loaded afresh: each request and job sees the config as it is now."""
        from .. import config

        return Site(config.load(self.config_file), identity_file=self.identity_file)

    def redact(self, text: str) -> str:
        text = re.sub(r"token=[^&\s'\"]*", "token=***", text)
        return text.replace(self.token, "***") if self.token else text


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "emberkeep"
    sys_version = ""
    timeout = 30  # a client that stops mid-request frees its thread
    protocol_version = "HTTP/1.1"

    @property
    def dash(self) -> Dashboard:
        return self.server.dashboard

    def setup(self) -> None:
        """The TLS handshake here, in the connection's thread, under its timeout."""
        context = self.server.tls
        if context is not None:
            self.request.settimeout(self.timeout)
            self.request = context.wrap_socket(self.request, server_side=True)
        super().setup()

    # -- plumbing ------------------------------------------------------------------------

    def _send(
        self,
        code: int,
        body: bytes | str,
        content_type: str = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, code: int, data: Any) -> None:
        self._send(code, json.dumps(data, indent=1), "application/json")

    def _text(self, code: int, text: str, headers: dict[str, str] | None = None) -> None:
        self._send(code, text + "\n", "text/plain; charset=utf-8", headers)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        self.log_message('"%s %s" %s', self.command, path, code)  # never the query

    def log_message(self, format: str, *args: Any) -> None:
        text = self.dash.redact(format % args)
        sys.stderr.write(f"{self.address_string()} {clock.iso(clock.now())} {text}\n")

    # -- checks --------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        """Without a token, only a loopback Host (module docstring: DNS rebinding)."""
        if self.dash.token is not None:
            return True
        host = self.headers.get("Host", "")
        if host.startswith("["):
            name = host[1:].partition("]")[0]
        else:
            name = host.rpartition(":")[0] if ":" in host else host
        return name.lower() in LOOPBACK_NAMES | {self.dash.host.lower()}

    def _given_token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        with contextlib.suppress(CookieError):
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            if COOKIE in cookie:
                return cookie[COOKIE].value
        return None

    def _token_ok(self, given: str | None) -> bool:
        token = self.dash.token
        if token is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), token.encode())

    def _refuse_token(self) -> None:
        self._text(
            401,
            "this dashboard needs its token: open any page once with ?token=TOKEN (a cookie "
            "keeps it), or send the header Authorization: Bearer TOKEN",
            {"WWW-Authenticate": 'Bearer realm="emberkeep"'},
        )

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        """Host and token checked (and answered when refused); a ``?token=`` login done."""
        if not self._host_ok():
            self._text(403, "this dashboard answers only to a loopback Host name")
            return False
        if "token" in query and self.dash.token is not None and self.command == "GET":
            if not self._token_ok(query["token"][0]):
                self._refuse_token()
                return False
            rest = {k: v for k, v in query.items() if k != "token"}
            path = "/" + urlsplit(self.path).path.lstrip("/")  # never //host: a redirect away
            location = path + (f"?{urlencode(rest, doseq=True)}" if rest else "")
            cookie = f"{COOKIE}={self.dash.token}; HttpOnly; SameSite=Strict; Path=/"
            cookie += "; Secure" if self.dash.tls else ""
            self._send(303, "", headers={"Location": location, "Set-Cookie": cookie})
            return False
        if not self._token_ok(self._given_token()):
            self._refuse_token()
            return False
        return True

    # -- GET -------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query):
            return
        try:
            self._get(url.path, query)
        except EmberkeepError as exc:
            self._text(500, self.dash.redact(str(exc)))
        except Exception as exc:  # a bug: said, not a dropped connection
            self.log_message("unexpected %s: %s", type(exc).__name__, exc)
            self._text(500, f"unexpected {type(exc).__name__} (please report it); see the log")

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        from ..monitor import status
        from ..runner import kinds

        if path == "/favicon.ico":
            self._send(204, "", "image/x-icon")
            return
        if path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in STATIC:
                self._text(404, f"no {path} here")
                return
            data = resources.files(__package__).joinpath("static", name).read_bytes()
            self._send(200, data, STATIC[name])
            return
        range_key = query.get("range", [DEFAULT_RANGE])[0]
        if range_key not in RANGES:
            self._text(400, f"range {range_key!r}: give one of {', '.join(RANGES)}")
            return
        if path == "/api/job":
            job = self.dash.jobs.state()
            self._json(200, job.to_json() if job else None)
            return
        site = self.dash.site()
        if path == "/":
            from . import page

            report = status.collect(site, kinds.kind_for)
            now = report.time
            backups, drills, growth = _history(site, now - RANGES[range_key], now)
            body = page.render(
                report,
                page.History(range_key, now - RANGES[range_key], now, backups, drills, growth),
                job=self.dash.jobs.state(),
                csrf=self.dash.csrf,
                actions=self.dash.actions,
            )
            self._send(200, body)
        elif path in ("/journal", "/api/journal"):
            self._journal(site, query, json_wanted=path.startswith("/api/"))
        elif path in ("/snapshots", "/api/snapshots"):
            self._snapshots(site, query, json_wanted=path.startswith("/api/"))
        elif path == "/api/status":
            self._json(200, status.collect(site, kinds.kind_for).to_json())
        elif path == "/api/history":
            name = query.get("source", [""])[0]
            if name not in {s.name for s in site.config.sources}:
                self._text(404, f"no source named {name!r}; give ?source=NAME")
                return
            now = clock.now()
            since = now - RANGES[range_key]
            backups, drills, _ = _history(site, since, now)
            self._json(
                200,
                {
                    "source": name,
                    "range": range_key,
                    "since": clock.iso(since),
                    "until": clock.iso(now),
                    "backups": [e.to_json() for e in backups.get(name, [])],
                    "drills": [e.to_json() for e in drills.get(name, [])],
                },
            )
        else:
            self._text(404, f"no {path} here")

    def _journal(self, site: Site, query: dict[str, list[str]], *, json_wanted: bool) -> None:
        from . import page

        filters = {k: query[k][0].strip() for k in page.FILTERS if query.get(k, [""])[0].strip()}
        try:
            since = _since(filters["since"]) if "since" in filters else None
        except UsageError as exc:
            self._text(400, str(exc))
            return
        with Journal.open(site) as journal:
            entries = journal.entries(
                kind=filters.get("kind"),
                source=filters.get("source"),
                target=filters.get("target"),
                outcome=filters.get("outcome"),
                since=since,
                newest_first=True,
                limit=JOURNAL_LIMIT,
            )
            jobs = journal.jobs()
        if json_wanted:
            self._json(200, [e.to_json() for e in entries])
            return
        config = site.config
        choices = {
            "source": sorted({s.name for s in config.sources} | {j[1] for j in jobs if j[1]}),
            "target": sorted({t.name for t in config.targets} | {j[2] for j in jobs if j[2]}),
            "kind": sorted(set(KINDS) | {j[0] for j in jobs}),
            "outcome": ["ok", "failed", "running", "interrupted"],
        }
        self._send(200, page.render_journal(config.site.name, entries, filters, choices))

    def _snapshots(self, site: Site, query: dict[str, list[str]], *, json_wanted: bool) -> None:
        from ..policy import retention
        from . import page

        source = query.get("source", [""])[0] or None
        wanted = query.get("target", [""])[0] or None
        now = clock.now()
        found = []
        for target in site.config.targets:
            if wanted is not None and target.name != wanted:
                continue
            held = page.TargetSnapshots(target.name)
            try:
                repo = site.repository(target.name)
                try:
                    held.snapshots = repo.snapshots()
                finally:
                    with contextlib.suppress(Exception):
                        getattr(repo.storage, "close", lambda: None)()
                # the decision `prune --dry-run` takes (runner/maintenance.py run_prune)
                policies = site.config.retention(target.name)
                held.kept = retention.keep(held.snapshots, now, policies)
            except Exception as exc:
                held.error = self.dash.redact(error_text(exc, target.name))
            found.append(held)
        if json_wanted:
            self._json(200, [_snapshots_json(t, source) for t in found])
            return
        self._send(200, page.render_snapshots(site.config.site.name, found, source))

    # -- POST ------------------------------------------------------------------------------

    def do_POST(self) -> None:
        self.close_connection = True  # a refused post's body is left unread: no keep-alive
        url = urlsplit(self.path)
        if not self._allowed({}):
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._text(413, f"a post here carries at most {MAX_BODY} bytes")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if not self.dash.actions:
            self._text(403, "this dashboard is read-only ([web] actions = false)")
            return
        given = self.headers.get("X-CSRF-Token") or form.get("csrf", [""])[0]
        if not hmac.compare_digest(given.encode(), self.dash.csrf.encode()):
            self._text(403, "missing or wrong CSRF token: reload the dashboard and try again")
            return
        kind, _, name = url.path.removeprefix("/").partition("/")
        if kind not in ACTIONS:
            self._text(404, f"no action {url.path} here")
            return
        try:
            config = self.dash.site().config
        except EmberkeepError as exc:
            self._text(500, self.dash.redact(str(exc)))
            return
        of = ACTIONS[kind]
        known = (
            {s.name for s in config.sources} if of == "source" else {t.name for t in config.targets}
        )
        if name not in known:
            self._text(404, f"no {of} named {name!r}")
            return
        job = self.dash.jobs.start(kind, name)
        wants_json = "application/json" in self.headers.get("Accept", "")
        if job is None:
            busy = self.dash.jobs.state()
            what = f"{busy.kind} of {busy.source}" if busy else "a job"
            self._text(409, f"the {what} is still running: one job at a time")
        elif wants_json:
            self._json(202, job.to_json())
        else:
            self._send(303, "", headers={"Location": "/"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dashboard: Dashboard
    tls: ssl.SSLContext | None = None
    banner = ""  # the line that says where it listens

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed TLS handshake or a dropped client: one line, no traceback."""
        exc = sys.exc_info()[1]
        text = self.dashboard.redact(f"{type(exc).__name__}: {exc}")
        sys.stderr.write(f"{client_address[0]} {clock.iso(clock.now())} connection: {text}\n")


def _since(text: str) -> datetime:
    return clock.since(text, "since")


def _snapshots_json(held: Any, source: str | None) -> dict[str, Any]:
    return {
        "target": held.target,
        "error": held.error,
        "snapshots": [
            {
                **s.to_json(held.target),
                "action": "keep" if s.id in held.kept else "remove",
                "kept_by": held.kept.get(s.id),
            }
            for s in held.snapshots
            if source is None or s.source == source
        ],
    }


def _history(
    site: Site, since: datetime, now: datetime
) -> tuple[dict[str, list[Entry]], dict[str, list[Entry]], dict[str, list[Entry]]]:
    """Finished backups and drills per source since ``since``; per target, what changed
    its size in the growth window (backups, copies, prunes) for the estimated-full date."""
    backups: dict[str, list[Entry]] = {}
    drills: dict[str, list[Entry]] = {}
    growth: dict[str, list[Entry]] = {}
    first = min(since, now - GROWTH_WINDOW)
    with Journal.open(site) as journal:
        for entry in journal.entries(since=first):
            if entry.outcome == "running" or entry.started is None:
                continue
            recent = entry.started >= now - GROWTH_WINDOW
            if entry.kind in ("backup", "replicate", "prune") and entry.target and recent:
                growth.setdefault(entry.target, []).append(entry)
            if entry.started < since or entry.source is None:
                continue
            if entry.kind == "backup":
                backups.setdefault(entry.source, []).append(entry)
            elif entry.kind == "drill":
                drills.setdefault(entry.source, []).append(entry)
    return backups, drills, growth


def serve(
    config_file: str | None,
    identity_file: Path | None,
    *,
    ready: Callable[[str], None] = print,
    **options: Any,
) -> int:
    """Run the dashboard until interrupted (Ctrl-C or SIGTERM); the URL goes to ``ready``.

    ``options``: those of ``open_server``."""
    server = open_server(config_file, identity_file, **options)
    ready(server.banner)
    with _stopped_by_sigterm():
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            _close(server)
    return 0


@contextlib.contextmanager
def in_background(
    config_file: str | None,
    identity_file: Path | None,
    *,
    ready: Callable[[str], None] = print,
    job_lock: contextlib.AbstractContextManager[Any] | None = None,
    **options: Any,
) -> Iterator[_Server]:
    """The dashboard served from a thread while the block runs (`emberkeep run --web`):
    its jobs and the block's take ``job_lock`` in turn, one job at a time."""
    server = open_server(config_file, identity_file, **options)
    if job_lock is not None:
        server.dashboard.jobs.run_lock = job_lock
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    ready(server.banner)
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        _close(server)


def _close(server: _Server) -> None:
    server.server_close()
    jobs = server.dashboard.jobs
    if (job := jobs.state()) and job.state == "running":
        print(f"waiting for the backup of {job.source} to finish", file=sys.stderr)
    jobs.join()


def open_server(
    config_file: str | None,
    identity_file: Path | None,
    *,
    listen: str | None = None,
    token_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    insecure_http: bool = False,
    warn: Callable[[str], None] = lambda text: print(f"warning: {text}", file=sys.stderr),
) -> _Server:
    """The server bound and ready to serve, or a UsageError (module docstring: security)."""
    from .. import config

    loaded = config.load(config_file)
    web = loaded.web
    where = "--listen" if listen else f"[web] listen in {loaded.path}"
    host, port = parse_listen(listen or web.listen, where)
    loopback = is_loopback(host, where)
    token_path = token_file or web.token_file
    token = read_token(token_path) if token_path else None
    cert, key = tls_cert or web.tls_cert, tls_key or web.tls_key
    if (cert is None) != (key is None):
        raise UsageError("HTTPS needs both a certificate and its key ([web] tls_cert, tls_key)")
    context = tls_context(cert, key) if cert and key else None
    if not loopback and token is None:
        raise UsageError(
            f"refusing to listen on {host} without a token: it is not a loopback address, so "
            "other hosts could read the dashboard and start backups; set [web] token_file "
            "(or --token-file) to a file holding a token, or listen on 127.0.0.1"
        )
    if not loopback and context is None and not insecure_http:
        raise UsageError(
            f"refusing to listen on {host} over plain HTTP: the token would cross the network "
            "readable; set [web] tls_cert and tls_key (or --tls-cert, --tls-key), or pass "
            "--insecure-http when a TLS proxy in front does it"
        )
    if not loopback and context is None:
        warn(f"serving plain HTTP on {host}: the token crosses the network readable")
    dashboard = Dashboard(
        config_file,
        identity_file,
        token=token,
        host=host,
        loopback=loopback,
        tls=context is not None,
        actions=web.actions,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    _Server.address_family = family
    try:
        server = _Server((host, port), _Handler)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another address "
            "(--listen or [web] listen)"
        ) from exc
    server.dashboard, server.tls = dashboard, context
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if context else "http"
    url = f"{scheme}://{shown}:{server.server_address[1]}/"
    note = f" (give the token from {token_path}: open {url}?token=… once)" if token else ""
    note += "" if web.actions else " (read-only)"
    server.banner = f"dashboard of site {loaded.site.name} at {url}{note}"
    return server


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does (a running backup finishes first)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (a test serving in a thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
