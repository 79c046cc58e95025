"""Where an sftp:// target lies and how to reach it, parsed from its URL (``__init__``)."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ...errors import UsageError
from .. import urlquery

_OPTIONS = ("key", "known_hosts", "timeout")


@dataclass(frozen=True)
class SftpLocation:
    """Where an sftp:// target lies and how to reach it, parsed from its URL."""

    user: str
    host: str
    port: int
    root: str  # folder on the server; relative names are relative to the user's home
    key_file: Path | None
    known_hosts: Path
    timeout: float

    @classmethod
    def parse(cls, url: str, label: str) -> SftpLocation:
        parsed, query = urlquery.parse(url, label, _OPTIONS)
        if parsed.password is not None:
            raise UsageError(
                f"target {label}: sftp URLs take no password (only keys); remove it from the "
                "URL, and use ?key=FILE or the SSH agent"
            )
        if not parsed.hostname:
            raise UsageError(f"target {label}: give a host: sftp://user@host[:port]/path")
        try:
            port = parsed.port or 22
        except ValueError:
            raise UsageError(f"target {label}: the port in the sftp URL is not a number") from None
        path = unquote(parsed.path)
        if path in ("/~", "/~/"):
            root = "."
        elif path.startswith("/~/"):
            root = path[3:].rstrip("/")
        else:
            root = path.rstrip("/")
        if not root:
            raise UsageError(
                f"target {label}: give a folder: sftp://user@host/srv/backups (absolute) or "
                "sftp://user@host/~/backups (in the user's home)"
            )
        key = urlquery.last(query, "key")
        known_hosts = urlquery.last(query, "known_hosts")
        return cls(
            user=unquote(parsed.username) if parsed.username else getpass.getuser(),
            host=parsed.hostname,
            port=port,
            root=root,
            key_file=Path(key).expanduser() if key else None,
            known_hosts=Path(known_hosts or "~/.ssh/known_hosts").expanduser(),
            timeout=urlquery.timeout(urlquery.last(query, "timeout"), label),
        )

    @property
    def host_entry(self) -> str:
        """The host's name as known_hosts spells it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def keyscan(self) -> str:
        """The command that adds the host's keys to our known_hosts file."""
        port = "" if self.port == 22 else f"-p {self.port} "
        return f"ssh-keyscan {port}{self.host} >> {self.known_hosts}"
