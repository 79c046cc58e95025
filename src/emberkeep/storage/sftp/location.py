"""Where an sftp:// target lies and how to reach it, parsed from its URL (``__init__``)."""

from __future__ import annotations

import getpass
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ...errors import UsageError
from .. import urlquery

_OPTIONS = ("key", "known_hosts", "timeout", "ssh", "ssh_config")
CLIENTS = ("openssh", "paramiko")


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
    client: str = "paramiko"  # the SSH client: "openssh" (the ssh binary) or "paramiko"
    ssh_config: Path | None = None  # ``ssh -F FILE``
    # Whether the URL named them: OpenSSH takes the rest from the ssh config (a host alias).
    user_given: bool = True
    port_given: bool = True
    known_hosts_given: bool = True

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
        if parsed.hostname.startswith("-"):
            raise UsageError(f"target {label}: the host in the sftp URL starts with '-'")
        user = unquote(parsed.username) if parsed.username else getpass.getuser()
        for what, value in (("host", parsed.hostname), ("user", user)):
            if bad := _unsafe(value):
                raise UsageError(
                    f"target {label}: the {what} in the sftp URL holds {bad}, which no host or "
                    "user name has (an ssh config's ProxyCommand or Match exec would pass it "
                    f"to a shell); fix the {what} in the target URL"
                )
        key = urlquery.last(query, "key")
        known_hosts = urlquery.last(query, "known_hosts")
        ssh_config = urlquery.last(query, "ssh_config")
        return cls(
            user=user,
            host=parsed.hostname,
            port=port,
            root=root,
            key_file=Path(key).expanduser() if key else None,
            known_hosts=Path(known_hosts or "~/.ssh/known_hosts").expanduser(),
            timeout=urlquery.timeout(urlquery.last(query, "timeout"), label),
            client=_client(urlquery.last(query, "ssh"), ssh_config, label),
            ssh_config=Path(ssh_config).expanduser() if ssh_config else None,
            user_given=parsed.username is not None,
            port_given=parsed.port is not None,
            known_hosts_given=known_hosts is not None,
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


_SHELL = set("'\"`$\\;&<>|(){}*?[]!#~")


def _unsafe(value: str) -> str | None:
    """What in a host or user name a shell would read (as OpenSSH 9.6 refuses them)."""
    if value.startswith("-"):
        return "a leading '-'"
    for char in value:
        if char in _SHELL or not char.isprintable() or char.isspace():
            return repr(char)
    return None


def _client(value: str | None, ssh_config: str | None, label: str) -> str:
    """``?ssh=``: OpenSSH by default where its ``ssh`` is on PATH (or an ssh config is
    named), else paramiko."""
    if value is None:
        return "openssh" if ssh_config or shutil.which("ssh") else "paramiko"
    if value not in CLIENTS:
        raise UsageError(
            f"target {label}: ssh={value!r} in the sftp URL is not one of {', '.join(CLIENTS)}"
        )
    if value == "paramiko" and ssh_config:
        raise UsageError(
            f"target {label}: ssh_config= is read by OpenSSH's ssh only; drop ssh=paramiko "
            "or ssh_config= from the sftp URL"
        )
    return value
