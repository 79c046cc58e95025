"""The dashboard's requests: the routes, and the checks every request passes first.

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
- ``POST /backup/SOURCE``, ``/drill/SOURCE``, ``/check/TARGET`` run that job (web/dashboard.py)
  in a thread: one job at a time (409 while one runs). A form post is answered 303 to ``/``,
  a post asking for JSON 202 with the job.

The checks (web/server.py: where it may listen):

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
import json
import ssl
import sys
from datetime import datetime, timedelta
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .. import clock
from ..errors import EmberkeepError, UsageError
from ..journal import KINDS, Journal
from ..site import Site
from .dashboard import Dashboard
from .data import history, snapshots_json, target_snapshots

COOKIE = "emberkeep_token"
MAX_BODY = 4096  # a form post carries the CSRF token and nothing else
RANGES = {"7d": timedelta(days=7), "30d": timedelta(days=30), "1y": timedelta(days=365)}
DEFAULT_RANGE = "30d"
ACTIONS = {"backup": "source", "drill": "source", "check": "target"}  # POST /KIND/NAME
JOURNAL_LIMIT = 1000  # rows on the journal page; `emberkeep log` has them all
STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class Handler(BaseHTTPRequestHandler):
    server: Server
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
            backups, drills, growth = history(site, now - RANGES[range_key], now)
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
            backups, drills, _ = history(site, since, now)
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
        from . import page

        source = query.get("source", [""])[0] or None
        wanted = query.get("target", [""])[0] or None
        found = target_snapshots(site, wanted, self.dash.redact)
        if json_wanted:
            self._json(200, [snapshots_json(t, source) for t in found])
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


class Server(ThreadingHTTPServer):
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
