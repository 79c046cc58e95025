"""Leases (repository/lease.py): one holder of the exclusive lease, and a lease that knows
when it may have gone stale for others.

Driven through the local filesystem storage, with the storage and the lease's clock faked at
our own seams: failing reads and writes, and pauses between one storage call and the next.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emberkeep import clock
from emberkeep.errors import EmberkeepError, LockedError, StorageError
from emberkeep.repository import lease as lease_mod
from emberkeep.repository.lease import EXCLUSIVE, STALE_AFTER, Lease, LeaseWatch, read_leases
from emberkeep.storage.base import Payload
from emberkeep.storage.local import LocalStorage

# (operation, object name) -> called in the calling thread after that operation succeeded
Hook = Callable[[str, str], None]


class _Storage(LocalStorage):
    """Local storage that can fail the next reads or writes of leases, and call ``hook``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failing_gets: dict[str, int] = {}  # thread name -> reads of EXCLUSIVE to fail
        self.failing_lease_puts = False
        self.hook: Hook = lambda op, name: None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        thread = threading.current_thread().name
        if name == EXCLUSIVE and self.failing_gets.get(thread, 0) > 0:
            self.failing_gets[thread] -= 1
            raise StorageError(f"target {self.label}: connection reset")  # one dropped GET
        data = super().get(name, offset, length)
        self.hook("get", name)
        return data

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        if self.failing_lease_puts and name.startswith("locks/"):
            raise StorageError(f"target {self.label}: connection timed out")
        super().put(name, data, overwrite=overwrite)
        self.hook("put", name)

    def delete(self, name: str) -> None:
        super().delete(name)
        self.hook("delete", name)


@pytest.fixture
def storage(tmp_path: Path) -> _Storage:
    return _Storage(tmp_path / "repo")


@pytest.fixture(autouse=True)
def no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests order the racing takers themselves: no wait after breaking a lease."""
    monkeypatch.setattr(lease_mod, "SETTLE", 0.0, raising=False)


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The lease's clock of elapsed time, moved forward by hand: ``ticks[0] += seconds``."""
    now = [1000.0]
    monkeypatch.setattr(lease_mod, "_ticks", lambda: now[0], raising=False)
    yield now


def _stale_exclusive(storage: _Storage, ticks: list[float]) -> None:
    """An exclusive lease (old format: no token, no seq) of a prune on another host, long
    gone: this host has seen it unchanged for longer than a lease lives."""
    body = {
        "kind": "exclusive",
        "host": "gone-host",
        "pid": 1,
        "started": "2000-01-01T00:00:00+00:00",
        "refreshed": "2000-01-01T00:00:00+00:00",
    }
    storage.put(EXCLUSIVE, json.dumps(body).encode())
    _watched_for(storage, STALE_AFTER.total_seconds() + 1, ticks)


def _watched_for(storage: _Storage, seconds: float, ticks: list[float]) -> None:
    """This process's watch sees the exclusive lease now, and ``seconds`` pass on its clock."""
    lease = lease_mod.read_lease(storage, EXCLUSIVE)
    assert lease is not None
    lease_mod.DEFAULT_WATCH.unchanged_for(storage.label, lease)
    ticks[0] += seconds


def _take_in_thread(storage: _Storage, name: str, out: dict[str, object]) -> threading.Thread:
    def take() -> None:
        try:
            out[name] = Lease(storage, "exclusive").__enter__()
        except BaseException as exc:
            out[name] = exc

    thread = threading.Thread(target=take, name=name, daemon=True)
    thread.start()
    return thread


def _on_disk(storage: _Storage) -> dict[str, object]:
    return json.loads(storage.get(EXCLUSIVE))


# -- the exclusive lease has one holder ------------------------------------------------


def test_a_lease_that_cannot_be_read_is_not_broken(storage: _Storage) -> None:
    """One failed GET of a live prune's lease must not let a second prune take it too."""
    first = Lease(storage, "exclusive").__enter__()
    held = storage.get(EXCLUSIVE)
    storage.failing_gets["second"] = 1
    out: dict[str, object] = {}
    _take_in_thread(storage, "second", out).join(30)
    assert isinstance(out["second"], EmberkeepError), "a second prune took the exclusive lease"
    assert storage.get(EXCLUSIVE) == held, "the live prune's lease was replaced"
    first.__exit__(None, None, None)
    assert storage.stat(EXCLUSIVE) is None


def test_two_prunes_breaking_one_stale_lease_leave_one_holder(
    storage: _Storage, ticks: list[float]
) -> None:
    """The slower of two prunes breaking the same stale lease deletes the faster one's new
    lease (it read the stale one before): the faster must notice and give up."""
    _stale_exclusive(storage, ticks)
    slow_read, fast_took, slow_took = threading.Event(), threading.Event(), threading.Event()

    def hook(op: str, name: str) -> None:
        thread = threading.current_thread().name
        if thread == "slow" and op == "get" and not slow_read.is_set():
            slow_read.set()  # it has seen the stale lease; it deletes it once "fast" took it
            assert fast_took.wait(30)
        elif thread == "fast" and op == "put" and name == EXCLUSIVE:
            fast_took.set()
            assert slow_took.wait(30)  # the slow one deletes this lease and writes its own
        elif thread == "slow" and op == "put" and name == EXCLUSIVE:
            slow_took.set()

    storage.hook = hook
    out: dict[str, object] = {}
    slow = _take_in_thread(storage, "slow", out)
    assert slow_read.wait(30)
    _take_in_thread(storage, "fast", out).join(30)
    slow.join(30)

    holders = [name for name, got in out.items() if isinstance(got, Lease)]
    assert holders == ["slow"], f"holders of the exclusive lease: {out}"
    assert isinstance(out["fast"], LockedError)
    holder = out["slow"]
    assert isinstance(holder, Lease)
    assert _on_disk(storage)["token"] == holder.token
    holder.__exit__(None, None, None)


def test_a_holder_whose_lease_was_taken_over_notices_and_leaves_it(
    storage: _Storage, monkeypatch: pytest.MonkeyPatch, ticks: list[float]
) -> None:
    """A prune that broke the stale lease long after reading it (its host paused) deletes
    a live holder's lease. That holder's refresh must find out, stop refreshing, refuse to
    go on, and leave the other's lease alone when it ends."""
    monkeypatch.setattr(lease_mod, "REFRESH_EVERY", 0.05)
    _stale_exclusive(storage, ticks)
    slow_read, fast_done = threading.Event(), threading.Event()

    def hook(op: str, name: str) -> None:
        if threading.current_thread().name == "slow" and op == "get" and not slow_read.is_set():
            slow_read.set()
            assert fast_done.wait(30)

    storage.hook = hook
    out: dict[str, object] = {}
    slow = _take_in_thread(storage, "slow", out)
    assert slow_read.wait(30)
    _take_in_thread(storage, "fast", out).join(30)
    fast = out["fast"]
    assert isinstance(fast, Lease)
    fast_done.set()
    slow.join(30)
    late = out["slow"]
    assert isinstance(late, Lease)  # the residual race without conditional delete: see lease.py

    threading.Event().wait(0.3)  # several of the fast one's refreshes (every 0.05 s)
    assert _on_disk(storage).get("token") == late.token, "a refresh overwrote another's lease"
    with pytest.raises(EmberkeepError, match="another process"):
        fast.ensure_live("prune stops")
    fast.__exit__(None, None, None)
    assert _on_disk(storage).get("token") == late.token, "ending deleted another's lease"
    late.ensure_live("prune stops")
    late.__exit__(None, None, None)
    assert storage.stat(EXCLUSIVE) is None


def test_a_stale_lease_of_the_old_format_is_broken_and_a_live_one_is_not(
    storage: _Storage, ticks: list[float]
) -> None:
    _stale_exclusive(storage, ticks)
    with Lease(storage, "exclusive") as taken:
        assert [b.host for b in taken.broken] == ["gone-host"]
        assert _on_disk(storage)["token"] == taken.token
    live = {
        "kind": "exclusive",
        "host": "elsewhere",
        "pid": 1,
        "started": lease_mod.clock.now().isoformat(),
        "refreshed": lease_mod.clock.now().isoformat(),
    }
    storage.put(EXCLUSIVE, json.dumps(live).encode())
    with pytest.raises(LockedError, match="is locked"):
        Lease(storage, "exclusive").__enter__()
    [holder] = read_leases(storage)
    assert holder.host == "elsewhere" and holder.token is None


def test_an_unreadable_backup_lease_stops_prune_from_judging(storage: _Storage) -> None:
    """A backup lease that cannot be read may be a live backup's: no silent skip."""
    storage.put("locks/backup-0123", b"{not json")
    with pytest.raises(EmberkeepError, match="locks/backup-0123"):
        lease_mod.live_backups(storage)


# -- a lease knows when it may have gone stale --------------------------------------------


def test_a_lease_not_renewed_in_time_refuses_and_a_renewed_one_does_not(
    storage: _Storage, ticks: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_mod, "REFRESH_EVERY", 0.02)
    monkeypatch.setattr(lease_mod, "RETRY_EVERY", 0.02, raising=False)
    limit = STALE_AFTER.total_seconds()
    with Lease(storage, "backup") as lease:
        lease.ensure_live("the snapshot is not saved")
        storage.failing_lease_puts = True  # every refresh fails from now on
        ticks[0] += limit / 2
        threading.Event().wait(0.2)  # several failed refreshes
        lease.ensure_live("the snapshot is not saved")  # renewed recently enough still
        ticks[0] += limit / 2 + 1
        threading.Event().wait(0.2)
        with pytest.raises(EmberkeepError, match="the snapshot is not saved") as caught:
            lease.ensure_live("the snapshot is not saved")
        assert "renewed" in str(caught.value) and storage.label in str(caught.value)
        storage.failing_lease_puts = False  # the target answers again: the next refresh works
        renewed = ticks[0]
        for _ in range(100):  # until the next refresh, due in 0.02 s, has succeeded
            if lease._renewed == renewed:
                break
            threading.Event().wait(0.02)
        lease.ensure_live("the snapshot is not saved")
    assert not list(storage.list("locks/"))


def test_a_backup_lease_removed_as_stale_is_lost_for_good(
    storage: _Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prune removes backup leases it finds stale; the backup must not write it back."""
    monkeypatch.setattr(lease_mod, "REFRESH_EVERY", 0.02)
    with Lease(storage, "backup") as lease:
        storage.delete(lease.name)
        threading.Event().wait(0.2)
        assert storage.stat(lease.name) is None, "a refresh wrote a removed lease back"
        with pytest.raises(EmberkeepError, match="removed"):
            lease.ensure_live("the snapshot is not saved")


def test_a_target_silent_at_release_does_not_fail_the_work_done(storage: _Storage) -> None:
    """Release only tidies: a read that fails then leaves the lease to go stale, no error."""
    lease = Lease(storage, "exclusive").__enter__()
    storage.failing_gets[threading.current_thread().name] = 1
    lease.__exit__(None, None, None)  # must not raise
    assert storage.failing_gets[threading.current_thread().name] == 0  # it did try to read
    assert storage.stat(EXCLUSIVE) is not None  # left behind, to go stale


# -- judged by what the judge sees of the lease, never by comparing two hosts' clocks ------


def _put_lease(storage: _Storage, name: str = EXCLUSIVE, **fields: object) -> bytes:
    """A lease as a holder writes it, dated long ago; ``fields`` override."""
    body: dict[str, object] = {
        "kind": "exclusive" if name == EXCLUSIVE else "backup",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": "2000-01-01T00:00:00+00:00",
        "refreshed": "2000-01-01T00:00:00+00:00",
        "token": "t" * 32,
        "seq": 1,
        "boot": lease_mod.boot_id(),
        "process": lease_mod.process_start(os.getpid()),
    }
    body.update(fields)
    data = json.dumps(body).encode()
    storage.put(name, data, overwrite=True)
    return data


def test_a_lease_whose_process_runs_on_this_host_is_never_broken(
    storage: _Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its time says 2000 and this host's clock says 2099 (a prune a day or a century ahead,
    or a backup behind): the process is alive here, so the lease is live."""
    monkeypatch.setenv(clock.ENV_VAR, "2099-01-01T00:00:00Z")
    held = _put_lease(storage)
    with pytest.raises(LockedError, match="runs on this host"):
        Lease(storage, "exclusive").__enter__()
    assert storage.get(EXCLUSIVE) == held
    _put_lease(storage, "locks/backup-1")
    assert [b.name for b in lease_mod.live_backups(storage, LeaseWatch())] == ["locks/backup-1"]


def test_a_lease_whose_process_is_gone_from_this_host_is_stale_at_once(
    storage: _Storage,
) -> None:
    """A dead pid, a pid now used by another process, a holder from before a reboot."""
    finished = subprocess.Popen(["true"])
    finished.wait()
    watch = LeaseWatch()
    start = lease_mod.process_start(os.getpid())
    assert start is not None and lease_mod.boot_id() is not None  # Linux tells both
    gone: dict[str, dict[str, object]] = {
        "locks/backup-dead": {"pid": finished.pid},
        "locks/backup-reused": {"process": start + 1},
        "locks/backup-rebooted": {"boot": "another-boot"},
    }
    for name, fields in gone.items():
        _put_lease(storage, name, **fields)
    _put_lease(storage, "locks/backup-live")
    assert [b.name for b in lease_mod.live_backups(storage, watch)] == ["locks/backup-live"]
    _put_lease(storage, pid=finished.pid, refreshed=clock.now().isoformat())
    with Lease(storage, "exclusive", watch) as taken:
        assert [b.pid for b in taken.broken] == [finished.pid]


def test_a_lease_of_another_host_is_stale_once_seen_unchanged_for_its_life(
    storage: _Storage, ticks: list[float]
) -> None:
    """Its holder's clock is pinned (the time in it never moves) but it rewrites the lease:
    live. Once it stops, the lease is stale after STALE_AFTER of the judge's own clock."""
    watch = LeaseWatch()
    name, life = "locks/backup-1", STALE_AFTER.total_seconds()
    for seq in (1, 2, 3):
        _put_lease(storage, name, host="elsewhere", seq=seq)
        assert lease_mod.live_backups(storage, watch), f"refresh {seq} taken for stale"
        ticks[0] += life * 0.8
    ticks[0] += life * 0.3  # no refresh for 1.1 lifetimes
    assert lease_mod.live_backups(storage, watch) == []


def test_what_the_watch_saw_is_kept_in_the_state_dir(
    storage: _Storage, ticks: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state" / "leases-seen.json"
    _put_lease(storage, "locks/backup-1", host="elsewhere")
    assert lease_mod.live_backups(storage, LeaseWatch(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ticks[0] += STALE_AFTER.total_seconds() + 1
    assert lease_mod.live_backups(storage, LeaseWatch(path)) == []  # a later run knows it

    path.write_text('{"boot": ')  # damaged: starts afresh, the lease seems new again
    assert lease_mod.live_backups(storage, LeaseWatch(path))
    ticks[0] += STALE_AFTER.total_seconds() + 1
    monkeypatch.setattr(lease_mod, "boot_id", lambda: "after-a-reboot")
    assert lease_mod.live_backups(storage, LeaseWatch(path)), "a count from before a reboot"


def test_a_lease_write_left_as_a_temp_file_is_judged_as_the_lease_it_holds(
    storage: _Storage, ticks: list[float]
) -> None:
    """``locks/.<lease>.tmp-*`` is a lease being written now or one whose writer died before
    its rename: this host's goes with its process, another host's (or one cut short at
    nothing) once seen unchanged for a lease's life, one too large to read stays."""
    finished = subprocess.Popen(["true"])
    finished.wait()
    temps = {
        "live": "locks/.backup-live.tmp-000000000001",
        "dead": "locks/.backup-dead.tmp-000000000002",
        "elsewhere": "locks/.backup-far.tmp-000000000003",
        "empty": "locks/.backup-cut.tmp-000000000004",
        "huge": "locks/.backup-huge.tmp-000000000005",
    }
    _put_lease(storage, temps["live"])
    _put_lease(storage, temps["dead"], pid=finished.pid)
    _put_lease(storage, temps["elsewhere"], host="elsewhere")
    storage.put(temps["empty"], b"")
    storage.put(temps["huge"], b" " * (lease_mod.TEMP_READ_LIMIT + 1))
    assert sorted(storage.incomplete()) == sorted(temps.values())
    watch = LeaseWatch()
    names = list(temps.values())

    assert lease_mod.abandoned_writes(storage, names, watch) == [temps["dead"]]
    ticks[0] += STALE_AFTER.total_seconds() + 1
    lease_mod.live_backups(storage, watch)  # judging the leases forgets none of these
    abandoned = lease_mod.abandoned_writes(storage, names, watch)
    assert sorted(abandoned) == sorted([temps["dead"], temps["elsewhere"], temps["empty"]])
