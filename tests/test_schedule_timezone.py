"""Schedules in the site's timezone (``[site] timezone``) across both DST changes of 2026
in Europe/Berlin (policy/schedule.py): a 02:30 that does not exist (29 March) runs once at
03:00 local, one that happens twice (25 October) runs once, at its first occurrence; an
hourly job runs in both passes of the repeated hour. Then `emberkeep run --until` under a
simulated clock, the config check, and the printed crontab and systemd units."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Site
from test_scheduler import at, make_site, run, snapshot_times

from emberkeep.policy import schedule

BERLIN = "Europe/Berlin"


def slots(expr: str, start: str, count: int, zone: str = BERLIN) -> list[datetime]:
    out, moment = [], at(start)
    for _ in range(count):
        moment = schedule.next_time(expr, moment, zone)
        out.append(moment)
    return out


def test_spring_forward_the_missing_0230_runs_once_at_0300_local() -> None:
    assert slots("30 2 * * *", "2026-03-27T12:00:00Z", 4) == [
        at("2026-03-28T01:30:00Z"),  # 02:30 CET (UTC+1)
        at("2026-03-29T01:00:00Z"),  # 02:30 does not exist: 03:00 CEST, the gap's end
        at("2026-03-30T00:30:00Z"),  # 02:30 CEST (UTC+2)
        at("2026-03-31T00:30:00Z"),
    ]
    # two slots in the gap still make one run
    assert slots("15,45 2 * * *", "2026-03-28T12:00:00Z", 2) == [
        at("2026-03-29T01:00:00Z"),
        at("2026-03-30T00:15:00Z"),
    ]
    # a job at 03:00 is untouched by the change
    assert slots("0 3 * * *", "2026-03-28T12:00:00Z", 2) == [
        at("2026-03-29T01:00:00Z"),
        at("2026-03-30T01:00:00Z"),
    ]


def test_fall_back_the_repeated_0230_runs_once() -> None:
    assert slots("30 2 * * *", "2026-10-23T12:00:00Z", 4) == [
        at("2026-10-24T00:30:00Z"),  # 02:30 CEST
        at("2026-10-25T00:30:00Z"),  # the first 02:30; the second (01:30Z, CET) is skipped
        at("2026-10-26T01:30:00Z"),  # 02:30 CET
        at("2026-10-27T01:30:00Z"),
    ]
    assert slots("*/30 2 * * *", "2026-10-24T12:00:00Z", 3) == [
        at("2026-10-25T00:00:00Z"),
        at("2026-10-25T00:30:00Z"),
        at("2026-10-26T01:00:00Z"),  # nothing in the second pass of 02:xx
    ]


def test_an_hourly_job_runs_in_both_passes_of_the_repeated_hour() -> None:
    day = slots("0 * * * *", "2026-10-24T21:59:00Z", 30)
    local_day = [t for t in day if t < at("2026-10-25T23:00:00Z")]  # 25 October, local
    assert len(local_day) == 25  # the day has 25 hours
    assert len(set(local_day)) == 25


def test_last_slot_and_due_agree_with_next_time_across_the_changes() -> None:
    assert schedule.last_slot("30 2 * * *", at("2026-10-25T03:00:00Z"), BERLIN) == at(
        "2026-10-25T00:30:00Z"
    )
    assert schedule.last_slot("30 2 * * *", at("2026-03-29T01:30:00Z"), BERLIN) == at(
        "2026-03-29T01:00:00Z"
    )
    history = schedule.History(since=at("2026-10-20T00:00:00Z"), last_run=at("2026-10-25T00:30Z"))
    # at the second 02:30 the job is not due again
    assert not schedule.is_due("30 2 * * *", history, at("2026-10-25T01:30:00Z"), BERLIN)
    assert schedule.is_due("30 2 * * *", history, at("2026-10-26T01:30:00Z"), BERLIN)


def test_utc_is_the_default_and_unchanged() -> None:
    assert slots("30 2 * * *", "2026-03-28T12:00:00Z", 2, "UTC") == [
        at("2026-03-29T02:30:00Z"),
        at("2026-03-30T02:30:00Z"),
    ]


def _berlin(site: Site) -> None:
    text = site.config_path.read_text()
    site.config_path.write_text(
        text.replace('name = "test-site"\n', f'name = "test-site"\ntimezone = "{BERLIN}"\n', 1)
    )


@pytest.mark.parametrize(
    ("start", "until", "expected"),
    [
        (
            "2026-03-27T12:00:00Z",
            "2026-03-31T12:00:00Z",
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z",
             "2026-03-31T00:30:00Z"],
        ),
        (
            "2026-10-23T12:00:00Z",
            "2026-10-27T12:00:00Z",
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z",
             "2026-10-27T01:30:00Z"],
        ),
    ],
)  # fmt: skip
def test_run_until_backs_up_at_the_berlin_instants(
    site: Site, tmp_path: Path, start: str, until: str, expected: list[str]
) -> None:
    make_site(site, tmp_path, {"media": "30 2 * * *"})
    _berlin(site)
    events = run(site, start, until)
    assert snapshot_times(site) == {"media": expected}
    starts = [e["time"] for e in events if e["event"] == "start" and e["job"] == "backup:media"]
    assert starts == expected


def test_an_unknown_timezone_is_refused_naming_the_field(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path, {"media": "30 2 * * *"})
    text = site.config_path.read_text()
    site.config_path.write_text(text.replace('name = "test-site"\n', 'name = "test-site"\n'
                                             'timezone = "Europe/Berlinn"\n', 1))  # fmt: skip
    proc = site.run("status", ok=False)
    assert proc.returncode == 2
    assert "site.timezone" in proc.stderr and "Europe/Berlinn" in proc.stderr


def test_printed_units_carry_the_zone_and_warn_of_the_gap(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path, {"media": "30 2 * * *", "config": "0 4 * * *"})
    _berlin(site)
    cron = site.run("schedule", "--print", "cron").stdout
    assert f"CRON_TZ={BERLIN}\n" in cron and "30 2 * * *" in cron
    site.env["EMBERKEEP_NOW"] = "2026-01-01T00:00:00Z"
    units = site.run("schedule", "--print", "systemd").stdout
    assert f"OnCalendar=*-*-* 02:30:00 {BERLIN}\n" in units
    assert f"OnCalendar=*-*-* 04:00:00 {BERLIN}\n" in units
    media_timer = units.split("# emberkeep-backup-media.timer")[1].split("# emberkeep-")[0]
    config_timer = units.split("# emberkeep-backup-config.timer")[1].split("# emberkeep-")[0]
    assert "2026-03-29 02:30 does not exist in Europe/Berlin" in media_timer
    assert "does not exist" not in config_timer
    # systemd itself reads the zone: it agrees on the repeated 02:30 (once), and skips the
    # missing one, as the note says
    proc = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=4", "--base-time=2026-10-23 12:00:00 UTC",
         f"*-*-* 02:30:00 {BERLIN}"],
        capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    fired = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if "UTC" in line and
             ("elapse" in line or "Iter" in line)]  # fmt: skip
    assert [f.split(" ", 1)[1] for f in fired] == [
        f"{t.replace('T', ' ').removesuffix('Z')} UTC"
        for t in ("2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z",
                  "2026-10-27T01:30:00Z")
    ]  # fmt: skip
