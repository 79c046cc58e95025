"""Where the dashboard listens and what guards it: the address, the token file, TLS.

Each refuses bad input by name with the fix (web/server.py: the rules that combine them).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import stat
from pathlib import Path

from ..errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:8470"
MIN_TOKEN = 16


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
