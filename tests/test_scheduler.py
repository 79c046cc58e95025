"""Schedules and the scheduler (docs/design.md, "Policy"): the policy as pure functions,
then `emberkeep run`.

The semantics are in src/emberkeep/policy/schedule.py: cron over UTC, a job is due once a
slot passed since its last start (whatever the outcome), catch-up once after downtime.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Site

from emberkeep.policy import schedule
from emberkeep.policy.schedule import History, Job


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the policy, as pure functions -------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "after", "expected"),
    [
        ("@hourly", "2026-03-01T10:15:00Z", "2026-03-01T11:00:00Z"),
        ("@daily", "2026-03-01T10:15:00Z", "2026-03-02T00:00:00Z"),
        ("@weekly", "2026-03-02T00:00:00Z", "2026-03-08T00:00:00Z"),  # Sundays
        ("@monthly", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
        ("@yearly", "2026-03-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        (" 0 2 * * * ", "2026-03-01T02:00:00Z", "2026-03-02T02:00:00Z"),  # strictly after
    ],
)
def test_next_time_of_aliases_and_expressions(alias: str, after: str, expected: str) -> None:
    assert schedule.next_time(alias, at(after)) == at(expected)


def test_next_times_across_month_ends_and_leap_days() -> None:
    assert schedule.next_time("0 0 31 * *", at("2026-01-31T00:00:00Z")) == at("2026-03-31T00:00Z")
    assert schedule.next_time("0 0 29 2 *", at("2026-01-01T00:00:00Z")) == at("2028-02-29T00:00Z")
    assert schedule.next_time("30 23 * * *", at("2026-02-28T23:30:00Z")) == at(
        "2026-03-01T23:30:00Z"
    )
    assert schedule.next_time("@daily", at("2026-12-31T12:00:00Z")) == at("2027-01-01T00:00Z")


def test_times_are_utc_whatever_offset_they_are_given_in() -> None:
    moment = datetime.fromisoformat("2026-03-01T03:30:00+02:00")  # 01:30Z
    assert schedule.next_time("0 2 * * *", moment) == at("2026-03-01T02:00:00Z")
    assert schedule.next_time("0 2 * * *", moment).tzinfo == UTC


def test_last_slot_is_at_or_before() -> None:
    assert schedule.last_slot("0 2 * * *", at("2026-03-01T02:00:00Z")) == at("2026-03-01T02:00Z")
    assert schedule.last_slot("0 2 * * *", at("2026-03-01T01:59:59Z")) == at("2026-02-28T02:00Z")


JOB = Job("backup:db", "0 2 * * *")


def due(history: History, now: str) -> bool:
    return schedule.due_jobs([JOB], {JOB.name: history}, at(now)) == [JOB]


def test_a_new_job_waits_for_its_first_slot() -> None:
    since = at("2026-03-01T00:00:00Z")
    assert not due(History(since), "2026-03-01T01:59:00Z")
    assert due(History(since), "2026-03-01T02:00:00Z")
    assert due(History(at("2026-03-01T02:00:00Z")), "2026-03-01T02:00:00Z")  # a slot at start
    assert schedule.due_jobs([JOB], {}, at("2026-03-09T00:00:00Z")) == []  # no history: not yet


def test_a_job_runs_once_per_slot_whatever_its_outcome() -> None:
    ran = History(at("2026-03-01T00:00:00Z"), last_run=at("2026-03-01T02:00:00Z"))
    assert not due(ran, "2026-03-01T02:00:00Z")
    assert not due(ran, "2026-03-02T01:59:59Z")
    assert due(ran, "2026-03-02T02:00:00Z")


def test_missed_slots_are_caught_up_once() -> None:
    last = History(at("2026-03-01T00:00:00Z"), last_run=at("2026-03-03T02:00:00Z"))
    assert due(last, "2026-03-06T00:00:00Z")  # three slots missed: due, once
    after_catch_up = History(last.since, last_run=at("2026-03-06T00:00:00Z"))
    assert not due(after_catch_up, "2026-03-06T01:59:00Z")  # not again for the other slots
    assert due(after_catch_up, "2026-03-06T02:00:00Z")  # then on schedule


def test_next_due_is_the_earliest_slot_of_any_job() -> None:
    jobs = [JOB, Job("prune", "@weekly")]
    history = {j.name: History(at("2026-03-01T00:00:00Z")) for j in jobs}
    assert schedule.next_due(jobs, history, at("2026-03-07T03:00:00Z")) == at("2026-03-08T00:00Z")
    assert schedule.next_due([], {}, at("2026-03-07T03:00:00Z")) is None


def test_on_calendar_translates_cron_for_systemd() -> None:
    assert schedule.on_calendar("@daily") == ["*-*-* 00:00:00 UTC"]
    assert schedule.on_calendar("*/15 2 * * 1-5") == [
        "Mon,Tue,Wed,Thu,Fri *-*-* 02:00,15,30,45:00 UTC"
    ]
    # cron: day 1 OR Sunday; systemd ANDs within a line, ORs its lines
    assert schedule.on_calendar("0 3 1 * 0") == ["Sun *-*-* 03:00:00 UTC", "*-*-01 03:00:00 UTC"]
    with pytest.raises(ValueError, match="'L'"):
        schedule.on_calendar("0 0 L * *")


def systemd_elapses(calendars: list[str], base: str, count: int) -> list[datetime]:
    """The next ``count`` times any of ``calendars`` fires after ``base``, by systemd itself."""
    import re

    proc = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={count}", f"--base-time={base}", *calendars],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", proc.stdout)
    return sorted({at(f"{t.replace(' ', 'T')}Z") for t in found})[:count]


@pytest.mark.parametrize(
    "expr", ["@daily", "@weekly", "@monthly", "*/20 1-3 * * *", "0 3 1,15 * 0", "5 4 * 2,8 6"]
)
def test_systemd_fires_at_the_same_times_as_the_cron_expression(expr: str) -> None:
    base = at("2026-02-25T00:00:00Z")
    expected, moment = [], base
    for _ in range(12):
        moment = schedule.next_time(expr, moment)
        expected.append(moment)
    assert systemd_elapses(schedule.on_calendar(expr), "2026-02-25 00:00:00 UTC", 12) == expected


# -- `emberkeep run` under a simulated clock ----------------------------------------------


def make_site(site: Site, tmp_path: Path, sources: dict[str, str], extra: str = "") -> None:
    """A site with one files source per name (its tree under tmp_path/NAME), scheduled."""
    blocks = []
    for name, cron in sources.items():
        tree = tmp_path / name
        if name != "late":
            tree.mkdir(exist_ok=True)
            (tree / "file.txt").write_text(f"{name}\n")
        blocks.append(
            f'[[sources]]\nname = "{name}"\ntype = "files"\npaths = ["{tree}"]\n'
            f'schedule = "{cron}"\n'
        )
    site.write_config(None, extra_sources="\n".join(blocks), extra=extra)
    site.run("init")


def run(site: Site, start: str, until: str, ok: bool | None = True) -> list[dict[str, Any]]:
    site.env["EMBERKEEP_NOW"] = start
    proc = site.run("run", "--until", until, "--json", ok=ok)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def snapshot_times(site: Site) -> dict[str, list[str]]:
    times: dict[str, list[str]] = {}
    for snap in site.snapshots():
        times.setdefault(snap["source"], []).append(snap["time"])
    return times


def days(pattern: str, *numbers: int) -> list[str]:
    return [pattern.format(n) for n in numbers]


def test_each_source_is_backed_up_at_its_times(site: Site, tmp_path: Path) -> None:
    make_site(
        site,
        tmp_path,
        {"media": "30 2 * * *", "config": "0 3 * * 0"},
        extra='[prune]\nschedule = "@daily"\n[check]\nschedule = "0 5 * * 0"\n',
    )
    events = run(site, "2026-03-01T00:00:00Z", "2026-03-08T12:00:00Z")
    assert snapshot_times(site) == {
        "media": days("2026-03-{:02d}T02:30:00Z", *range(1, 9)),
        "config": ["2026-03-01T03:00:00Z", "2026-03-08T03:00:00Z"],  # Sundays
    }
    ends = [(e["time"], e["job"], e["outcome"]) for e in events if e["event"] == "end"]
    assert [e for e in ends if e[1] == "prune"] == [
        (t, "prune", "ok") for t in days("2026-03-{:02d}T00:00:00Z", *range(1, 9))
    ]
    assert [e[0] for e in ends if e[1] == "check"] == days("2026-03-{:02d}T05:00:00Z", 1, 8)
    assert all(outcome == "ok" for _t, _j, outcome in ends)
    site.run("check")


def test_a_failing_job_is_recorded_and_retried_at_its_next_slot_not_before(
    site: Site, tmp_path: Path
) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *", "late": "0 6 * * *"})
    events = run(site, "2026-03-01T00:00:00Z", "2026-03-03T12:00:00Z", ok=False)
    late = [e for e in events if e["job"] == "backup:late" and e["event"] == "end"]
    assert [(e["time"], e["outcome"]) for e in late] == [
        (t, "failed") for t in days("2026-03-{:02d}T06:00:00Z", 1, 2, 3)
    ]
    assert str(tmp_path / "late") in late[0]["error"]
    # the loop survived: the other source ran on schedule
    assert snapshot_times(site) == {"media": days("2026-03-{:02d}T02:00:00Z", 1, 2, 3)}
    state_file = site.state_dir / "scheduler.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    record = json.loads(state_file.read_text())["jobs"]["backup:late"]
    assert record["outcome"] == "failed"
    assert record["last_run"].startswith("2026-03-03T06:00:00")
    assert str(tmp_path / "late") in record["error"]

    (tmp_path / "late").mkdir()  # fixed; the restart does not retry before the next slot
    (tmp_path / "late" / "file.txt").write_text("late\n")
    events = run(site, "2026-03-03T12:00:00Z", "2026-03-05T00:00:00Z")
    late = [e for e in events if e["job"] == "backup:late" and e["event"] == "end"]
    assert [(e["time"], e["outcome"]) for e in late] == [("2026-03-04T06:00:00Z", "ok")]
    assert snapshot_times(site)["late"] == ["2026-03-04T06:00:00Z"]
    record = json.loads(state_file.read_text())["jobs"]["backup:late"]
    assert (record["outcome"], record["error"]) == ("ok", None)


def test_after_an_outage_each_source_catches_up_once_then_runs_on_schedule(
    site: Site, tmp_path: Path
) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *", "db": "0 */12 * * *"})
    run(site, "2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z")
    # down from day 3 to day 6: media missed 3 slots, db 6
    events = run(site, "2026-03-06T09:00:00Z", "2026-03-08T00:00:00Z")
    starts = [(e["time"], e["job"]) for e in events if e["event"] == "start"]
    assert starts[:2] == [
        ("2026-03-06T09:00:00Z", "backup:media"),
        ("2026-03-06T09:00:00Z", "backup:db"),
    ]
    assert snapshot_times(site) == {
        "media": [
            *days("2026-03-{:02d}T02:00:00Z", 1, 2),
            "2026-03-06T09:00:00Z",
            "2026-03-07T02:00:00Z",
        ],
        "db": [
            "2026-03-01T00:00:00Z",
            "2026-03-01T12:00:00Z",
            "2026-03-02T00:00:00Z",
            "2026-03-02T12:00:00Z",
            "2026-03-03T00:00:00Z",
            "2026-03-06T09:00:00Z",  # the one catch-up
            "2026-03-06T12:00:00Z",
            "2026-03-07T00:00:00Z",
            "2026-03-07T12:00:00Z",
            "2026-03-08T00:00:00Z",
        ],
    }


def test_once_runs_what_is_due_and_exits(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *"})
    run(site, "2026-03-01T00:00:00Z", "2026-03-01T03:00:00Z")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T05:00:00Z"
    assert site.run("run", "--once").stdout == ""  # nothing due
    site.env["EMBERKEEP_NOW"] = "2026-03-04T05:00:00Z"
    out = site.run("run", "--once").stdout
    assert "2026-03-04T05:00:00Z backup:media: ok" in out
    assert len(snapshot_times(site)["media"]) == 2


def test_jitter_delays_each_run_by_at_most_its_seconds(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *"})
    site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
    site.run("run", "--until", "2026-03-05T00:00:00Z", "--jitter", "600")
    times = [at(t) for t in snapshot_times(site)["media"]]
    slots = [at(t) for t in days("2026-03-{:02d}T02:00:00Z", 1, 2, 3, 4)]
    assert len(times) == 4
    assert all(0 <= (t - slot).total_seconds() <= 600 for t, slot in zip(times, slots, strict=True))
    assert site.run("run", "--once", "--jitter", "-1", ok=False).returncode == 2
    proc = site.run("run", "--until", "2026-02-01T00:00:00Z", ok=False)
    assert proc.returncode == 2 and "before the start" in proc.stderr


def test_bad_schedule_and_nothing_to_run_exit_2(site: Site, tmp_path: Path) -> None:
    site.write_config([tmp_path], extra='[check]\nschedule = "every day"\n')
    proc = site.run("run", "--once", ok=False)
    assert proc.returncode == 2 and "check.schedule" in proc.stderr
    site.write_config([tmp_path])
    proc = site.run("run", "--once", ok=False)
    assert proc.returncode == 2 and "schedule" in proc.stderr


def test_schedule_print_cron_and_systemd(site: Site, tmp_path: Path) -> None:
    make_site(
        site,
        tmp_path,
        {"media": "@daily", "config": "0 3 1 * 0"},
        extra='[check]\nschedule = "@weekly"\nread_data_subset = "10%"\n',
    )
    cron = site.run("schedule", "--print", "cron").stdout.splitlines()
    config = str(site.config_path.resolve())
    assert "CRON_TZ=UTC" in cron
    assert any(
        line.startswith("0 0 * * * ") and line.endswith(f"-c {config} backup media -q")
        for line in cron
    )
    assert any(
        line.startswith("0 0 * * 0 ") and "check --read-data-subset 10\\%" in line for line in cron
    )
    units = site.run("schedule", "--print", "systemd").stdout
    assert "OnCalendar=Sun *-*-* 03:00:00 UTC\nOnCalendar=*-*-01 03:00:00 UTC\n" in units
    assert "--read-data-subset 10%% -q" in units
    assert "ExecStart=" in units and " run\n" in units


# -- signals, in real time ----------------------------------------------------------------


def start_daemon(site: Site, now: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), "run", "--json"]
    env = {**os.environ, **site.env, "EMBERKEEP_NOW": now}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_state(site: Site, timeout: float = 120) -> None:
    """Poll until the daemon has written scheduler.json (it is running its loop)."""
    deadline = time.monotonic() + timeout
    while not (site.state_dir / "scheduler.json").exists():
        assert time.monotonic() < deadline, "the scheduler never wrote its state"
        time.sleep(0.01)


def data_packs(site: Site) -> set[Path]:
    return set((site.repo / "data").rglob("*"))


def wait_for_new_pack(site: Site, before: set[Path], timeout: float = 120) -> None:
    """Poll until a data pack not in ``before`` is there (the backup is storing data)."""
    deadline = time.monotonic() + timeout
    while not data_packs(site) - before:
        assert time.monotonic() < deadline, "the backup stored no pack"
        time.sleep(0.01)


def read_stderr_until(proc: subprocess.Popen[str], text: str) -> str:
    """The daemon's stderr up to and including the first line holding ``text``."""
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"the daemon never said {text!r}:\n{seen}")


def big_tree(root: Path, files: int = 20000) -> None:
    for i in range(files):
        folder = root / f"d{i // 500}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i}").write_bytes(os.urandom(2048))


def wait_for_start(proc: subprocess.Popen[str], job: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "start" and event["job"] == job:
            return
    raise AssertionError(f"{job} never started:\n{proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_mid_backup_leaves_no_partial_snapshot(
    site: Site, tmp_path: Path, signals: int
) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *"})
    run(site, "2026-03-01T00:00:00Z", "2026-03-01T03:00:00Z")  # one small snapshot
    big_tree(tmp_path / "media")
    packs = data_packs(site)
    proc = start_daemon(site, "2026-03-05T00:00:00Z")  # due: the catch-up starts at once
    wait_for_start(proc, "backup:media")
    wait_for_new_pack(site, packs)  # mid-backup: 16 of its 40 MiB stored, none committed
    proc.send_signal(signal.SIGTERM)
    acknowledged = ""
    if signals == 2:
        # Two signals closer together than Python runs its handler count as one: the second
        # goes only once the daemon has said it saw the first.
        acknowledged = read_stderr_until(proc, "stopping after the running job")
        proc.send_signal(signal.SIGTERM)
    _out, rest = proc.communicate(timeout=120)
    err = acknowledged + rest
    assert "stopping after the running job" in err
    assert "Traceback" not in err
    snaps = site.snapshots()
    if signals == 1:  # the running backup finished and committed, then the loop stopped
        assert proc.returncode == 0, err
        assert [s["time"] for s in snaps] == ["2026-03-01T02:00:00Z", "2026-03-05T00:00:00Z"]
        assert snaps[-1]["summary"]["files"] == 20001
    else:  # aborted: nothing committed, nothing recorded, so the next start catches up
        assert proc.returncode == 130, err
        assert [s["time"] for s in snaps] == ["2026-03-01T02:00:00Z"]
        record = json.loads((site.state_dir / "scheduler.json").read_text())["jobs"]
        assert record["backup:media"]["last_run"].startswith("2026-03-01T02:00:00")
    site.run("check", "--read-data")


def test_sigterm_while_sleeping_stops_at_once(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *"})
    proc = start_daemon(site, "2026-03-01T00:00:00Z")  # next slot: two hours away
    wait_for_state(site)  # written once the signal handlers are in place
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 20  # not the two hours to the next slot
    assert site.snapshots() == []


def test_a_second_scheduler_on_the_same_state_is_refused(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *"})
    proc = start_daemon(site, "2026-03-01T00:00:00Z")
    try:
        wait_for_state(site)
        site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
        proc2 = site.run("run", "--once", ok=False)
        assert "another `emberkeep run`" in proc2.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    "damage",
    [
        '{"version": 1, "jobs": {"backup:media": {"since": 5, "last_run": ["x"]}}}',
        "not json at all",
    ],
    ids=["wrong types", "garbage"],
)
def test_a_damaged_scheduler_state_is_reported_and_rebuilt(
    site: Site, tmp_path: Path, damage: str
) -> None:
    make_site(site, tmp_path, {"media": "0 2 * * *"})
    state_file = site.state_dir / "scheduler.json"
    state_file.write_text(damage)
    site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
    proc = site.run("run", "--until", "2026-03-02T03:00:00Z", "--json")  # exit 0, no traceback
    assert "not a scheduler state" in proc.stderr and "moved aside" in proc.stderr, proc.stderr
    assert state_file.with_name("scheduler.json.damaged").read_text() == damage
    ends = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["time"], e["outcome"]) for e in ends if e["event"] == "end"] == [
        ("2026-03-01T02:00:00Z", "ok"),
        ("2026-03-02T02:00:00Z", "ok"),
    ]
    record = json.loads(state_file.read_text())["jobs"]["backup:media"]
    assert record["outcome"] == "ok" and record["last_run"].startswith("2026-03-02T02:00")
