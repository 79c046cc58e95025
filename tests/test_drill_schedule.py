"""Scheduled drills and partial checks under `emberkeep run` with a simulated clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Site, repo_objects
from robustness_helpers import write_random


def run(site: Site, start: str, until: str) -> list[dict[str, Any]]:
    site.env["EMBERKEEP_NOW"] = start
    proc = site.run("run", "--until", until, "--json")
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_drills_run_on_schedule_and_partial_checks_reach_every_pack(
    site: Site, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        write_random(data / f"f{i}.bin", 12 << 20)  # several data packs
    site.write_config(
        [data],
        source_extra='schedule = "0 1 * * *"',
        extra=(
            '[check]\nschedule = "0 3 * * *"\nread_data_subset = "25%"\n'
            '[drill]\nschedule = "0 4 * * 0"\n'  # Sundays
        ),
    )
    site.run("init")
    events = run(site, "2026-03-01T00:00:00Z", "2026-03-04T12:00:00Z")  # 4 checks
    packs = {f"{p.parent.parent.name}/{p.parent.name}/{p.name}" for folder in ("data", "meta")
             for p in repo_objects(site.repo, folder)}  # fmt: skip
    assert len(packs) >= 4
    [log] = site.state_dir.glob("verified-*.json")
    assert set(json.loads(log.read_text())) == packs  # 25% a run: every pack within 4 runs

    events += run(site, "2026-03-04T12:00:00Z", "2026-03-08T12:00:00Z")
    ends = [(e["time"], e["job"], e["outcome"]) for e in events if e["event"] == "end"]
    drills = [e for e in ends if e[1] == "drill"]
    assert drills == [
        ("2026-03-01T04:00:00Z", "drill", "ok"),
        ("2026-03-08T04:00:00Z", "drill", "ok"),
    ]
    checks = [e for e in ends if e[1] == "check"]
    assert len(checks) == 8 and all(outcome == "ok" for *_, outcome in checks)
