"""Leases: shared ones announce running backups, one exclusive one guards prune.

Backups never wait for a lease: they only announce themselves, so prune can tell whether
a backup that began before it condemned a pack might still reference that pack. A lease
is live while it is refreshed; one not refreshed for ``STALE_AFTER``, or one whose process
on this very host is gone, is stale and ignored (or broken, for the exclusive one).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from .. import clock
from ..errors import AlreadyExists, LockedError
from ..storage.base import Storage
from .layout import LOCKS

STALE_AFTER = timedelta(minutes=5)
REFRESH_EVERY = 60.0  # seconds
EXCLUSIVE = f"{LOCKS}/exclusive"


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    kind: str
    host: str
    pid: int
    started: datetime
    refreshed: datetime

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


def read_leases(storage: Storage) -> list[LeaseInfo]:
    leases = []
    for info in storage.list(f"{LOCKS}/"):
        with contextlib.suppress(Exception):  # a lease deleted while listing, or half-written
            raw = json.loads(storage.get(info.name))
            leases.append(
                LeaseInfo(
                    info.name,
                    raw["kind"],
                    raw["host"],
                    int(raw["pid"]),
                    clock.parse_time(raw["started"]),
                    clock.parse_time(raw["refreshed"]),
                )
            )
    return leases


def live_backups(storage: Storage, now: datetime) -> list[LeaseInfo]:
    return [ls for ls in read_leases(storage) if ls.kind == "backup" and not ls.is_stale(now)]


class Lease:
    """A lease held for the life of a ``with`` block, refreshed by a daemon thread."""

    def __init__(self, storage: Storage, kind: str) -> None:
        self.storage = storage
        self.kind = kind
        self.name = EXCLUSIVE if kind == "exclusive" else f"{LOCKS}/{kind}-{secrets.token_hex(8)}"
        self.started = clock.now()
        self.broken: list[LeaseInfo] = []
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
            }
        ).encode()

    def __enter__(self) -> Lease:
        if self.kind == "exclusive":
            self._take_exclusive()
        else:
            self.storage.put(self.name, self._body())
        self._thread = threading.Thread(target=self._refresh, daemon=True, name="lease")
        self._thread.start()
        return self

    def _take_exclusive(self) -> None:
        for _ in range(2):
            try:
                self.storage.put(self.name, self._body())
                return
            except AlreadyExists:
                holder = next(
                    (ls for ls in read_leases(self.storage) if ls.name == EXCLUSIVE), None
                )
                if holder is not None and not holder.is_stale(clock.now()):
                    raise LockedError(
                        f"target {self.storage.label} is locked ({holder.describe()}); wait for "
                        "it to finish. If that process is gone, the lease goes stale "
                        f"{int(STALE_AFTER.total_seconds() // 60)} minutes after its last refresh"
                    ) from None
                if holder is not None:
                    self.broken.append(holder)
                self.storage.delete(self.name)
        raise LockedError(f"target {self.storage.label}: could not take the lease; try again")

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            with contextlib.suppress(Exception):
                self.storage.put(self.name, self._body(), overwrite=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.storage.delete(self.name)
