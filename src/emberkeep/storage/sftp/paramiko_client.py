"""Sessions through paramiko: one SSH connection in Python carries up to ``pool.CHANNELS``
SFTP sessions, each on its own channel.

paramiko's transport thread logs its own failures (with a traceback when a server never sends
its banner); the error raised here says the same in one line, so its logger is given a
handler that drops them rather than Python's fallback that prints to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import paramiko

from ...errors import StorageError
from . import failures
from .failures import Dropped
from .location import SftpLocation
from .session import Session

CHANNEL_WINDOW = 8 * 1024 * 1024  # SSH flow-control window: more than protocol.IN_FLIGHT
CHANNEL_PACKET = 256 * 1024  # largest SSH packet we accept (the server sends fewer, larger)

logging.getLogger("paramiko").addHandler(logging.NullHandler())


class _UnknownHost(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse a host whose key is not in known_hosts, keeping the key for the message."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHost(key)


class ParamikoConnector:
    """One paramiko connection, opened (again) when needed, and sessions on it."""

    def __init__(self, label: str, loc: SftpLocation) -> None:
        self.label = label
        self.loc = loc
        self._lock = threading.Lock()
        self._ssh: paramiko.SSHClient | None = None

    def open_session(self) -> Session:
        with self._lock:
            transport = self._transport()
        try:
            channel = transport.open_session(
                window_size=CHANNEL_WINDOW,
                max_packet_size=CHANNEL_PACKET,
                timeout=self.loc.timeout,
            )
            channel.settimeout(self.loc.timeout)
            channel.invoke_subsystem("sftp")
            sftp = Session(channel)
            sftp.learn_limits()
            return sftp
        except TimeoutError as exc:
            raise failures.timed_out(self.label, self.loc, "opening an SFTP session") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # A connection that died under it, most likely; tried again on a new one, and
            # named a refusal only if the connection lived on through every try.
            alive = transport.is_active()
            self._forget(transport)
            raise Dropped(exc, refused_session=alive) from exc

    def forget(self, sftp: Session) -> bool:
        channel = sftp.get_channel()
        return self._forget(channel.get_transport() if channel is not None else None)

    def transport_error(self, sftp: Session) -> BaseException | None:
        """What ended a session's connection, as its transport thread saw it (a reset, say),
        where the call itself saw only the end of its channel."""
        channel = sftp.get_channel()
        transport = channel.get_transport() if channel is not None else None
        saved = getattr(transport, "saved_exception", None)
        return saved if isinstance(saved, BaseException) else None

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _forget(self, transport: paramiko.Transport | None) -> bool:
        with self._lock:
            current = self._ssh.get_transport() if self._ssh is not None else None
            if transport is None or current is transport:
                self._drop_connection()
                return True
        return False

    def _transport(self) -> paramiko.Transport:
        """The live connection, opened (again) when needed; call with the lock held."""
        transport = self._ssh.get_transport() if self._ssh is not None else None
        if transport is None or not transport.is_active():
            self._drop_connection()
            self._ssh = self._connect()
            transport = self._ssh.get_transport()
            assert transport is not None
        return transport

    def _drop_connection(self) -> None:
        if self._ssh is not None:
            with contextlib.suppress(Exception):
                self._ssh.close()
            self._ssh = None

    def _connect(self) -> paramiko.SSHClient:
        loc = self.loc
        if loc.key_file is not None and not loc.key_file.is_file():
            raise failures.missing_key(self.label, loc)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_RejectUnknown())
        if loc.known_hosts.is_file():
            try:
                client.load_system_host_keys(str(loc.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise StorageError(
                    f"target {self.label}: cannot read known_hosts file {loc.known_hosts} "
                    f"({exc}); fix or replace it"
                ) from exc
        started = time.monotonic()
        try:
            client.connect(
                loc.host,
                loc.port,
                username=loc.user,
                key_filename=str(loc.key_file) if loc.key_file else None,
                allow_agent=loc.key_file is None,
                look_for_keys=loc.key_file is None,
                timeout=loc.timeout,
                banner_timeout=loc.timeout,
                auth_timeout=loc.timeout,
                channel_timeout=loc.timeout,
            )
        except BaseException as exc:
            client.close()
            # paramiko reports a server that never sends its banner as a protocol error.
            silent = time.monotonic() - started >= 0.95 * loc.timeout
            if silent and isinstance(exc, (EOFError, paramiko.SSHException)):
                raise failures.timed_out(self.label, loc, "connecting") from exc
            if _cut_off(exc):
                raise Dropped(exc) from exc
            raise self._connect_error(exc) from exc
        return client

    def _connect_error(self, exc: BaseException) -> BaseException:
        label, loc = self.label, self.loc
        if isinstance(exc, _UnknownHost):
            return failures.unknown_host(label, loc, _fingerprint(exc.key))
        if isinstance(exc, paramiko.BadHostKeyException):
            return failures.changed_host(label, loc, _fingerprint(exc.key))
        if isinstance(exc, paramiko.PasswordRequiredException):
            return failures.passphrase(label, loc)
        if isinstance(exc, paramiko.AuthenticationException) or (
            isinstance(exc, paramiko.SSHException) and "authentication" in str(exc).lower()
        ):
            return failures.refused_user(label, loc)
        if isinstance(exc, TimeoutError):
            return failures.timed_out(label, loc, "connecting")
        if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                reason = "connection refused"
            return failures.cannot_connect(label, loc, reason)
        return exc


def _cut_off(exc: BaseException) -> bool:
    """Whether a failed connect was cut off midway (reset, closed) rather than refused or
    denied: worth trying again, as a dropped call is."""
    if isinstance(exc, (EOFError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return True
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    return isinstance(exc, paramiko.SSHException) and (
        "reset" in str(exc).lower() or "eof" in str(exc).lower() or "closed" in str(exc).lower()
    )


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"
