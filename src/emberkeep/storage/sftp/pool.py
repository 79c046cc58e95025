"""A pool of SFTP sessions with retries: a call whose connection drops runs again.

One caller uses a session at a time (a paramiko SFTP session serves one waiting caller at a
time); up to ``CHANNELS`` sessions are open at once. A dropped or reset connection (end of file,
ECONNRESET, a transport that died under the call, a session that could not be opened on it)
is reopened and the call tried again, up to ``ATTEMPTS`` times in all with a growing pause
(``BACKOFF``); the error after the last try names the drop, the host and what was being done.
A silent server fails the call at once after ``timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import paramiko

from ...errors import EmberkeepError, StorageError
from . import failures
from .failures import Dropped
from .location import SftpLocation
from .session import Session, quietly_close

T = TypeVar("T")

CHANNELS = 8  # SFTP sessions per target; OpenSSH allows 10 (MaxSessions) by default
ATTEMPTS = 4  # tries of a call whose connection dropped, the first included
BACKOFF = 0.5  # seconds before the first retry; doubled before each next one
# Exceptions that say the connection went away under a call, whatever the session looks like.
DROPS = (EOFError, ConnectionError, paramiko.SSHException)


class Connector(Protocol):
    """How sessions reach the server: one SSH client's way of opening them."""

    def open_session(self) -> Session:
        """A new session; ``Dropped`` when the connection went away while opening it."""
        ...

    def forget(self, sftp: Session) -> bool:
        """The connection under ``sftp`` dropped: close it. True when the idle sessions
        went with it (they shared it)."""
        ...

    def transport_error(self, sftp: Session) -> BaseException | None:
        """What ended a session's connection, where the call saw only the end of it."""
        ...

    def close(self) -> None: ...


class SessionPool:
    """Sessions checked out one caller at a time, and the retry loop around each call."""

    def __init__(self, label: str, loc: SftpLocation, connector: Connector) -> None:
        self.label = label
        self.loc = loc
        self.connector = connector
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(CHANNELS)
        self._idle: list[Session] = []

    def run(self, what: str, op: Callable[[Session], T]) -> T:
        """Run ``op`` on a session; when the connection drops, reconnect and run it again,
        up to ``ATTEMPTS`` times in all (module docstring)."""
        drops: list[BaseException] = []
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(min(BACKOFF * 2 ** (attempt - 1), self.loc.timeout))
            try:
                sftp = self._checkout()
            except Dropped as exc:
                drops.append(exc)
                continue
            try:
                result = op(sftp)
            except TimeoutError as exc:
                if not sftp.usable():
                    # The connection died while we waited (paramiko's transport thread saw
                    # the reset and the channel's wait ran out): a drop, not a silent server.
                    drops.append(self.connector.transport_error(sftp) or exc)
                    self._discard(sftp, dropped=True)
                    continue
                self._discard(sftp)
                raise failures.timed_out(self.label, self.loc, what) from exc
            except EmberkeepError:
                self._checkin(sftp)
                raise
            except Exception as exc:
                if sftp.usable() and not isinstance(exc, DROPS):
                    # An error status leaves the session in step; anything else may not.
                    (self._checkin if isinstance(exc, OSError) else self._discard)(sftp)
                    raise failures.failed(self.label, self.loc, what, exc) from exc
                drops.append(self.connector.transport_error(sftp) or exc)
                self._discard(sftp, dropped=True)
                continue
            self._checkin(sftp)
            return result
        raise failures.gave_up(self.label, self.loc, what, drops) from drops[-1]

    def close(self) -> None:
        """Close every session and the connection (a later call opens new ones)."""
        with self._lock:
            self._close_idle()
            self.connector.close()

    def _checkout(self) -> Session:
        if not self._slots.acquire(timeout=max(60.0, 4 * self.loc.timeout)):
            raise StorageError(f"target {self.label}: every SFTP session stayed busy; try again")
        try:
            with self._lock:
                while self._idle:
                    sftp = self._idle.pop()
                    if sftp.usable():
                        return sftp
                    quietly_close(sftp)
            return self.connector.open_session()
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, sftp: Session) -> None:
        with self._lock:
            self._idle.append(sftp)
        self._slots.release()

    def _discard(self, sftp: Session, *, dropped: bool = False) -> None:
        """Close a session; when its connection dropped, close that too (if it is still
        the current one), so the next call opens a new one rather than a session on it."""
        if dropped and self.connector.forget(sftp):
            with self._lock:
                self._close_idle()
        quietly_close(sftp)
        self._slots.release()

    def _close_idle(self) -> None:
        for sftp in self._idle:
            quietly_close(sftp)
        self._idle.clear()
