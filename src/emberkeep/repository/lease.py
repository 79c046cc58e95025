"""Leases: shared ones announce running backups, one exclusive one guards prune.

Backups never wait for a lease: they only announce themselves, so prune can tell whether
a backup that began before it condemned a pack might still reference that pack. A lease
is live while its holder runs and refreshes it; who judges it never compares a time
written by another host with its own clock (hosts' clocks may be a day apart):

- A lease that names the judge's own host is live exactly while its process runs (the
  pid, and where Linux tells, the boot and the process's start time, so a reused pid or a
  reboot is not taken for it). Such a lease is never broken while its process lives.
- A lease of another host is judged by its content: its holder rewrites it every
  ``REFRESH_EVERY`` with a new ``seq``, so one the judge has seen unchanged for
  ``STALE_AFTER`` on its own clock of elapsed time is stale (``LeaseWatch``). The judge
  remembers what it saw in its state dir, so a prune tomorrow knows a lease it saw today.

What others see of a lease and what its holder believes can part, and both sides guard
against that:

- *The holder.* A holder whose refreshes fail, or whose host is paused or suspended, is
  stale for the others while it runs on. It remembers when a write of its lease last
  succeeded (on a clock that counts suspended time), and ``ensure_live`` refuses once that
  is older than ``STALE_AFTER`` less ``RENEW_MARGIN``, as restic does: a backup asks before
  it commits its snapshot. A judge starts counting only when it first sees a content, which
  is after the holder wrote it, so the holder always gives up first. A lease that was
  removed or replaced (found stale, broken) is lost for good: never written back.
- *The others.* Only a lease read successfully and found stale is broken: one that cannot
  be read may be live, so reading it fails the run instead. Every lease holds a random
  token; the taker of the exclusive lease reads it back and goes on only if the token is
  its own, and refresh and release touch a lease only while it is. Storage has no
  conditional delete, so two prunes breaking one stale lease still race: the slower one's
  delete removes the faster one's new lease if it lands after the faster read its own back.
  A taker that broke a lease waits ``SETTLE`` before reading back, which covers a slow
  request; a longer stall (the slower host paused between its read and its delete) shows
  at the faster one's next refresh, which finds the lease lost.

Leases written without a token, seq or boot (by earlier versions) are judged the same way:
their content changes at each refresh too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from .. import clock, statefile
from ..durations import format_duration
from ..errors import (
    AlreadyExists,
    EmberkeepError,
    IntegrityError,
    LockedError,
    NotFound,
    RepositoryError,
    StorageError,
    UsageError,
)
from ..fsutil import pid_alive, write_atomic
from ..storage.base import Storage, get_at_most
from .layout import LOCKS

STALE_AFTER = timedelta(minutes=5)
REFRESH_EVERY = 60.0  # seconds
RETRY_EVERY = 15.0  # seconds to the next try after a refresh failed
RENEW_MARGIN = 90.0  # seconds before others may find it stale that a holder stops trusting it
SETTLE = 2.0  # seconds a taker that broke a lease waits before reading its own back
EXCLUSIVE = f"{LOCKS}/exclusive"
TEMP_READ_LIMIT = 64 * 1024  # bytes of a lease write's temp file read to judge it


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
    seq: int | None = None  # the holder's count of its writes of this lease
    boot: str | None = None  # the holder host's boot id (Linux), when it knew it
    process_start: int | None = None  # the holder's start, in ticks since boot (Linux)
    digest: str = ""  # SHA-256 of the lease's bytes: what a judge watches change

    def describe(self) -> str:
        return f"{self.kind} by pid {self.pid} on {self.host} since {clock.iso(self.started)}"


def boot_id() -> str | None:
    """This boot of this host (Linux), or None where the system does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])  # field 22, starttime; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def holder_runs_here(lease: LeaseInfo) -> bool:
    """Whether the process holding ``lease``, which names this host, still runs."""
    here = boot_id()
    if lease.boot and here and lease.boot != here:
        return False  # this host was restarted since: the holder is gone
    if not pid_alive(lease.pid):
        return False
    if lease.process_start is not None:
        started = process_start(lease.pid)
        if started is not None and started != lease.process_start:
            return False  # the pid was reused by another process
    return True


def _ticks() -> float:
    """Seconds on a clock that never goes back and, where it can (Linux), counts the time
    the host was suspended: a lease goes stale for others while its host sleeps too. Within
    one boot it is the same clock in every process of the host."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.monotonic() if boottime is None else time.clock_gettime(boottime)


class LeaseWatch:
    """How long this host has seen each lease of other hosts unchanged (module docstring).

    ``path`` (in the state dir) keeps what was seen across runs; it counts only within one
    boot, since the clock of elapsed time starts again at boot. A file that is missing or
    unreadable starts the watch afresh, which can only make leases look younger: safe.
    ``host`` is the judge's own host name (the tests judge as another host).
    """

    def __init__(self, path: Path | None = None, *, host: str | None = None) -> None:
        self.path = path
        self.host = host or socket.gethostname()
        self._boot = boot_id()
        self._seen: dict[str, tuple[str, float]] = {}  # "label name" -> (digest, first seen)
        self._lock = threading.Lock()
        self._changed = False
        self.problems: list[str] = []  # the file was damaged: reported by the caller
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        """What was seen, when the file is of this boot; a damaged file is set aside
        (``statefile``): leases of other hosts are then judged from now on."""
        saved = statefile.load(
            path, statefile.typed(_SeenFile | None), lambda: None, self.problems.append,
            what="a record of the leases seen",
            then="other hosts' leases are watched afresh (stale after 5 minutes unchanged)",
        )  # fmt: skip
        if saved is not None and self._boot is not None and saved.boot == self._boot:
            self._seen = dict(saved.seen)

    def unchanged_for(self, label: str, lease: LeaseInfo) -> float:
        """Seconds this host has seen ``lease`` with its present content (0 when new)."""
        return self.seen_unchanged(label, lease.name, lease.digest)

    def seen_unchanged(self, label: str, name: str, digest: str) -> float:
        """Seconds this host has seen object ``name`` with the content ``digest``."""
        now = _ticks()
        key = f"{label} {name}"
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or seen[0] != digest or now < seen[1]:
                self._seen[key] = (digest, now)
                self._changed = True
                return 0.0
            return now - seen[1]

    def is_stale(self, label: str, lease: LeaseInfo) -> bool:
        if lease.host == self.host:
            return not holder_runs_here(lease)
        return self.unchanged_for(label, lease) > STALE_AFTER.total_seconds()

    def forget_others(self, label: str, present: set[str]) -> None:
        """Drop what was seen of leases of ``label`` that are no longer there."""
        prefix = f"{label} "
        with self._lock:
            gone = [
                k for k in self._seen if k.startswith(prefix) and k[len(prefix) :] not in present
            ]
            for key in gone:
                del self._seen[key]
            self._changed = self._changed or bool(gone)

    def save(self) -> None:
        """Keep what was seen, if this watch has a file and a boot to tie it to."""
        if self.path is None or self._boot is None or not self._changed:
            return
        with self._lock:
            data = {"boot": self._boot, "seen": {k: list(v) for k, v in self._seen.items()}}
            self._changed = False
        with contextlib.suppress(StorageError):  # a hint only: a later run starts afresh
            write_atomic(self.path, json.dumps(data).encode(), mode=0o600)


class _SeenFile(msgspec.Struct):
    """``leases-seen.json``: "label name" -> (digest, first seen in boot-time seconds)."""

    boot: str | None
    seen: dict[str, tuple[str, float]]


DEFAULT_WATCH = LeaseWatch()  # what this process has seen, when no state dir is given


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
        return _parse_lease(name, data)
    except (ValueError, KeyError, TypeError, AttributeError, UsageError) as exc:
        raise RepositoryError(
            f"target {storage.label}: {name} is not a lease emberkeep can read, so nobody can "
            "tell whether the run that wrote it still goes on; if no emberkeep process uses "
            "this target, delete that object"
        ) from exc


def _parse_lease(name: str, data: bytes) -> LeaseInfo:
    raw = json.loads(data)
    return LeaseInfo(
        name,
        raw["kind"],
        raw["host"],
        int(raw["pid"]),
        clock.parse_time(raw["started"]),
        clock.parse_time(raw["refreshed"]),
        raw.get("token"),
        _optional_int(raw.get("seq")),
        raw.get("boot") if isinstance(raw.get("boot"), str) else None,
        _optional_int(raw.get("process")),
        _digest(data),
    )


def abandoned_writes(storage: Storage, temps: list[str], watch: LeaseWatch) -> list[str]:
    """Which of ``temps``, temp files under ``locks/``, a lease writer left for good.

    Such a file is a lease being written this moment, or one whose writer was killed
    before its rename. It is judged as the lease it holds would be: this host's by its
    process; another host's, or one too short to read (killed mid-write), by ``watch``
    seeing it unchanged for ``STALE_AFTER`` (watched apart from the leases themselves, so
    judging those does not forget what was seen of these). One that cannot be read is
    kept: it may be a writer's that goes on.
    """
    label = f"\0unfinished {storage.label}"  # a key no target's own label can share
    abandoned = []
    for name in temps:
        try:
            data = get_at_most(storage, name, TEMP_READ_LIMIT)
        except (StorageError, IntegrityError):  # renamed since it was listed, or unreadable
            continue
        try:
            lease: LeaseInfo | None = _parse_lease(name, data)
        except (ValueError, KeyError, TypeError, AttributeError, UsageError):
            lease = None
        if lease is None or lease.host != watch.host:
            if watch.seen_unchanged(label, name, _digest(data)) > STALE_AFTER.total_seconds():
                abandoned.append(name)
        elif not holder_runs_here(lease):
            abandoned.append(name)
    watch.forget_others(label, set(temps))
    return abandoned


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_leases(storage: Storage) -> list[LeaseInfo]:
    """Every lease; one deleted while listing is left out, an unreadable one raises."""
    found = (read_lease(storage, info.name) for info in storage.list(f"{LOCKS}/"))
    return [lease for lease in found if lease is not None]


def live_backups(storage: Storage, watch: LeaseWatch | None = None) -> list[LeaseInfo]:
    """The backup leases that are live as ``watch`` judges them (module docstring)."""
    watch = watch or DEFAULT_WATCH
    leases = read_leases(storage)
    live = [ls for ls in leases if ls.kind == "backup" and not watch.is_stale(storage.label, ls)]
    watch.forget_others(storage.label, {ls.name for ls in leases})
    watch.save()
    return live


class Lease:
    """A lease held for the life of a ``with`` block, refreshed by a daemon thread.

    ``watch`` judges the exclusive lease found in the way (default: what this process saw).
    """

    def __init__(self, storage: Storage, kind: str, watch: LeaseWatch | None = None) -> None:
        self.storage = storage
        self.kind = kind
        self.name = EXCLUSIVE if kind == "exclusive" else f"{LOCKS}/{kind}-{secrets.token_hex(8)}"
        self.token = secrets.token_hex(16)
        self.started = clock.now()
        self.watch = watch or DEFAULT_WATCH
        self.broken: list[LeaseInfo] = []
        self._seq = 0  # writes of the lease so far: what others watch change
        self._renewed = 0.0  # _ticks() before the last write of the lease that succeeded
        self._lost: str | None = None  # how the lease stopped being ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        self._seq += 1
        return json.dumps(
            {
                "kind": self.kind,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": self.started.isoformat(),
                "refreshed": clock.now().isoformat(),
                "token": self.token,
                "seq": self._seq,
                "boot": boot_id(),
                "process": process_start(os.getpid()),
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
        stale = self.watch.is_stale(self.storage.label, holder)
        self.watch.save()
        if not stale:
            raise LockedError(self._locked(holder))
        self.broken.append(holder)
        self.storage.delete(EXCLUSIVE)

    def _locked(self, holder: LeaseInfo) -> str:
        """Why the live ``holder`` keeps this taker out, and what to do."""
        locked = f"target {self.storage.label} is locked ({holder.describe()})"
        if holder.host == self.watch.host:
            return f"{locked}; that process runs on this host: wait for it to finish"
        minutes = int(STALE_AFTER.total_seconds() // 60)
        seen = format_duration(
            timedelta(seconds=round(self.watch.unchanged_for(self.storage.label, holder)))
        )
        return (
            f"{locked}; wait for it to finish. If that process is gone, its lease counts as "
            f"stale once this host has seen it unchanged for {minutes} minutes (unchanged for "
            f"{seen} so far): run this again then"
        )

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
