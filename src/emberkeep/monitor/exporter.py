"""What `emberkeep run` does between jobs for monitoring (``Exporter``).

After each batch it collects the status, sends the rpo/rto/low-space alerts
(monitor/alerts.py), writes the metrics (monitor/metrics.py) to the textfile for
node_exporter's textfile collector (atomically, mode 0644) and keeps the text that its
``/metrics`` server (127.0.0.1 only) serves; a scrape later than ``MAX_AGE`` seconds after
the last collection collects again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..config import Source
from ..journal import Journal
from ..site import Site
from . import status as status_mod
from .alerts import send_alerts
from .metrics import CONTENT_TYPE, collect_text, render
from .notify import Notifier, channels_of
from .status import KindStatus

MAX_AGE = 30.0  # seconds a served text is reused before it is collected again


def write_textfile(path: Path, text: str) -> None:
    """Atomically (node_exporter must never read half a file), readable by node_exporter."""
    from ..fsutil import write_atomic

    write_atomic(path, text.encode(), mode=0o644)


class Exporter:
    """Between the scheduler's jobs: status alerts, the textfile, the served text."""

    def __init__(
        self,
        site: Site,
        kind_for: Callable[[Source], KindStatus],
        *,
        port: int | None = None,
        textfile: Path | None = None,
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        if port is not None and not 1 <= port <= 65535:
            from ..errors import UsageError

            raise UsageError(f"--metrics-port {port}: give a port from 1 to 65535")
        self.site = site
        self.kind_for = kind_for
        self.port = port
        self.textfile = textfile
        self.warn = warn
        self.server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._text: str | None = None
        self._at = 0.0
        self.active = bool(port or textfile or channels_of(site.config.notify))

    def refresh(self) -> None:
        """Collect, alert, write: after a batch of jobs (and at the start)."""
        if not self.active:
            return
        try:
            report = status_mod.collect(self.site, self.kind_for)
            with Journal.open(self.site) as journal:
                notifier = Notifier(
                    self.site.config.site.name, self.site.config.notify, journal, warn=self.warn
                )
                send_alerts(report, notifier)
            if self.port or self.textfile:
                text = render(self.site, report)
                with self._lock:
                    self._text, self._at = text, time.monotonic()
                if self.textfile:
                    write_textfile(self.textfile, text)
        except Exception as exc:  # monitoring never stops the scheduler
            self.warn(f"status, alerts or metrics not updated: {type(exc).__name__}: {exc}")

    def text(self) -> str:
        with self._lock:
            if self._text is None or time.monotonic() - self._at > MAX_AGE:
                self._text, self._at = collect_text(self.site, self.kind_for), time.monotonic()
            return self._text

    @contextlib.contextmanager
    def serving(self) -> Iterator[Exporter]:
        """Serve ``/metrics`` on 127.0.0.1:port (when a port is set) while the block runs."""
        if not self.port:
            yield self
            return
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is here")
                    return
                try:
                    body = exporter.text().encode()
                except Exception as exc:
                    self.send_error(500, f"{type(exc).__name__}: {exc}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes are not news

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        except OSError as exc:
            from ..errors import UsageError

            raise UsageError(
                f"cannot serve metrics on 127.0.0.1:{self.port}: {exc.strerror or exc}; "
                "choose another port (--metrics-port or [monitor] metrics_port)"
            ) from exc
        self.server.daemon_threads = True
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=5)
