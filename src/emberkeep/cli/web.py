"""`web`: the dashboard."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import ui
from ..site import Site
from .common import Subparsers


def add_web(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "web", parents=[common], help="the dashboard: status, history charts, back up now"
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where to listen (default [web] listen, else 127.0.0.1:8470); any address but "
        "loopback needs a token",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="the token every request must carry (default [web] token_file); mode 0600",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS ([web] tls_cert)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="its key ([web] tls_key)")
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (a TLS proxy in front)",
    )
    p.set_defaults(handler=cmd_web)


def cmd_web(site: Site, args: argparse.Namespace) -> int:
    from ..web.server import serve

    def ready(text: str) -> None:
        print(text, flush=True)  # a line to wait for: a test or a script reads the URL here

    config_file = str(site.config.path) if site.config.path else args.config
    return serve(
        config_file,
        args.identity,
        listen=args.listen,
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure_http=args.insecure_http,
        ready=ready,
        warn=ui.warning,
    )
