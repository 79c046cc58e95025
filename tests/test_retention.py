"""Retention (GFS; docs/design.md, "Policy"): the policy as a pure function, then `prune`
applying it.

The semantics are in src/emberkeep/policy/retention.py: restic's `forget --keep-*` per
source, periods in UTC, newest snapshot of each of the N most recent periods that have
snapshots, the oldest kept too while a rule has counts left, `within` against now.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Site, restored, stored_bytes

from emberkeep import clock, config
from emberkeep.config import Retention
from emberkeep.durations import Duration
from emberkeep.policy import retention
from emberkeep.repository.snapshot import Snapshot
from emberkeep.runner.backup import run_backup
from emberkeep.site import Site as ApiSite

# -- the policy, as a pure function ------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def snap(time: str, source: str = "db", seq: int | None = None) -> Snapshot:
    """A snapshot header with only what retention reads; its id is its time (readable)."""
    return Snapshot(
        source=source,
        source_type="files",
        time=at(time),
        host="h",
        tree=b"",
        blobs=b"",
        seq=seq,
        id=f"{source}@{time}",
    )


def daily_snapshots(first: str, days: int, hour: str = "02:00:00", source: str = "db"):
    start = date.fromisoformat(first)
    return [snap(f"{start + timedelta(days=d)}T{hour}Z", source) for d in range(days)]


def kept(snapshots: list[Snapshot], now: str, source: str = "db", **rules: Any) -> dict[str, str]:
    if "within" in rules:  # the config's type, as config.load makes it
        rules["within"] = Duration(rules["within"])
    return retention.keep(snapshots, at(now), {source: Retention(**rules)})


def test_no_snapshots_keeps_nothing_and_fails_nothing() -> None:
    assert kept([], "2026-01-01T00:00:00Z", daily=3) == {}
    assert retention.keep([], at("2026-01-01T00:00:00Z"), {}) == {}


def test_daily_keeps_the_newest_n_days_counting_back_from_the_newest() -> None:
    snaps = daily_snapshots("2026-01-01", 20)
    result = kept(snaps, "2026-03-01T00:00:00Z", daily=7)  # 'now' is far later: no matter
    assert result == {f"db@2026-01-{20 - i:02d}T02:00:00Z": f"daily {i + 1}/7" for i in range(7)}


def test_several_snapshots_in_one_day_the_newest_is_kept() -> None:
    snaps = [
        snap(f"2026-01-0{day}T{hour}:00:00Z") for day in (1, 2, 3) for hour in ("01", "09", "23")
    ]
    assert kept(snaps, "2026-01-04T00:00:00Z", daily=2) == {
        "db@2026-01-03T23:00:00Z": "daily 1/2",
        "db@2026-01-02T23:00:00Z": "daily 2/2",
    }


def test_a_rule_with_counts_left_also_keeps_the_oldest() -> None:
    snaps = [snap("2026-01-05T01:00:00Z"), snap("2026-01-05T09:00:00Z"), snap("2026-01-06T01:00Z")]
    assert kept(snaps, "2026-01-06T12:00:00Z", daily=7) == {
        "db@2026-01-06T01:00Z": "daily 1/7",
        "db@2026-01-05T09:00:00Z": "daily 2/7",
        "db@2026-01-05T01:00:00Z": "daily 3/7 (oldest)",
    }
    # once the rule is full, the oldest goes like any other
    assert "db@2026-01-05T01:00:00Z" not in kept(snaps, "2026-01-06T12:00:00Z", daily=2)


def test_days_without_snapshots_are_skipped_not_counted() -> None:
    snaps = [snap(f"2026-01-{d:02d}T02:00:00Z") for d in (1, 5, 9, 30)]
    assert sorted(kept(snaps, "2026-06-01T00:00:00Z", daily=3)) == [
        "db@2026-01-05T02:00:00Z",
        "db@2026-01-09T02:00:00Z",
        "db@2026-01-30T02:00:00Z",
    ]


def test_periods_are_utc_whatever_offset_a_time_was_written_with() -> None:
    snaps = [
        snap("2026-01-01T22:00:00Z"),
        snap("2026-01-02T00:30:00+02:00"),  # 2026-01-01T22:30Z: the same UTC day, newer
        snap("2026-01-02T00:10:00Z"),
    ]
    assert kept(snaps, "2026-01-03T00:00:00Z", daily=2) == {
        "db@2026-01-02T00:10:00Z": "daily 1/2",
        "db@2026-01-02T00:30:00+02:00": "daily 2/2",
    }


def test_iso_weeks_run_monday_to_sunday_across_the_new_year() -> None:
    # 2025-12-29 (Mon) .. 2026-01-04 (Sun) is ISO week 2026-W01; 2026-01-05 starts W02
    snaps = [snap(f"{d}T12:00:00Z") for d in ("2025-12-28", "2025-12-29", "2026-01-04")]
    snaps.append(snap("2026-01-05T00:00:00Z"))
    assert kept(snaps, "2026-01-06T00:00:00Z", weekly=3) == {
        "db@2026-01-05T00:00:00Z": "weekly 1/3",
        "db@2026-01-04T12:00:00Z": "weekly 2/3",  # newest of W01, which holds 2025-12-29
        "db@2025-12-28T12:00:00Z": "weekly 3/3",  # a Sunday: 2025-W52
    }


def test_week_53_is_one_week_but_two_years() -> None:
    # 2020-12-28 (Mon) .. 2021-01-03 (Sun) is ISO week 2020-W53
    snaps = [snap("2020-12-28T00:00:00Z"), snap("2021-01-03T00:00:00Z")]
    assert kept(snaps, "2021-01-04T00:00:00Z", weekly=1) == {
        "db@2021-01-03T00:00:00Z": "weekly 1/1"
    }
    assert kept(snaps, "2021-01-04T00:00:00Z", yearly=2) == {
        "db@2021-01-03T00:00:00Z": "yearly 1/2",
        "db@2020-12-28T00:00:00Z": "yearly 2/2",
    }


def test_month_ends_and_leap_days() -> None:
    times = [
        "2028-01-31T23:59:59Z",
        "2028-02-01T00:00:00Z",
        "2028-02-28T23:00:00Z",
        "2028-02-29T23:59:59Z",  # a leap day: still February
        "2028-03-01T00:00:00Z",
        "2028-03-31T00:00:00Z",
    ]
    assert kept([snap(t) for t in times], "2028-04-01T00:00:00Z", monthly=3) == {
        "db@2028-03-31T00:00:00Z": "monthly 1/3",
        "db@2028-02-29T23:59:59Z": "monthly 2/3",
        "db@2028-01-31T23:59:59Z": "monthly 3/3",
    }


def test_hourly_and_yearly() -> None:
    snaps = [snap(f"2026-05-01T{h:02d}:{m:02d}:00Z") for h in (10, 11, 12) for m in (0, 59)]
    assert kept(snaps, "2026-05-01T13:00:00Z", hourly=2) == {
        "db@2026-05-01T12:59:00Z": "hourly 1/2",
        "db@2026-05-01T11:59:00Z": "hourly 2/2",
    }
    years = [snap(f"{y}-{m}T00:00:00Z") for y in (2023, 2024, 2025) for m in ("01-01", "12-31")]
    assert sorted(kept(years, "2026-01-01T00:00:00Z", yearly=2).values()) == [
        "yearly 1/2",
        "yearly 2/2",
    ]
    assert sorted(kept(years, "2026-01-01T00:00:00Z", yearly=2)) == [
        "db@2024-12-31T00:00:00Z",
        "db@2025-12-31T00:00:00Z",
    ]


def test_within_keeps_what_is_strictly_newer_than_now_minus_the_age() -> None:
    snaps = [snap(t) for t in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-02T00:00Z")]
    assert kept(snaps, "2026-01-03T00:00:00Z", within="2d") == {
        "db@2026-01-01T00:00:01Z": "within 2d",
        "db@2026-01-02T00:00Z": "within 2d",
    }


def test_within_alone_never_removes_a_sources_last_snapshot() -> None:
    snaps = [snap("2026-01-01T00:00:00Z"), snap("2026-01-02T00:00:00Z")]
    assert kept(snaps, "2026-02-01T00:00:00Z", within="2d") == {
        "db@2026-01-02T00:00:00Z": retention.NEWEST_KEPT
    }


def test_a_snapshot_kept_by_several_rules_is_kept_once_naming_each() -> None:
    snaps = daily_snapshots("2026-01-01", 45)  # to 2026-02-14, a Saturday
    result = kept(snaps, "2026-02-14T03:00:00Z", within="1d", daily=3, weekly=2, monthly=2)
    assert result == {
        "db@2026-02-14T02:00:00Z": "within 1d, daily 1/3, weekly 1/2, monthly 1/2",
        "db@2026-02-13T02:00:00Z": "daily 2/3",
        "db@2026-02-12T02:00:00Z": "daily 3/3",
        "db@2026-02-08T02:00:00Z": "weekly 2/2",  # Sunday
        "db@2026-01-31T02:00:00Z": "monthly 2/2",
    }


def test_sources_are_decided_apart_and_unknown_ones_are_kept() -> None:
    snaps = daily_snapshots("2026-01-01", 5, source="db")
    snaps += daily_snapshots("2026-01-01", 5, source="media")
    snaps += daily_snapshots("2026-01-01", 2, source="gone")
    snaps += daily_snapshots("2026-01-01", 2, source="empty")
    policies = {"db": Retention(daily=1), "media": None, "empty": Retention()}
    result = retention.keep(snaps, at("2026-01-06T00:00:00Z"), policies)
    assert result == {
        "db@2026-01-05T02:00:00Z": "daily 1/1",
        **{s.id: "no retention policy" for s in snaps if s.source in ("media", "empty")},
        **{s.id: "source not in config" for s in snaps if s.source == "gone"},
    }


def test_newest_is_the_snapshot_written_last_even_when_its_clock_stepped_back() -> None:
    """Written in the order of their seq: the third one's clock was 10 hours behind."""
    snaps = [
        snap("2026-03-10T02:00:00Z", seq=1),
        snap("2026-03-10T20:00:00Z", seq=2),
        snap("2026-03-10T10:00:00Z", seq=3),
    ]
    assert kept(snaps, "2026-03-10T21:00:00Z", daily=1) == {"db@2026-03-10T10:00:00Z": "daily 1/1"}
    # headers of earlier versions (no seq) were all written before any that has one
    older = [snap("2026-03-11T02:00:00Z"), snap("2026-03-12T02:00:00Z")]
    assert kept([*older, *snaps], "2026-03-12T03:00:00Z", daily=1) == {
        "db@2026-03-10T10:00:00Z": "daily 1/1"
    }
    # a day counted once, however the clocks went back and forth
    zigzag = [
        snap("2026-03-09T02:00:00Z", seq=1),
        snap("2026-03-10T02:00:00Z", seq=2),
        snap("2026-03-09T05:00:00Z", seq=3),
        snap("2026-03-08T02:00:00Z", seq=4),
    ]
    assert kept(zigzag, "2026-03-10T03:00:00Z", daily=3) == {
        "db@2026-03-08T02:00:00Z": "daily 1/3",
        "db@2026-03-09T05:00:00Z": "daily 2/3",
        "db@2026-03-10T02:00:00Z": "daily 3/3",
    }


def test_a_snapshot_dated_over_a_day_ahead_takes_no_period_and_is_kept() -> None:
    real = daily_snapshots("2026-03-01", 3)
    forged = [snap("2027-03-01T02:00:00Z", seq=99), snap("2027-03-02T02:00:00Z", seq=100)]
    result = kept([*real, *forged], "2026-03-03T03:00:00Z", daily=3, within="1d")
    assert {k: v for k, v in result.items() if k in {s.id for s in real}} == {
        "db@2026-03-03T02:00:00Z": "within 1d, daily 1/3",
        "db@2026-03-02T02:00:00Z": "daily 2/3",
        "db@2026-03-01T02:00:00Z": "daily 3/3",
    }
    assert all(result[f.id] == retention.FUTURE for f in forged)
    # less than a day ahead is a clock a little off: it counts
    close = snap("2026-03-03T20:00:00Z", seq=101)
    assert kept([*real, close], "2026-03-03T03:00:00Z", daily=1) == {close.id: "daily 1/1"}


def test_the_strategys_mongodb_retention_after_400_days() -> None:
    """Worked by hand: daily from 2025-01-01 to 2026-02-04 (a Wednesday), 02:00 UTC."""
    snaps = daily_snapshots("2025-01-01", 400)
    result = kept(snaps, "2026-02-04T03:00:00Z", daily=14, weekly=13, monthly=12)
    assert sorted(result) == sorted(f"db@{d}T02:00:00Z" for d in MONGODB_400_DAYS)
    assert result["db@2026-02-04T02:00:00Z"] == "daily 1/14, weekly 1/13, monthly 1/12"
    assert result["db@2026-02-01T02:00:00Z"] == "daily 4/14, weekly 2/13"
    assert result["db@2026-01-31T02:00:00Z"] == "daily 5/14, monthly 2/12"
    assert result["db@2025-11-30T02:00:00Z"] == "weekly 11/13, monthly 4/12"
    assert result["db@2025-03-31T02:00:00Z"] == "monthly 12/12"


# daily 14: 2026-01-22 .. 2026-02-04. weekly 13: the Sundays 2025-11-16 .. 2026-02-01 and
# Wednesday 2026-02-04 (W06, newest of its week). monthly 12: 2026-02-04, then the last day
# of each month 2026-01 back to 2025-03. 14 + 10 + 9 = 33 once overlaps are counted once.
MONGODB_400_DAYS = (
    [f"2026-01-{d}" for d in range(22, 32)]
    + ["2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04"]
    + ["2026-01-18", "2026-01-11", "2026-01-04", "2025-12-28", "2025-12-21", "2025-12-14"]
    + ["2025-12-07", "2025-11-30", "2025-11-23", "2025-11-16"]
    + ["2025-12-31", "2025-10-31", "2025-09-30", "2025-08-31", "2025-07-31", "2025-06-30"]
    + ["2025-05-31", "2025-04-30", "2025-03-31"]
)


def test_a_target_override_replaces_the_sources_retention_in_that_target(tmp_path: Path) -> None:
    raw = {
        "site": {"name": "s", "state_dir": str(tmp_path)},
        "keys": {"recipients": ["age1p20dzap49j00296yar2hsz32vv2jg4pznt9dsug89q7l4lrnnfms9755wt"]},
        "sources": [
            {"name": "db", "type": "files", "paths": ["/a"], "retention": {"daily": 7}},
            {"name": "media", "type": "files", "paths": ["/b"]},
        ],
        "targets": [
            {"name": "local", "url": "file:///x"},
            {"name": "cold", "url": "file:///y", "retention": {"db": {"monthly": 6}}},
        ],
    }
    parsed = config.parse(raw, tmp_path / "c.toml")
    assert parsed.retention("local") == {"db": Retention(daily=7), "media": None}
    assert parsed.retention("cold") == {"db": Retention(monthly=6), "media": None}


# -- prune through the CLI ---------------------------------------------------------------


def files_source(name: str, path: Path, retention_line: str = "") -> str:
    return f'[[sources]]\nname = "{name}"\ntype = "files"\npaths = ["{path}"]\n{retention_line}\n'


def write_day(folder: Path, day: date, size: int = 1024) -> bytes:
    """Data that changes every day (and is known again from the day alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = random.Random(day.toordinal()).randbytes(size)
    (folder / "daily.bin").write_bytes(data)
    (folder / "day.txt").write_text(f"{day}\n")
    return data


def backup_on(site: Site, day: date, *sources: str) -> None:
    site.env["EMBERKEEP_NOW"] = f"{day}T02:00:00Z"
    site.run("backup", *sources, "-q")


def repo_state(repo: Path) -> dict[str, str]:
    """Every file under a file:// repository (leases aside) with the hash of its bytes."""
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.relative_to(repo).parts[0] != "locks"
    }


def decisions(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(d["id"], d["source"], d["action"], d["reason"]) for d in result["snapshots"]]


def test_dry_run_changes_nothing_and_shows_what_prune_then_does(site: Site, tmp_path: Path) -> None:
    db, media, old = tmp_path / "db", tmp_path / "media", tmp_path / "old"
    sources = [
        files_source("db", db, "retention = { daily = 3, weekly = 2 }"),
        files_source("media", media),  # no retention: everything stays
        files_source("old", old, "retention = { daily = 1 }"),
    ]
    site.write_config(extra_sources="".join(sources))
    site.run("init")
    first = date(2026, 3, 2)  # a Monday
    for n in range(10):
        day = first + timedelta(days=n)
        for folder in (db, media, old):
            write_day(folder, day)
        backup_on(site, day, "db", "media", *(["old"] if n < 2 else []))
    site.write_config(extra_sources="".join(sources[:2]))  # 'old' leaves the config

    before = repo_state(site.repo)
    dry = site.json("prune", "--dry-run", "--grace", "0s")["local"]
    assert repo_state(site.repo) == before
    assert dry["dry_run"] is True
    text = site.run("prune", "--dry-run").stdout
    assert "would remove 6 of 22 snapshots" in text
    assert repo_state(site.repo) == before

    by_source: dict[str, list[tuple[str, str]]] = {}
    for d in dry["snapshots"]:
        by_source.setdefault(d["source"], []).append((d["time"][:10], d["reason"]))
    assert by_source["db"] == [
        ("2026-03-02", "no retention rule keeps it"),
        ("2026-03-03", "no retention rule keeps it"),
        ("2026-03-04", "no retention rule keeps it"),
        ("2026-03-05", "no retention rule keeps it"),
        ("2026-03-06", "no retention rule keeps it"),
        ("2026-03-07", "no retention rule keeps it"),
        ("2026-03-08", "weekly 2/2"),  # Sunday
        ("2026-03-09", "daily 3/3"),
        ("2026-03-10", "daily 2/3"),
        ("2026-03-11", "daily 1/3, weekly 1/2"),
    ]
    assert {reason for _, reason in by_source["media"]} == {"no retention policy"}
    assert {reason for _, reason in by_source["old"]} == {"source not in config"}
    assert len(by_source["media"]) == 10 and len(by_source["old"]) == 2
    assert "remove" in text and "keep" in text and "daily 1/3, weekly 1/2" in text

    real = site.json("prune", "--grace", "0s")["local"]
    assert real["dry_run"] is False
    assert decisions(real) == decisions(dry)
    remaining = {s["id"] for s in site.snapshots()}
    assert remaining == {d["id"] for d in dry["snapshots"] if d["action"] == "keep"}
    assert real["packs_deleted"] > 0
    assert site.json("check", "--read-data")["local"]["ok"] is True


def test_forget_combines_with_retention(site: Site, tmp_path: Path) -> None:
    db = tmp_path / "db"
    site.write_config(extra_sources=files_source("db", db, "retention = { daily = 2 }"))
    site.run("init")
    for n in range(4):
        write_day(db, date(2026, 5, 1) + timedelta(days=n))
        backup_on(site, date(2026, 5, 1) + timedelta(days=n))
    ids = [s["id"] for s in site.snapshots()]
    for typo in ("", ids[-1][:1], ids[-1][:3]):  # too short to be a choice: refused, not guessed
        proc = site.run("prune", "--forget", typo, "--dry-run", ok=False)
        assert proc.returncode == 2 and "at least 4 characters" in proc.stderr, proc.stderr
    proc = site.run("prune", "--grace", "banana", "--dry-run", ok=False)
    assert proc.returncode == 2 and "'banana' is not a duration" in proc.stderr, proc.stderr
    proc = site.run("check", "--read-data-subset", "banana", ok=False)
    assert proc.returncode == 2 and "a percentage like 10%" in proc.stderr, proc.stderr
    # option typos are refused as they are parsed: no check is journaled as failed
    assert not [e for e in site.json("log") if e["kind"] == "check"]
    result = site.json("prune", "--forget", ids[-1][:10], "--grace", "0s")["local"]
    assert [(d["id"], d["action"], d["reason"]) for d in result["snapshots"]] == [
        (ids[0], "remove", "no retention rule keeps it"),
        (ids[1], "remove", "no retention rule keeps it"),
        (ids[2], "keep", "daily 2/2"),
        (ids[3], "remove", "--forget"),
    ]
    assert [s["id"] for s in site.snapshots()] == [ids[2]]


def test_each_target_applies_its_own_override(site: Site, tmp_path: Path) -> None:
    db = tmp_path / "db"
    local = f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
    cold_repo = tmp_path / "cold"
    cold = (
        f'[[targets]]\nname = "cold"\nurl = "file://{cold_repo}"\n'
        "retention = { db = { daily = 1 } }\n"
    )
    source = files_source("db", db, "retention = { daily = 3 }")
    # backups go to the first target: fill 'cold', then 'local', with four days each
    for round_, targets in enumerate((cold + local, local + cold)):
        site.write_config(extra_sources=source, targets=targets)
        site.run("init")
        for n in range(4):
            day = date(2026, 5, 1) + timedelta(days=n)
            write_day(db, day, size=1000 + 10 * round_ + n)  # new data in every backup
            backup_on(site, day)
    result = site.json("prune", "--grace", "0s")
    keeps = {
        target: [d["reason"] for d in r["snapshots"] if d["action"] == "keep"]
        for target, r in result.items()
    }
    assert keeps == {"local": ["daily 3/3", "daily 2/3", "daily 1/3"], "cold": ["daily 1/1"]}
    check = site.json("check", "--read-data")
    assert check["local"]["ok"] and check["cold"]["ok"]


@pytest.mark.parametrize(
    ("lines", "field", "words"),
    [
        ("", "sources[1] (files).retention.weekly", ["greater than or equal to 0"]),
        (
            "retention = { files = { daily = -2 } }",
            "targets[1] (local).retention.files.daily",
            ["greater than or equal to 0", "-2"],
        ),
        (
            "retention = { mongodb = { daily = 7 } }",
            "targets[1] (local).retention.mongodb",
            ["no source", "'mongodb'", "files"],
        ),
        (
            "retention = { files = { daily = 7 }, nosuch = { daily = 7 } }",
            "targets[1] (local).retention.nosuch",
            ["no source", "'nosuch'"],
        ),
        (
            "retention = { files = { dayly = 7 } }",
            "targets[1] (local).retention.files.dayly",
            ["unknown key"],
        ),
        (
            "retention = { files = { within = 'a week' } }",
            "targets[1] (local).retention.files.within",
            ["duration", "'7d'"],
        ),
    ],
)
def test_bad_retention_config_exits_2_naming_the_field(
    site: Site, tmp_path: Path, lines: str, field: str, words: list[str]
) -> None:
    retention_line = "retention = { weekly = -1 }" if not lines else "retention = { daily = 3 }"
    site.write_config(
        extra_sources=files_source("files", tmp_path / "src", retention_line),
        targets=f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n{lines}\n',
    )
    for command in (("prune",), ("prune", "--dry-run")):
        proc = site.run(*command, ok=False)
        assert proc.returncode == 2
        assert field in proc.stderr, proc.stderr
        for word in words:
            assert word in proc.stderr, (word, proc.stderr)
    assert not site.repo.exists()


# -- a simulated year ----------------------------------------------------------------------

FIRST_DAY = date(2025, 1, 1)
DAYS = 400  # to 2026-02-04
DAILY_SIZE = 24 * 1024
STATIC_SIZE = 256 * 1024
MONGODB = {"daily": 14, "weekly": 13, "monthly": 12}


def reference_keep(times: list[datetime]) -> set[datetime]:
    """The expected survivors, computed another way: per rule, the newest time of each of
    the N newest periods that have times, and the oldest time when fewer than N have."""
    periods = {
        "daily": lambda t: t.date(),
        "weekly": lambda t: tuple(t.isocalendar())[:2],
        "monthly": lambda t: (t.year, t.month),
    }
    survivors: set[datetime] = set()
    for rule, count in MONGODB.items():
        newest: dict[Any, datetime] = {}
        for t in times:
            key = periods[rule](t)
            newest[key] = max(newest.get(key, t), t)
        survivors |= {newest[key] for key in sorted(newest)[-count:]}
        if len(newest) < count:
            survivors.add(min(times))
    return survivors


@pytest.mark.slow
def test_a_simulated_year_of_daily_backups_keeps_exactly_the_strategys_snapshots(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 daily backups, pruned through the CLI every 30 days. The backups run in this
    process (the runner's backup, as `emberkeep backup` calls it, with the clock pinned the
    same way): 400 interpreter starts were half of this test's time."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "static.bin").write_bytes(random.Random(0).randbytes(STATIC_SIZE))
    strategy = "retention = { daily = 14, weekly = 13, monthly = 12 }"
    site.write_config(extra_sources=files_source("mongodb", src, strategy))
    site.run("init")
    api_site = ApiSite(config.load(str(site.config_path)))

    expected: set[datetime] = set()
    written = 0
    for n in range(DAYS):
        day = FIRST_DAY + timedelta(days=n)
        written += len(write_day(src / "today", day, DAILY_SIZE))
        monkeypatch.setenv(clock.ENV_VAR, f"{day}T02:00:00Z")
        run_backup(api_site, "mongodb")
        expected.add(datetime(day.year, day.month, day.day, 2, tzinfo=UTC))
        if (n + 1) % 30 == 0 or n == DAYS - 1:
            pruned = site.json("prune", "--grace", "0s")["local"]
            expected = reference_keep(sorted(expected))
            times = {at(s["time"]) for s in site.snapshots()}
            assert times == expected, f"after day {day}"
            said = {at(d["time"]) for d in pruned["snapshots"] if d["action"] == "keep"}
            assert said == expected
    assert sorted(t.date().isoformat() for t in expected) == sorted(MONGODB_400_DAYS)

    snapshots = site.snapshots()
    assert len(snapshots) == 33
    for chosen in (snapshots[0], snapshots[len(snapshots) // 2], snapshots[-1]):
        day = at(chosen["time"]).date()
        out = tmp_path / f"restore-{day}"
        site.run("restore", chosen["id"], "--to", out)
        back = restored(out, src)
        assert (back / "today" / "daily.bin").read_bytes() == write_day(
            tmp_path / "x", day, DAILY_SIZE
        )
        assert (back / "today" / "day.txt").read_text() == f"{day}\n"
        assert (back / "static.bin").read_bytes() == (src / "static.bin").read_bytes()

    check = site.json("check", "--read-data")["local"]
    assert check["ok"] is True and check["snapshots"] == 33
    data_packs = [p for p in (site.repo / "data").rglob("*") if p.is_file()]
    assert len(data_packs) <= len(snapshots) + 1  # one per kept day (+ the first day's)
    assert not [p for p in (site.repo / "trash").rglob("*") if p.is_file()]
    # what is left: the kept days' data, the first day's pack (it holds static.bin too), a
    # little per pack; of all data ever written, a fifth at most
    overhead = 2048
    assert stored_bytes(site.repo, ("data",)) < STATIC_SIZE + (33 + 1) * (DAILY_SIZE + overhead)
    total_written = written + STATIC_SIZE
    assert stored_bytes(site.repo) < total_written / 5, (stored_bytes(site.repo), total_written)


# -- tags ----------------------------------------------------------------------------------


def tagged(time: str, *tags: str, source: str = "db") -> Snapshot:
    s = snap(time, source)
    s.tags = list(tags)
    return s


def test_keep_tags_keep_a_snapshot_no_rule_keeps() -> None:
    snaps = [*daily_snapshots("2026-03-01", 10), tagged("2026-03-02T12:00:00Z", "before-upgrade")]
    out = retention.keep(snaps, at("2026-03-10T12:00Z"),
                         {"db": Retention(daily=3, keep_tags=["before-upgrade"])})  # fmt: skip
    assert out["db@2026-03-02T12:00:00Z"] == "tag before-upgrade"
    assert len(out) == 4
    # without the tag rule the nightly prune removes it (the bug the strategy cannot afford)
    plain = retention.keep(snaps, at("2026-03-10T12:00Z"), {"db": Retention(daily=3)})
    assert "db@2026-03-02T12:00:00Z" not in plain
    # prune --keep-tag does the same for every source
    cli = retention.keep(snaps, at("2026-03-10T12:00Z"), {"db": Retention(daily=3)},
                         keep_tags=["before-upgrade"])  # fmt: skip
    assert cli["db@2026-03-02T12:00:00Z"] == "tag before-upgrade"


def test_any_tagged_snapshot_is_kept_for_keep_tagged_then_not() -> None:
    snaps = [*daily_snapshots("2026-03-01", 10), tagged("2026-03-02T12:00:00Z", "manual")]
    policy = {"db": Retention(daily=3)}
    within = retention.keep(snaps, at("2026-03-10T12:00Z"), policy, keep_tagged=timedelta(days=30))
    assert within["db@2026-03-02T12:00:00Z"] == "tagged, within 30d"
    later = retention.keep(snaps, at("2026-04-02T13:00Z"), policy, keep_tagged=timedelta(days=30))
    assert "db@2026-03-02T12:00:00Z" not in later
    both = retention.keep([tagged("2026-03-10T02:00:00Z", "x")], at("2026-03-10T12:00Z"), policy,
                          keep_tagged=timedelta(days=30))  # fmt: skip
    assert both["db@2026-03-10T02:00:00Z"] == "daily 1/3, tagged, within 30d"


def test_a_tagged_backup_survives_the_nightly_prune_and_dry_run_shows_tags(
    site: Site, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("a")
    site.write_config([tmp_path / "data"], source_extra="retention = { daily = 2 }")
    site.run("init")
    for day in range(1, 5):
        site.env["EMBERKEEP_NOW"] = f"2026-03-0{day}T02:00:00Z"
        site.run("backup")
        if day == 1:
            site.env["EMBERKEEP_NOW"] = "2026-03-01T09:00:00Z"
            site.run("backup", "--tag", "before-upgrade")
    site.env["EMBERKEEP_NOW"] = "2026-03-05T04:00:00Z"
    text = site.run("prune", "--dry-run").stdout
    line = next(x for x in text.splitlines() if "before-upgrade" in x)
    assert line.split()[0] == "keep" and "[before-upgrade]" in line and "tagged, within 30d" in line
    site.run("prune")
    tags = [s["tags"] for s in site.snapshots()]
    assert tags == [["before-upgrade"], [], []]
    # after keep_tagged only a keep_tags rule keeps it
    site.env["EMBERKEEP_NOW"] = "2026-04-05T04:00:00Z"
    site.run("prune", "--dry-run", "--keep-tag", "before-upgrade")
    assert [s["tags"] for s in site.snapshots()] == [["before-upgrade"], [], []]
    decisions = site.json("prune", "--dry-run")["local"]["snapshots"]
    assert [d["action"] for d in decisions if d["tags"]] == ["remove"]
    rule = 'retention = { daily = 2, keep_tags = ["before-upgrade"] }'
    site.config_path.write_text(
        site.config_path.read_text().replace("retention = { daily = 2 }", rule)
    )
    site.run("prune")
    assert [s["tags"] for s in site.snapshots()] == [["before-upgrade"], [], []]
