"""Leases: shared ones announce running backups, one exclusive one guards prune.

Backups never wait for a lease: they only announce themselves, so prune can tell whether
a backup that began before it condemned a pack might still reference that pack. A lease
is live while it is refreshed; one not refreshed for ``STALE_AFTER``, or one whose process
on this very host is gone, is stale and ignored (or broken, for the exclusive one).

What others see of a lease and what its holder believes can part, and both sides guard
against that:

- *The holder.* Others judge a lease by the time written in it, so a holder whose refreshes
  fail, or whose host is paused or suspended, is stale for everyone while it runs on. It
  remembers when a write of its lease last succeeded (on a clock that counts suspended
  time), and ``ensure_live`` refuses once that is older than ``STALE_AFTER`` less
  ``RENEW_MARGIN``, as restic does: a backup asks before it commits its snapshot. A lease
  that was removed or replaced (found stale, broken) is lost for good: never written back.
- *The others.* Only a lease read successfully and found stale is broken: one that cannot
  be read may be live, so reading it fails the run instead. Every lease holds a random
  token; the taker of the exclusive lease reads it back and goes on only if the token is
  its own, and refresh and release touch a lease only while it is. Storage has no
  conditional delete, so two prunes breaking one stale lease still race: the slower one's
  delete removes the faster one's new lease if it lands after the faster read its own back.
  A taker that broke a lease waits ``SETTLE`` before reading back, which covers a slow
  request; a longer stall (the slower host paused between its read and its delete) shows
  at the faster one's next refresh, which finds the lease lost.

Leases written without a token (by earlier versions) are read and judged by staleness.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from .. import clock
from ..durations import format_duration
from ..errors import (
    AlreadyExists,
    EmberkeepError,
    LockedError,
    NotFound,
    RepositoryError,
    StorageError,
    UsageError,
)
from ..storage.base import Storage
from .layout import LOCKS

STALE_AFTER = timedelta(minutes=5)
REFRESH_EVERY = 60.0  # seconds
RETRY_EVERY = 15.0  # seconds to the next try after a refresh failed
RENEW_MARGIN = 90.0  # seconds before others may find it stale that a holder stops trusting it
SETTLE = 2.0  # seconds a taker that broke a lease waits before reading its own back
EXCLUSIVE = f"{LOCKS}/exclusive"


class LeaseLost(EmberkeepError):
    """A lease this process holds may be stale for others, or was taken from it."""


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    kind: str
    host: str
    pid: int
    started: datetime
    refreshed: datetime
    token: str | None = None  # None: written by an earlier version

    def is_stale(self, now: datetime) -> bool:
        if now - self.refreshed > STALE_AFTER:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def describe(self) -> str:
        return f"{self.kind} by pid {self.pid} on {self.host} since {clock.iso(self.started)}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ticks() -> float:
    """Seconds on a clock that never goes back and, where it can (Linux), counts the time
    the host was suspended: a lease goes stale for others while its host sleeps too."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.monotonic() if boottime is None else time.clock_gettime(boottime)


def read_lease(storage: Storage, name: str) -> LeaseInfo | None:
    """The lease ``name``, or None when there is none.

    A lease that cannot be read raises (StorageError; RepositoryError when its bytes are
    not a lease): it may be a live one, so no caller may take it for absent or stale.
    """
    try:
        data = storage.get(name)
    except NotFound:
        return None
    try:
        raw = json.loads(data)
        return LeaseInfo(
            name,
            raw["kind"],
            raw["host"],
            int(raw["pid"]),
            clock.parse_time(raw["started"]),
            clock.parse_time(raw["refreshed"]),
            raw.get("token"),
        )
    except (ValueError, KeyError, TypeError, AttributeError, UsageError) as exc:
        raise RepositoryError(
            f"target {storage.label}: {name} is not a lease emberkeep can read, so nobody can "
            "tell whether the run that wrote it still goes on; if no emberkeep process uses "
            "this target, delete that object"
        ) from exc


def read_leases(storage: Storage) -> list[LeaseInfo]:
    """Every lease; one deleted while listing is left out, an unreadable one raises."""
    found = (read_lease(storage, info.name) for info in storage.list(f"{LOCKS}/"))
    return [lease for lease in found if lease is not None]


def live_backups(storage: Storage, now: datetime) -> list[LeaseInfo]:
    return [ls for ls in read_leases(storage) if ls.kind == "backup" and not ls.is_stale(now)]


class Lease:
    """A lease held for the life of a ``with`` block, refreshed by a daemon thread."""

    def __init__(self, storage: Storage, kind: str) -> None:
        self.storage = storage
        self.kind = kind
        self.name = EXCLUSIVE if kind == "exclusive" else f"{LOCKS}/{kind}-{secrets.token_hex(8)}"
        self.token = secrets.token_hex(16)
        self.started = clock.now()
        self.broken: list[LeaseInfo] = []
        self._renewed = 0.0  # _ticks() before the last write of the lease that succeeded
        self._lost: str | None = None  # how the lease stopped being ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": self.started.isoformat(),
                "refreshed": clock.now().isoformat(),
                "token": self.token,
            }
        ).encode()

    def _write(self, *, overwrite: bool) -> None:
        """Write the lease with the current time; once that succeeded, remember when."""
        began = _ticks()
        self.storage.put(self.name, self._body(), overwrite=overwrite)
        self._renewed = began

    def _is_ours(self, holder: LeaseInfo | None) -> bool:
        return holder is not None and holder.token == self.token

    def __enter__(self) -> Lease:
        if self.kind == "exclusive":
            self._take_exclusive()
        else:
            self._write(overwrite=False)
        self._thread = threading.Thread(target=self._refresh, daemon=True, name="lease")
        self._thread.start()
        return self

    def _take_exclusive(self) -> None:
        for _ in range(3):
            try:
                self._write(overwrite=False)
            except AlreadyExists:
                self._break_if_stale()
                continue
            self._confirm()
            return
        raise LockedError(f"target {self.storage.label}: could not take the lease; try again")

    def _break_if_stale(self) -> None:
        """Delete the exclusive lease if it could be read and is stale; raise if it is live."""
        try:
            holder = read_lease(self.storage, EXCLUSIVE)
        except StorageError as exc:
            raise LockedError(
                f"target {self.storage.label}: its exclusive lease could not be read ({exc}); "
                "it may be a live prune's, so it is left alone; try again"
            ) from exc
        if holder is None:
            return  # released meanwhile
        if not holder.is_stale(clock.now()):
            raise LockedError(
                f"target {self.storage.label} is locked ({holder.describe()}); wait for "
                "it to finish. If that process is gone, the lease goes stale "
                f"{int(STALE_AFTER.total_seconds() // 60)} minutes after its last refresh"
            )
        self.broken.append(holder)
        self.storage.delete(EXCLUSIVE)

    def _confirm(self) -> None:
        """Read the lease just taken back: another taker may have replaced it (see above)."""
        if self.broken:
            time.sleep(SETTLE)
        holder = read_lease(self.storage, self.name)
        if not self._is_ours(holder):
            raise LockedError(
                f"target {self.storage.label}: another process took the exclusive lease at "
                f"the same moment{f' ({holder.describe()})' if holder else ''}; try again"
            )

    def _refresh(self) -> None:
        wait = REFRESH_EVERY
        while self._lost is None and not self._stop.wait(wait):
            try:
                self._renew()
            except Exception:  # the target did not answer: ensure_live tells when too long
                wait = RETRY_EVERY
            else:
                wait = REFRESH_EVERY

    def _renew(self) -> None:
        """Write the lease again with a new time, if it is still ours; else it is lost."""
        holder = read_lease(self.storage, self.name)
        if self._is_ours(holder):
            self._write(overwrite=True)
        elif holder is None:
            self._lost = "was removed by another process (which found it stale)"
        else:
            self._lost = f"was taken by another process ({holder.describe()})"

    def ensure_live(self, consequence: str) -> None:
        """Raise LeaseLost unless every other process still sees this lease live.

        ``consequence`` completes the message: what was therefore not done.
        """
        why = self._lost or self._overdue()
        if why is not None:
            raise LeaseLost(
                f"target {self.storage.label}: this run's {self.kind} lease there {why}, "
                f"so {consequence}"
            )

    def _overdue(self) -> str | None:
        """Why the lease may be stale for others by now, or None while it cannot be."""
        age = _ticks() - self._renewed
        if age <= STALE_AFTER.total_seconds() - RENEW_MARGIN:
            return None
        return (
            f"was last renewed {format_duration(timedelta(seconds=round(age)))} ago, while "
            f"others count a lease not renewed for {format_duration(STALE_AFTER)} as stale "
            "(this host was paused or suspended, or the target did not answer)"
        )

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost is not None:
            return
        try:
            if self._is_ours(read_lease(self.storage, self.name)):
                self.storage.delete(self.name)
        except (StorageError, RepositoryError):
            # Release is tidying: the work under the lease is done (a snapshot may be
            # committed), so a target that does not answer now must not fail it; the
            # lease goes stale on its own.
            pass
