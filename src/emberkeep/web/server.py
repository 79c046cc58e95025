"""`emberkeep web`: the dashboard's HTTP server (standard library only, see web/__init__.py).

``open_server`` binds it where the config or ``--listen`` says, after the checks below
(web/listen.py reads the address, the token file and the TLS files); ``serve`` runs it until
Ctrl-C or SIGTERM, ``in_background`` beside `emberkeep run --web`. Each request is
web/handler.py's (what it serves; the token, Host and CSRF checks); the one job at a time,
web/dashboard.py's.

Loopback by default (``[web] listen``, ``--listen``). Any other address needs a token
(``[web] token_file``, ``--token-file``: one line of at least 16 letters, digits or ``-._~``,
a file only its owner can read), and HTTPS (``[web] tls_cert`` and ``tls_key``) or an
explicit ``--insecure-http`` (warned about); without them the server refuses to start
(exit 2), before binding.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .dashboard import Dashboard
from .handler import Handler, Server
from .listen import is_loopback, parse_listen, read_token, tls_context


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
) -> Iterator[Server]:
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


def _close(server: Server) -> None:
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
) -> Server:
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
    Server.address_family = family
    try:
        server = Server((host, port), Handler)
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
