"""One backup copied to every target (docs/design.md, "Replicate"), and `emberkeep replicate`.

Through the real CLI with real servers: Debian's sshd and versitygw (tests/servers.py). The
first target is the primary; a backup writes there, then copies the snapshot verbatim (same
id) to every other target whose ``copies`` rule wants it, sending only the packs it lacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, restored, tree_listing
from servers import S3Server, SshServer, _children, _wait_listening, start_sshd

from emberkeep import config as config_module
from emberkeep.config import Retention, Target
from emberkeep.errors import ConfigError
from emberkeep.policy.replication import wanted
from emberkeep.policy.retention import keep_source, period_of
from emberkeep.repository.snapshot import Snapshot
from emberkeep.runner import unitfiles
from emberkeep.runner.scheduler import jobs_of

MiB = 1024 * 1024


def targets(*specs: tuple[str, str] | tuple[str, str, str]) -> str:
    """``[[targets]]`` blocks from (name, url[, copies])."""
    blocks = []
    for name, url, *copies in specs:
        block = f'[[targets]]\nname = "{name}"\nurl = "{url}"'
        if copies:
            block += f'\ncopies = "{copies[0]}"'
        blocks.append(block)
    return "\n".join(blocks)


def make_tree(root: Path, random_mib: int = 3) -> Path:
    (root / "media").mkdir(parents=True)
    (root / "media" / "photo.bin").write_bytes(os.urandom(random_mib * MiB))
    for i in range(12):
        (root / "media" / f"note-{i}.txt").write_text(f"note {i}\n" * (i + 1))
    (root / "config").mkdir()
    (root / "config" / "app.env").write_text("PORT=8080\n")
    os.symlink("media/note-1.txt", root / "link")
    return root


def ids(site: Site, target: str) -> list[str]:
    return [s["id"] for s in site.json("snapshots", "--target", target)]


def by_target(copies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["target"]: c for c in copies}


# -- local + sftp + s3 ------------------------------------------------------------------------


def test_one_backup_reaches_every_target_with_one_snapshot_id(
    site: Site, sftp_server: SshServer, s3_server: S3Server, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    dumps = tmp_path / "dumps.log"
    bucket = s3_server.make_bucket()
    site.env.update(s3_server.env())
    site.write_config(
        [src],
        targets=targets(
            ("local", f"file://{site.repo}"),
            ("remote", sftp_server.url(tmp_path / "remote-repo")),
            ("cold", s3_server.url(bucket, "site")),
        ),
        source_extra=f'hooks = {{ before_backup = "echo dump >> {dumps}" }}',
    )
    site.run("init")

    [entry] = site.json("backup")
    assert dumps.read_text().splitlines() == ["dump"]  # the source was read once, not per target
    snapshot = entry["snapshot"]["id"]
    assert entry["snapshot"]["target"] == "local"
    copies = by_target(entry["copies"])
    assert set(copies) == {"remote", "cold"}
    for copy in copies.values():
        assert copy["status"] == "copied", copy
        assert copy["snapshots"] == [snapshot]
        assert copy["packs_copied"] >= 2 and copy["packs_reused"] == 0  # data and tree packs
        assert copy["bytes_copied"] > 3 * MiB
    for target in ("local", "remote", "cold"):
        assert ids(site, target) == [snapshot]

    for target in ("cold", "remote"):
        out = tmp_path / f"out-{target}"
        site.run("restore", snapshot, "--to", out, "--target", target)
        assert tree_listing(restored(out, src)) == tree_listing(src)
    for target in ("local", "remote", "cold"):
        result = site.json("check", "--read-data", "--target", target)[target]
        assert result["ok"] and result["packs_read"] >= 2, result

    again = by_target(site.json("replicate"))
    assert set(again) == {"remote", "cold"}
    for copy in again.values():
        assert copy["status"] == "skipped" and copy["snapshots"] == []
        assert copy["packs_copied"] == 0 and copy["bytes_copied"] == 0


# -- file targets: the fast cases -------------------------------------------------------------


def test_a_later_backup_sends_only_its_new_packs_and_replicate_then_sends_nothing(
    site: Site, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    mirror = tmp_path / "mirror"
    site.write_config(
        [src], targets=targets(("local", f"file://{site.repo}"), ("mirror", f"file://{mirror}"))
    )
    site.run("init")
    site.run("backup")
    (src / "media" / "new.bin").write_bytes(os.urandom(2 * MiB))

    [entry] = site.json("backup")
    [copy] = entry["copies"]
    assert copy["status"] == "copied"
    assert copy["packs_copied"] == entry["snapshot"]["summary"]["packs_new"]  # no more, no less
    assert ids(site, "mirror") == ids(site, "local")

    [copy] = site.json("replicate")
    assert copy == {
        "target": "mirror",
        "status": "skipped",
        "snapshots": [],
        "packs_copied": 0,
        "packs_reused": 0,
        "bytes_copied": 0,
        "left_out": 0,
        "reason": copy["reason"],
    }
    assert "up to date" in copy["reason"]
    text = site.run("replicate").stdout
    assert "target mirror: skipped: up to date" in text


def test_one_failing_target_does_not_stop_the_others(site: Site, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", random_mib=1)
    site.write_config(
        [src],
        targets=targets(
            ("local", f"file://{site.repo}"),
            ("broken", f"file://{tmp_path / 'never-initialized'}"),
            ("mirror", f"file://{tmp_path / 'mirror'}"),
        ),
    )
    site.run("init", "--target", "local")
    site.run("init", "--target", "mirror")

    proc = site.run("backup", "--json", ok=False)
    assert proc.returncode == 1
    [entry] = json.loads(proc.stdout)
    copies = by_target(entry["copies"])
    assert copies["mirror"]["status"] == "copied"
    assert copies["broken"]["status"] == "failed"
    assert "target broken holds no repository; run `emberkeep init`" in copies["broken"]["error"]
    assert "target broken" in proc.stderr
    assert "the snapshot is committed in local" in proc.stderr
    assert "run `emberkeep replicate` when broken is reachable" in proc.stderr
    assert ids(site, "mirror") == ids(site, "local") == [entry["snapshot"]["id"]]

    site.run("init", "--target", "broken")
    [copy] = site.json("replicate", "--target", "broken")
    assert copy["status"] == "copied" and copy["snapshots"] == ids(site, "local")
    site.run("check", "--read-data", "--target", "broken")

    proc = site.run("replicate", "--target", "local", ok=False)
    assert proc.returncode == 2 and "target local is the primary" in proc.stderr
    proc = site.run("replicate", "--source", "nosuch", ok=False)
    assert proc.returncode == 2 and "no source named 'nosuch'" in proc.stderr


def trash(repo: Path) -> set[str]:
    """The packs prune has condemned in a file:// repository."""
    return {str(p.relative_to(repo / "trash")) for p in (repo / "trash").rglob("*") if p.is_file()}


def backup_at(site: Site, when: str) -> dict[str, Any]:
    site.env["EMBERKEEP_NOW"] = when
    proc = site.run("backup", "--json", ok=None)
    [entry] = json.loads(proc.stdout)
    return entry


def test_packs_prune_condemned_in_the_target_are_reused_only_when_no_prune_runs(
    site: Site, tmp_path: Path
) -> None:
    """A monthly target forgets an old month; a later month's snapshot needs its packs again.

    The primary keeps everything; the target keeps one monthly snapshot, and takes each
    month's snapshot once the month has ended (at the next month's backup). January holds
    a.bin, February b.bin, March a.bin again: its data pack is January's, which prune has
    condemned in the target, and a verbatim copy cannot give it another name.
    """
    src = tmp_path / "src"
    src.mkdir()
    a_bytes, b_bytes = os.urandom(MiB), os.urandom(MiB)
    mirror = tmp_path / "mirror"
    site.write_config(
        [src],
        targets=targets(("local", f"file://{site.repo}"), ("mirror", f"file://{mirror}", "monthly"))
        + "\nretention = { files = { monthly = 1 } }",
    )
    site.run("init")
    (src / "a.bin").write_bytes(a_bytes)
    january = backup_at(site, "2026-01-05T02:00:00Z")
    [copy] = january["copies"]
    assert copy["status"] == "skipped" and "once the month has ended" in copy["reason"], copy
    (src / "a.bin").unlink()
    (src / "b.bin").write_bytes(b_bytes)
    february = backup_at(site, "2026-02-05T02:00:00Z")  # copies January
    (src / "b.bin").unlink()
    (src / "a.bin").write_bytes(a_bytes)
    march = backup_at(site, "2026-03-05T02:00:00Z")  # copies February
    assert ids(site, "mirror") == [january["snapshot"]["id"], february["snapshot"]["id"]]
    pruned = site.json("prune", "--target", "mirror")["mirror"]  # January goes from the mirror
    assert pruned["packs_condemned"] == 2 and pruned["packs_deleted"] == 0  # grace: 1h
    condemned = trash(mirror)
    assert [p.split("/")[0] for p in sorted(condemned)] == ["data", "meta"]  # a.bin, its tree
    index_files = sorted((mirror / "index").iterdir())

    # A prune that began before the copy still runs: it may delete condemned packs any moment.
    lease = {
        "kind": "exclusive",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": "2026-04-05T01:59:00+00:00",
        "refreshed": "2026-04-05T01:59:00+00:00",
    }
    (mirror / "locks" / "exclusive").write_text(json.dumps(lease))
    april = backup_at(site, "2026-04-05T02:00:00Z")  # would copy March
    [copy] = april["copies"]
    assert copy["status"] == "failed" and "target mirror is being pruned" in copy["error"]
    assert "run `emberkeep replicate` again when the prune has finished" in copy["error"]
    assert len(ids(site, "mirror")) == 1 and sorted((mirror / "index").iterdir()) == index_files

    (mirror / "locks" / "exclusive").unlink()  # that prune has finished
    [copy] = site.json("replicate")
    assert copy["status"] == "copied", copy
    assert copy["snapshots"] == [march["snapshot"]["id"]]  # not January: retention drops it
    assert copy["left_out"] == 1 and "retention would not keep" in copy["reason"]
    assert copy["packs_reused"] == 1 and copy["packs_copied"] == 1  # a.bin's pack; a new tree
    assert site.json("check", "--read-data", "--target", "mirror")["mirror"]["ok"]

    # The next prune pardons a.bin's pack (March needs it) and drops February.
    site.env["EMBERKEEP_NOW"] = "2026-04-05T04:00:00Z"
    site.run("prune", "--target", "mirror", "--grace", "1h")
    assert ids(site, "mirror") == [march["snapshot"]["id"]]
    out = tmp_path / "out"
    site.run("restore", march["snapshot"]["id"], "--to", out, "--target", "mirror")
    assert (restored(out, src) / "a.bin").read_bytes() == a_bytes
    result = site.json("check", "--read-data", "--target", "mirror")["mirror"]
    assert result["ok"] and not result["leftovers"], result
    a_pack, january_tree = sorted(condemned)
    assert (mirror / a_pack).is_file() and a_pack not in trash(mirror)  # pardoned: in use
    assert not (mirror / january_tree).exists()  # deleted after the grace period


# -- the copies rule over ~70 simulated days --------------------------------------------------


def last_of_each_ended(snapshots: list[dict[str, Any]], copies: str, now: str) -> list[str]:
    """The newest snapshot of each period before ``now``'s (written oldest first)."""
    last: dict[tuple[int, ...], str] = {}
    for snap in snapshots:
        last[period_of(copies, at(snap["time"]))] = snap["id"]
    return [sid for p, sid in last.items() if p < period_of(copies, at(now))]


def test_monthly_and_weekly_targets_get_the_last_snapshot_of_each_ended_period(
    site: Site, tmp_path: Path
) -> None:
    """70 daily backups by the scheduler (simulated clock), each copied as the rules say."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "orders.json").write_text("[]\n")
    site.write_config(
        [src],
        targets=targets(
            ("local", f"file://{site.repo}"),
            ("monthly", f"file://{tmp_path / 'monthly'}", "monthly"),
            ("weekly", f"file://{tmp_path / 'weekly'}", "weekly"),
        ),
        source_extra='schedule = "0 2 * * *"\nretention = { daily = 7 }',
    )
    site.run("init")
    site.env["EMBERKEEP_NOW"] = "2026-01-01T00:00:00Z"
    proc = site.run("run", "--until", "2026-03-11T12:00:00Z", "--json")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    ends = [e for e in events if e["event"] == "end"]
    assert len(ends) == 70 and all(e["outcome"] == "ok" for e in ends), ends[:3]

    primary = site.json("snapshots", "--target", "local")
    assert len(primary) == 70
    monthly = ids(site, "monthly")
    # the backup of 1 February copied 31 January; March has not ended
    assert monthly == last_of_each_ended(primary, "monthly", "2026-03-11T02:00:00Z")
    assert [s["time"][:10] for s in site.json("snapshots", "--target", "monthly")] == [
        "2026-01-31",
        "2026-02-28",
    ]
    weekly = ids(site, "weekly")
    assert weekly == last_of_each_ended(primary, "weekly", "2026-03-11T02:00:00Z")
    assert len(weekly) == 10  # the Sundays of ISO weeks 1 to 10 of 2026 (week 1: 1-4 January)

    # The primary prunes to its last 7 days; the targets already hold the newest of the
    # weeks and months that ended, so replicate copies nothing.
    site.env["EMBERKEEP_NOW"] = "2026-03-11T12:00:00Z"
    site.run("prune", "--target", "local", "--grace", "0s")
    assert len(ids(site, "local")) == 7
    for copy in site.json("replicate"):
        assert copy["status"] == "skipped" and copy["packs_copied"] == 0, copy
    assert ids(site, "monthly") == monthly and ids(site, "weekly") == weekly

    # The clock passes the end of March (and of ISO week 11) with no backup since 11 March:
    # replicate (the scheduled job) copies the newest of each, 11 March, to both.
    site.env["EMBERKEEP_NOW"] = "2026-04-01T06:00:00Z"
    for copy in site.json("replicate"):
        assert copy["status"] == "copied" and copy["snapshots"] == [primary[-1]["id"]], copy


def test_three_months_of_nightly_backups_and_prunes_keep_cold_on_the_monthly_rule() -> None:
    """The strategy's night (backup, its copies, then prune on every target) from 1 January
    to 15 April, with the decision functions replicate and prune use: cold holds exactly
    the last snapshot of each ended month, each one the primary's monthly rule keeps too."""
    policy = Retention(daily=7, weekly=4, monthly=12)
    cold = target("monthly")
    primary: list[Snapshot] = []
    held: list[Snapshot] = []
    day = at("2026-01-01T02:00:00Z")
    seq = 0
    while day < at("2026-04-16T00:00:00Z"):
        seq += 1
        primary.append(snap("mongodb", day.isoformat(), seq))
        # the after-step: what cold wants and its retention keeps (runner/replicate._to_copy)
        want = wanted(cold, primary, held, day)
        kept_cold = keep_source([*held, *want], day, policy)
        held += [s for s in want if s.id in kept_cold]
        prune_at = day + timedelta(hours=2)
        kept = keep_source(primary, prune_at, policy)
        primary = [s for s in primary if s.id in kept]
        held = [s for s in held if s.id in keep_source(held, prune_at, policy)]
        for copy in held:  # every cold snapshot is one the primary's monthly rule keeps
            assert "monthly" in kept.get(copy.id, ""), (day, copy.id, kept.get(copy.id))
        day += timedelta(days=1)
    assert [s.time.date().isoformat() for s in held] == ["2026-01-31", "2026-02-28", "2026-03-31"]
    # the primary: 1 January (monthly's oldest), the month ends, two Sundays (weekly), 9-15 April
    assert [s.time.strftime("%m-%d") for s in primary] == [
        "01-01", "01-31", "02-28", "03-29", "03-31", "04-05", *(f"04-{d:02d}" for d in range(9, 16))
    ]  # fmt: skip


# -- an SFTP server killed mid-copy, then `emberkeep replicate` -------------------------------


def restart_sshd(server: SshServer) -> SshServer:
    """Start sshd again with the same config: same folder, port, host key and user key."""
    log = server.workdir / "sshd.log"
    proc = subprocess.Popen(
        [
            shutil.which("sshd") or "/usr/sbin/sshd",
            "-D",
            "-f",
            str(server.workdir / "sshd_config"),
            "-E",
            str(log),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(proc, server.port, log, "sshd (restarted)")
    return dataclasses.replace(server, proc=proc)


def pack_files(repo: Path) -> dict[str, tuple[int, int]]:
    """Whole packs on disk (no temp files): name -> (inode, mtime)."""
    found = {}
    for folder in ("data", "meta"):
        for path in (repo / folder).rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                st = path.stat()
                found[str(path.relative_to(repo))] = (st.st_ino, st.st_mtime_ns)
    return found


def kill_sshd(server: SshServer) -> None:
    """SIGKILL the listener and every process under it: each connection's session process
    has a child serving SFTP, which outlives its killed parent long enough to go on copying."""
    family, todo = [], [server.proc.pid]
    while todo:
        children = _children(todo.pop())
        family += children
        todo += children
    for pid in [server.proc.pid, *family]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait()


class KillOnFirstPack(threading.Thread):
    """Stops ``server`` as soon as a whole pack lies in ``repo`` (the copy has begun)."""

    def __init__(self, server: SshServer, repo: Path) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.repo = repo
        self.fired = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if pack_files(self.repo):
                kill_sshd(self.server)
                self.fired.set()
                return
            time.sleep(0.002)


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[list[SshServer]]:
    """A dedicated sshd (the session's one stays up); the list holds its current process."""
    servers = [start_sshd(tmp_path / "sshd")]
    yield servers
    servers[-1].stop()


def test_sftp_killed_mid_copy_then_replicate_completes_without_resending(
    site: Site, own_sshd: list[SshServer], tmp_path: Path
) -> None:
    server = own_sshd[0]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):  # ~6 data packs of 16 MiB: the copy is still going when the first lands
        (src / f"dump-{i}.bin").write_bytes(os.urandom(32 * MiB))
    remote = tmp_path / "remote-repo"
    site.write_config(
        [src],
        targets=targets(("local", f"file://{site.repo}"), ("sftp", server.url(remote, timeout=5))),
    )
    site.run("init")

    killer = KillOnFirstPack(server, remote)
    killer.start()
    proc = site.run("backup", "--json", ok=False)
    killer.done.set()
    assert killer.fired.is_set(), "the copy never wrote a pack"
    assert proc.returncode == 1, proc.stderr
    [entry] = json.loads(proc.stdout)
    snapshot = entry["snapshot"]["id"]
    [copy] = entry["copies"]
    assert copy["status"] == "failed" and copy["error"].startswith("target sftp:"), copy
    assert "target sftp" in proc.stderr
    assert "the snapshot is committed in local" in proc.stderr
    assert "run `emberkeep replicate` when sftp is reachable" in proc.stderr

    assert ids(site, "local") == [snapshot]  # committed in the primary, and restorable
    out = tmp_path / "out"
    site.run("restore", snapshot, "--to", out, "--target", "local")
    assert tree_listing(restored(out, src)) == tree_listing(src)

    sent_before = pack_files(remote)
    total_packs = len(list((site.repo / "data").rglob("*"))) + len(
        list((site.repo / "meta").rglob("*"))
    )
    assert 1 <= len(sent_before) < total_packs, (len(sent_before), total_packs)
    assert not (remote / "snapshots").exists() or not any((remote / "snapshots").iterdir())

    own_sshd.append(restart_sshd(server))
    [copy] = site.json("replicate")
    assert copy["target"] == "sftp" and copy["status"] == "copied", copy
    assert copy["snapshots"] == [snapshot]
    assert copy["packs_reused"] >= 1 and copy["packs_reused"] == len(sent_before), copy
    assert copy["packs_reused"] + copy["packs_copied"] == len(pack_files(remote))
    after = pack_files(remote)
    for name, identity in sent_before.items():
        assert after[name] == identity, f"{name} was sent again"  # same inode, same mtime

    assert ids(site, "sftp") == [snapshot]
    result = site.json("check", "--read-data", "--target", "sftp")["sftp"]
    assert result["ok"] and result["packs_read"] == len(after), result
    [copy] = site.json("replicate")
    assert copy["status"] == "skipped" and copy["packs_copied"] == 0


# -- the rule, as a pure function -------------------------------------------------------------


def snap(source: str, when: str, seq: int | None = None) -> Snapshot:
    moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return Snapshot(source, "files", moment, "host", b"", b"", id=f"{source}-{when}", seq=seq)


def target(copies: str) -> Target:
    return Target(name="t", url="file:///t", copies=copies)  # type: ignore[arg-type]


def at(when: str) -> datetime:
    return datetime.fromisoformat(when.replace("Z", "+00:00"))


def replicate_daily(copies: str, times: list[str], source: str = "db") -> list[str]:
    """Backups at ``times``, each followed by the after-step: what the target holds."""
    primary: list[Snapshot] = []
    held: list[Snapshot] = []
    for seq, when in enumerate(times, 1):
        primary.append(snap(source, when, seq))
        held += wanted(target(copies), primary, held, at(when))
    return [s.time.strftime("%Y-%m-%d") for s in held]


def test_wanted_all_takes_everything_it_lacks() -> None:
    held = [snap("db", "2026-03-01T02:00:00Z")]
    offered = [*held, snap("db", "2026-03-01T03:00:00Z")]
    assert wanted(target("all"), offered, held, at("2026-03-01T04:00:00Z")) == offered[1:]


def test_wanted_monthly_is_the_last_of_each_ended_month_in_utc() -> None:
    daily = [f"2026-{m:02d}-{d:02d}T23:30:00Z" for m in (1, 2, 3) for d in range(1, 29)]
    # March has not ended: its 28th is not yet the snapshot the monthly rule keeps for it
    assert replicate_daily("monthly", daily) == ["2026-01-28", "2026-02-28"]
    late = snap("db", "2026-02-01T01:30:00+02:00", 2)  # 1 February locally, 31 January in UTC
    primary = [snap("db", "2026-01-05T00:00:00Z", 1), late]
    assert wanted(target("monthly"), primary, [], at("2026-01-31T23:45:00Z")) == []
    # January ended by the clock, with no backup since: its newest is wanted
    assert wanted(target("monthly"), primary, [], at("2026-02-01T00:00:00Z")) == [late]
    # or ended by a backup in February
    primary.append(snap("db", "2026-02-01T00:30:00Z", 3))
    assert wanted(target("monthly"), primary, [], at("2026-01-31T23:59:00Z")) == [late]


def test_wanted_weekly_uses_iso_weeks_across_the_year_end() -> None:
    days = [f"2025-12-{d}T02:00:00Z" for d in range(26, 32)] + [
        f"2026-01-{d:02d}T02:00:00Z" for d in range(1, 13)
    ]
    # 2025-12-29 (Monday) begins ISO week 2026-W01; 2026-01-05 and 2026-01-12 the next ones
    assert replicate_daily("weekly", days) == ["2025-12-28", "2026-01-04", "2026-01-11"]
    assert period_of("weekly", at("2026-01-01T00:00:00Z")) == (2026, 1)


def test_wanted_looks_at_the_same_source_only_and_at_what_the_target_holds() -> None:
    now = at("2026-04-02T00:00:00Z")
    held = [snap("media", "2026-03-31T02:00:00Z", 9)]
    offered = [snap("db", "2026-03-02T02:00:00Z", 1)]
    assert wanted(target("monthly"), offered, held, now) == offered  # media is not db
    # the target holds 31 March; the primary pruned it but keeps the 29th (its weekly
    # rule): the 29th is not the month's newest, so it is not wanted
    held = [snap("db", "2026-03-31T02:00:00Z", 3)]
    offered = [snap("db", "2026-03-29T02:00:00Z", 1), snap("db", "2026-04-01T02:00:00Z", 4)]
    assert wanted(target("monthly"), offered, held, now) == []
    # a target holding an older snapshot of a month (an earlier rule's pick) gets its newest
    held = [snap("db", "2026-03-01T02:00:00Z", 1)]
    offered = [*held, snap("db", "2026-03-31T02:00:00Z", 3), snap("db", "2026-04-01T02:00:00Z", 4)]
    assert wanted(target("monthly"), offered, held, now) == [offered[1]]


def test_wanted_is_what_the_monthly_rule_keeps_after_a_clock_stepped_back() -> None:
    """Written order decides the newest, as in retention; a future-dated one counts for none."""
    offered = [
        snap("db", "2026-03-30T02:00:00Z", 1),
        snap("db", "2026-03-31T02:00:00Z", 2),
        snap("db", "2026-03-29T02:00:00Z", 3),  # written last, its clock a day behind
        snap("db", "2027-01-01T00:00:00Z", 4),  # a forged date: does not end March
    ]
    now = at("2026-03-31T12:00:00Z")
    assert wanted(target("monthly"), offered, [], now) == []
    now = at("2026-04-01T00:00:00Z")
    assert wanted(target("monthly"), offered, [], now) == [offered[2]]
    policy = Retention(monthly=12)
    assert keep_source(offered[:3], now, policy)[offered[2].id] == "monthly 1/12"


# -- the scheduled replicate job --------------------------------------------------------------


def parse(tmp_path: Path, extra: str) -> config_module.Config:
    import tomllib

    import pyrage

    recipient = pyrage.x25519.Identity.generate().to_public()
    text = (
        f'[site]\nname = "s"\n[keys]\nrecipients = ["{recipient}"]\n'
        f'[[targets]]\nname = "local"\nurl = "file:///b"\n{extra}'
    )
    return config_module.parse(tomllib.loads(text), tmp_path / "emberkeep.toml")


def test_a_replicate_schedule_becomes_a_job_and_a_unit(tmp_path: Path) -> None:
    config = parse(
        tmp_path, '[replicate]\nschedule = "30 4 * * *"\n[check]\nschedule = "@weekly"\n'
    )
    assert [(j.name, j.schedule) for j in jobs_of(config)] == [
        ("replicate", "30 4 * * *"),
        ("check", "@weekly"),
    ]
    cron = unitfiles.render(config, "cron", "/usr/bin/emberkeep")
    assert "30 4 * * * /usr/bin/emberkeep -c" in cron and " replicate -q" in cron
    systemd = unitfiles.render(config, "systemd", "/usr/bin/emberkeep")
    assert "# emberkeep-replicate.timer" in systemd and "OnCalendar=*-*-* 04:30:00 UTC" in systemd
    assert jobs_of(parse(tmp_path, "")) == []


def test_a_bad_replicate_schedule_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"replicate\.schedule: 'sometimes' is not a cron"):
        parse(tmp_path, '[replicate]\nschedule = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"replicate\.every: unknown key"):
        parse(tmp_path, '[replicate]\nevery = "@daily"\n')
