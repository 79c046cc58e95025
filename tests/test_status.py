"""`emberkeep status` (README, "Monitoring"): RPO ok / late / breached under a simulated
clock, RTO from drills in the journal, targets (snapshots, size, free space, last copy,
replication lag), anomalies (a real FerretDB losing half its documents), low space, and
the alerts status raises once."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Site
from notify_servers import WebhookReceiver, notify_toml, webhook

from emberkeep import journal
from emberkeep.monitor.anomalies import backup_anomalies, runs_before, space_problem
from emberkeep.monitor.status import rpo_state

__all__ = ["webhook"]  # fixture


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status(site: Site, now: str) -> tuple[int, dict[str, Any]]:
    site.env["EMBERKEEP_NOW"] = now
    proc = site.run("status", "--json", ok=None)
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def backup_at(
    site: Site, now: str, *args: str, ok: bool | None = True
) -> subprocess.CompletedProcess[str]:
    site.env["EMBERKEEP_NOW"] = now
    return site.run("backup", *args, ok=ok)


def tree(root: Path, files: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.txt").write_text(f"file {i}\n" * 10)
    return root


def kinds(posts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(p["emberkeep"]["kind"], p["emberkeep"]["status"]) for p in posts]


# -- the rules, as functions ----------------------------------------------------------------


def test_rpo_state_ok_late_breached() -> None:
    last, grace = at("2026-03-01T02:00:00Z"), timedelta(hours=1)
    daily, rpo = "0 2 * * *", timedelta(hours=36)

    def state(now: str, **kw: Any) -> str:
        options = {"schedule": daily, "rpo": rpo, "grace": grace, **kw}
        return rpo_state(last, at(now), **options).state

    assert state("2026-03-02T03:00:00Z") == "ok"  # the next run is due 02:00, grace to 03:00
    assert state("2026-03-02T03:00:01Z") == "late"
    assert state("2026-03-02T14:00:00Z") == "late"  # exactly the RPO: still within it
    assert state("2026-03-02T14:00:01Z") == "breached"
    assert state("2026-03-05T00:00:00Z", schedule=None) == "breached"  # unscheduled: no late
    assert state("2026-03-02T14:00:00Z", schedule=None) == "ok"
    assert state("2026-03-09T00:00:00Z", rpo=None) == "late"  # no RPO: never breached
    # an RPO shorter than schedule + grace: ok straight to breached
    assert state("2026-03-02T02:30:00Z", rpo=timedelta(hours=24)) == "breached"


def test_anomalies_against_the_median_of_recent_runs() -> None:
    history = [{"bytes": 1000, "files": 10, "documents": 400}] * 3 + [{"bytes": 5000, "files": 10}]
    half = backup_anomalies({"bytes": 520, "files": 10, "documents": 200}, history, change=0.3)
    assert [(a.measure, round(a.change, 2), a.runs) for a in half] == [
        ("bytes", -0.48, 4),
        ("documents", -0.5, 3),
    ]
    assert "200 documents, 50% below the median of its last 3 backups (400)" in half[1].text("db")
    assert backup_anomalies({"bytes": 1200, "files": 12}, history, change=0.3) == []
    assert backup_anomalies({"bytes": 10}, [], change=0.3) == []  # nothing to compare with
    assert backup_anomalies({"files": 3}, [{"files": 0}], change=0.3) == []


def test_space_below_the_minimum_or_running_out_before_the_next_prune() -> None:
    until = at("2026-03-08T04:00:00Z")
    assert space_problem("t", None, min_free=10, need=0, until=None) is None  # s3: unknown
    assert "under the minimum" in str(space_problem("t", 5, min_free=10, need=0, until=None))
    running_out = space_problem("t", 100, min_free=10, need=700, until=until)
    assert "before the next prune at 2026-03-08 04:00 UTC: it will run out" in str(running_out)
    assert space_problem("t", 1000, min_free=10, need=700, until=until) is None
    assert runs_before("0 2 * * *", at("2026-03-01T03:00:00Z"), until) == 7
    assert runs_before(None, at("2026-03-01T03:00:00Z"), until) == 1


# -- status through the CLI ------------------------------------------------------------------


def test_a_source_goes_ok_late_breached_exits_1_and_the_breach_alert_goes_once(
    site: Site, tmp_path: Path, webhook: WebhookReceiver
) -> None:
    site.write_config(
        [tree(tmp_path / "data")],
        source_extra='schedule = "0 2 * * *"\nobjectives = { rpo = "36h" }',
        extra=notify_toml(webhooks=[webhook.url], rate_limit="6h") + '[monitor]\ngrace = "1h"\n',
    )
    site.run("init")
    [backup] = json.loads(backup_at(site, "2026-03-01T02:00:00Z", "--json").stdout)

    code, report = status(site, "2026-03-01T12:00:00Z")
    assert (code, report["state"], report["breaches"], report["warnings"]) == (0, "ok", [], [])
    [source] = report["sources"]
    assert source["last_backup"] == {
        "time": "2026-03-01T02:00:00Z",
        "snapshot": backup["snapshot"]["id"],
        "target": "local",
    }
    assert source["age_seconds"] == 36000
    assert (source["rpo"], source["rpo_state"]) == ("36h", "ok")
    assert source["late_at"] == "2026-03-02T03:00:00Z"  # the next slot, plus the grace
    assert source["breach_at"] == "2026-03-02T14:00:00Z"
    assert source["next_run"] == "2026-03-02T02:00:00Z"
    assert source["last_run"] == {"time": "2026-03-01T02:00:00Z", "outcome": "ok", "error": None}
    assert (source["drill"], source["rto_state"]) == (None, None)  # no RTO, no drill
    [target] = report["targets"]
    assert (target["name"], target["primary"], target["reachable"]) == ("local", True, True)
    assert target["snapshots"] == 1 and target["snapshots_by_source"] == {"files": 1}
    on_disk = sum(
        p.stat().st_size for p in site.repo.rglob("*") if p.is_file() and p.name[0] != "."
    )
    assert target["repository_bytes"] == on_disk
    assert (
        0 < target["free_bytes"] <= os.statvfs(site.repo).f_blocks * os.statvfs(site.repo).f_frsize
    )
    assert target["last_copy"] == "2026-03-01T02:00:00Z"
    assert target["replication_lag_seconds"] is None  # the primary has no lag
    assert webhook.take() == []

    code, report = status(site, "2026-03-02T06:00:00Z")  # the 02:00 run did not happen
    assert (code, report["state"], report["sources"][0]["rpo_state"]) == (0, "warning", "late")
    assert "late" in report["warnings"][0] and "2026-03-02T14:00:00Z" in report["warnings"][0]
    assert webhook.take() == []  # late is a warning, not an alert

    code, report = status(site, "2026-03-02T15:00:00Z")
    assert (code, report["state"], report["sources"][0]["rpo_state"]) == (1, "breach", "breached")
    assert report["breaches"] == [
        "source files: RPO 36h breached: the last good backup is 1d 13h old (2026-03-01T02:00:00Z)"
    ]
    [alert] = webhook.take()
    assert kinds([alert]) == [("rpo", "firing")]
    assert alert["emberkeep"]["source"] == "files" and "1d 13h old" in alert["text"]

    code, _ = status(site, "2026-03-02T16:00:00Z")  # still breached: no second alert
    assert code == 1 and webhook.take() == []
    site.env["EMBERKEEP_NOW"] = "2026-03-02T17:00:00Z"
    text = site.run("status", ok=False)
    assert text.returncode == 1 and "BREACH" in text.stdout and "RPO 36h breached" in text.stdout
    assert webhook.take() == []

    backup_at(site, "2026-03-02T18:00:00Z")  # recovered: the breach is resolved, once
    assert kinds(webhook.take()) == [("rpo", "resolved")]
    code, report = status(site, "2026-03-02T19:00:00Z")
    assert (code, report["sources"][0]["rpo_state"]) == (0, "ok")
    assert webhook.take() == []


def test_a_late_scheduled_source_without_an_rpo_is_a_warning_without_a_breach_time(
    site: Site, tmp_path: Path
) -> None:
    """No RPO, so no breach time: the late warning must not format one (it was a traceback)."""
    site.write_config([tree(tmp_path / "data")], source_extra='schedule = "0 2 * * *"')
    site.run("init")
    backup_at(site, "2026-03-01T02:00:00Z")
    code, report = status(site, "2026-03-02T06:00:00Z")  # the 02:00 run did not happen
    assert (code, report["state"], report["sources"][0]["rpo_state"]) == (0, "warning", "late")
    assert report["sources"][0]["breach_at"] is None
    [warning] = report["warnings"]
    assert "late: no good backup since 2026-03-01T02:00:00Z" in warning
    assert "RPO" not in warning


def test_the_scheduler_alerts_failures_and_the_breach_once_while_it_runs(
    site: Site, tmp_path: Path, webhook: WebhookReceiver
) -> None:
    data = tree(tmp_path / "data")
    site.write_config(
        [data],
        source_extra='schedule = "0 6 * * *"\nobjectives = { rpo = "30h" }',
        extra=notify_toml(webhooks=[webhook.url], rate_limit="3d"),
    )
    site.run("init")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
    site.run("run", "--until", "2026-03-01T07:00:00Z")
    assert webhook.take() == []
    for path in data.iterdir():
        path.unlink()
    data.rmdir()
    site.env["EMBERKEEP_NOW"] = "2026-03-01T07:00:00Z"
    site.run("run", "--until", "2026-03-04T07:00:00Z", ok=False)  # fails at 06:00 each day
    posts = webhook.take()
    # the failure once (rate limit 3d); the breach (30h after 2026-03-01T06:00) once, seen
    # after the 2026-03-03T06:00 run; nothing else
    assert kinds(posts) == [("failure", "firing"), ("rpo", "firing")]
    assert posts[0]["emberkeep"]["time"] == "2026-03-02T06:00:00Z"
    assert posts[1]["emberkeep"]["time"] == "2026-03-03T06:00:00Z"
    failed = [e for e in site.json("log", "--kind", "backup") if e["outcome"] == "failed"]
    assert len(failed) == 3


def test_a_monthly_target_misses_a_month_only_once_it_has_ended(site: Site, tmp_path: Path) -> None:
    """Status predicts replicate's rule: the newest snapshot of each ended month."""
    data = tree(tmp_path / "data")
    mirror = tmp_path / "mirror"
    site.write_config(
        [data],
        targets=(
            f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
            f'[[targets]]\nname = "cold"\nurl = "file://{mirror}"\ncopies = "monthly"\n'
        ),
    )
    site.run("init")
    backup_at(site, "2026-03-30T02:00:00Z")
    backup_at(site, "2026-03-31T02:00:00Z")
    _code, report = status(site, "2026-03-31T23:00:00Z")
    assert (report["targets"][1]["snapshots"], report["targets"][1]["missing_snapshots"]) == (0, 0)
    _code, report = status(site, "2026-04-01T01:00:00Z")  # March has ended, no backup since
    assert report["targets"][1]["missing_snapshots"] == 1
    site.env["EMBERKEEP_NOW"] = "2026-04-01T01:30:00Z"
    [copy] = site.json("replicate")
    assert [s["time"] for s in site.json("snapshots", "--target", "cold")] == [
        "2026-03-31T02:00:00Z"
    ], copy
    _code, report = status(site, "2026-04-01T02:00:00Z")
    assert report["targets"][1]["missing_snapshots"] == 0


def test_targets_show_the_last_copy_and_the_replication_lag(site: Site, tmp_path: Path) -> None:
    data = tree(tmp_path / "data")
    site.write_config([data])
    site.run("init")
    backup_at(site, "2026-03-01T02:00:00Z")
    mirror = tmp_path / "mirror"
    site.write_config(
        [data],
        targets=(
            f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
            f'[[targets]]\nname = "mirror"\nurl = "file://{mirror}"\n'
        ),
    )
    site.run("init", "--target", "mirror")
    code, report = status(site, "2026-03-01T05:00:00Z")
    _local, far = report["targets"]
    assert (far["name"], far["primary"], far["snapshots"], far["last_copy"]) == (
        "mirror",
        False,
        0,
        None,
    )
    assert (far["missing_snapshots"], far["replication_lag_seconds"]) == (1, 3 * 3600)
    assert code == 0 and any("mirror: 1 snapshots of the primary" in w for w in report["warnings"])

    site.env["EMBERKEEP_NOW"] = "2026-03-01T05:30:00Z"
    site.run("replicate")
    code, report = status(site, "2026-03-01T06:00:00Z")
    far = report["targets"][1]
    assert (far["snapshots"], far["missing_snapshots"], far["replication_lag_seconds"]) == (1, 0, 0)
    assert far["last_copy"] == "2026-03-01T05:30:00Z"
    assert report["warnings"] == []

    broken = site.config_path.read_text().replace(str(mirror), str(tmp_path / "nowhere"))
    site.config_path.write_text(broken)
    code, report = status(site, "2026-03-01T06:00:00Z")
    far = report["targets"][1]
    # a target this host used that is now empty: the likely cause (its url, or an unmounted
    # disk) is named, not `emberkeep init`
    assert (code, far["reachable"]) == (0, False) and "is its disk mounted" in far["error"]
    assert "correct the target's url" in far["error"]
    assert any("target mirror" in w for w in report["warnings"])


def test_drills_in_the_journal_give_the_rto_state_and_its_alert_goes_once(
    site: Site, tmp_path: Path, webhook: WebhookReceiver
) -> None:
    site.write_config(
        [tree(tmp_path / "data")],
        source_extra='objectives = { rpo = "7d", rto = "1h" }',
        extra=notify_toml(webhooks=[webhook.url]),
    )
    site.run("init")
    backup_at(site, "2026-03-01T02:00:00Z")
    code, report = status(site, "2026-03-01T03:00:00Z")
    assert (code, report["sources"][0]["rto_state"]) == (0, "untested")
    assert "RTO 1h untested" in report["warnings"][0]

    # what a drill records: one call (journal docstring)
    journal.record(
        site.state_dir,
        kind="drill",
        source="files",
        target="local",
        outcome="ok",
        started=at("2026-03-01T04:00:00Z"),
        seconds=5400.0,
        details={"rto_seconds": 5400.0, "rto_ok": False},
    )
    code, report = status(site, "2026-03-01T05:00:00Z")
    [source] = report["sources"]
    assert (code, report["state"], source["rto_state"]) == (1, "breach", "breached")
    assert source["drill"]["time"] == "2026-03-01T04:00:00Z"
    assert (source["drill"]["rto_seconds"], source["drill"]["rto_ok"]) == (5400.0, False)
    assert "RTO 1h breached" in report["breaches"][0] and "5400.0s" in report["breaches"][0]
    assert kinds(webhook.take()) == [("rto", "firing")]
    assert status(site, "2026-03-01T05:10:00Z")[0] == 1 and webhook.take() == []

    # a drill that only gives its time: compared with the objective here
    journal.record(
        site.state_dir,
        kind="drill",
        source="files",
        target="local",
        started=at("2026-03-01T06:00:00Z"),
        details={"rto_seconds": 42.0},
    )
    code, report = status(site, "2026-03-01T07:00:00Z")
    assert (code, report["sources"][0]["rto_state"]) == (0, "ok")
    assert report["sources"][0]["drill"]["rto_ok"] is True
    assert kinds(webhook.take()) == [("rto", "resolved")]

    journal.record(
        site.state_dir,
        kind="drill",
        source="files",
        target="local",
        outcome="failed",
        started=at("2026-03-01T08:00:00Z"),
        error="restored data differs: f0.txt",
    )
    code, report = status(site, "2026-03-01T09:00:00Z")
    assert code == 1 and "f0.txt" in report["breaches"][0]


def test_low_space_and_space_predicted_to_run_out(
    site: Site, tmp_path: Path, webhook: WebhookReceiver
) -> None:
    data = tree(tmp_path / "data")
    site.write_config(
        [data],
        source_extra='schedule = "0 2 * * *"',
        extra=notify_toml(webhooks=[webhook.url]) + '[monitor]\nmin_free = "1000TiB"\n',
    )
    site.run("init")
    proc = backup_at(site, "2026-03-01T02:00:00Z")
    assert "low space: target local" in proc.stderr and "under the minimum" in proc.stderr
    assert kinds(webhook.take()) == [("low_space", "firing")]
    code, report = status(site, "2026-03-01T03:00:00Z")
    assert code == 0 and "under the minimum" in report["targets"][0]["low_space"]
    assert webhook.take() == []  # the same problem, within the rate limit

    # enough for the minimum, not for what the backups store before next Sunday's prune
    prune = '[prune]\nschedule = "0 4 * * 0"\n'
    site.write_config(
        [data],
        source_extra='schedule = "0 2 * * *"',
        extra=notify_toml(webhooks=[webhook.url]) + '[monitor]\nmin_free = "1MB"\n' + prune,
    )
    free = os.statvfs(site.repo).f_bavail * os.statvfs(site.repo).f_frsize
    for day in range(2, 5):  # a history of big backups
        journal.record(
            site.state_dir,
            kind="backup",
            source="files",
            target="local",
            started=at(f"2026-03-0{day}T02:00:00Z"),
            bytes_written=free // 3,
        )
    code, report = status(site, "2026-03-04T03:00:00Z")
    low = report["targets"][0]["low_space"]
    assert "before the next prune at 2026-03-08 04:00 UTC: it will run out" in low
    assert kinds(webhook.take()) == [("low_space", "firing")]  # a reminder: past 6h


def test_half_the_documents_deleted_raises_the_anomaly(
    site: Site,
    mongo_server: Any,
    mongo_client: Any,
    mongo_db_name: str,
    webhook: WebhookReceiver,
) -> None:
    orders = mongo_client[mongo_db_name]["orders"]
    orders.insert_many([{"n": i, "item": f"candle-{i}", "note": "x" * 200} for i in range(400)])
    source = (
        '[[sources]]\nname = "db"\ntype = "mongodb"\n'
        f"uri = {json.dumps(mongo_server.uri)}\ndatabases = {json.dumps([mongo_db_name])}\n"
    )
    site.write_config(extra_sources=source, extra=notify_toml(webhooks=[webhook.url]))
    site.run("init")
    backup_at(site, "2026-03-01T02:00:00Z")
    quiet = backup_at(site, "2026-03-02T02:00:00Z")
    assert "anomaly" not in quiet.stderr

    orders.delete_many({"n": {"$gte": 200}})
    proc = backup_at(site, "2026-03-03T02:00:00Z")  # the backup itself succeeds
    documents = "anomaly: source db: 200 documents, 50% below the median of its last 2 backups"
    assert f"{documents} (400)" in proc.stderr
    assert "anomaly: source db: size " in proc.stderr  # the size halved too
    last = site.json("log", "--kind", "backup")[-1]
    assert last["details"]["documents"] == 200
    found = {a["measure"]: a for a in last["details"]["anomalies"]}
    assert found["documents"]["value"] == 200 and found["documents"]["median"] == 400
    assert found["documents"]["change"] == -0.5
    assert -0.55 < found["bytes"]["change"] < -0.45  # the documents' bytes, not the oplog's
    [alert] = webhook.take()
    assert kinds([alert]) == [("anomaly", "firing")]
    assert "200 documents" in alert["text"] and alert["emberkeep"]["source"] == "db"

    code, report = status(site, "2026-03-03T03:00:00Z")
    assert code == 0 and report["state"] == "warning"
    assert {a["measure"] for a in report["sources"][0]["anomalies"]} == {"bytes", "documents"}
    assert any("200 documents" in w for w in report["warnings"])


BAD_MONITOR = [
    ("journal_keep = 'forever'", "monitor.journal_keep", "duration"),
    ("grace = '1 hour'", "monitor.grace", "duration"),
    ("anomaly_change = -0.5", "monitor.anomaly_change", "> 0"),
    ("anomaly_runs = 0", "monitor.anomaly_runs", ">= 1"),
    ("min_free = 'lots'", "monitor.min_free", "'10GiB'"),
    ("metrics_port = 70000", "monitor.metrics_port", "<= 65535"),
    ("metrics = true", "monitor.metrics", "unknown key"),
]


@pytest.mark.parametrize(("line", "field", "hint"), BAD_MONITOR, ids=[b[1] for b in BAD_MONITOR])
def test_a_bad_monitor_table_exits_2_naming_the_field(
    site: Site, tmp_path: Path, line: str, field: str, hint: str
) -> None:
    site.write_config([tmp_path], extra=f"[monitor]\n{line}\n")
    proc = site.run("status", ok=False)
    assert proc.returncode == 2
    assert str(site.config_path) in proc.stderr and field in proc.stderr, proc.stderr
    assert hint in proc.stderr, proc.stderr


def test_monitor_settings_parse(tmp_path: Path) -> None:
    from emberkeep import config

    raw = {
        "site": {"name": "x", "state_dir": "state"},
        "keys": {"recipients": ["age1p20dzap49j00296yar2hsz32vv2jg4pznt9dsug89q7l4lrnnfms9755wt"]},
        "targets": [{"name": "local", "url": "file:///var/backups/x"}],
        "monitor": {
            "journal_keep": "90d",
            "anomaly_change": 1,
            "min_free": "2.5 GiB",
            "metrics_port": 9753,
            "metrics_textfile": "metrics/emberkeep.prom",
        },
    }
    parsed = config.parse(raw, tmp_path / "c.toml")
    assert parsed.monitor.anomaly_change == 1.0 and parsed.monitor.anomaly_runs == 5
    assert parsed.monitor.metrics_textfile == tmp_path.resolve() / "metrics" / "emberkeep.prom"
    assert config.parse({**raw, "monitor": {}}, tmp_path / "c.toml").monitor.grace == "1h"
    assert UTC  # times in this module are UTC


def test_a_config_without_sources_is_not_ok(site: Site, tmp_path: Path) -> None:
    site.write_config(None)  # keys and a target, no [[sources]]
    site.run("init")
    code, report = status(site, "2026-03-01T02:00:00Z")
    assert code == 0 and report["state"] == "warning", report
    assert any("defines no [[sources]]: nothing is backed up" in w for w in report["warnings"])


def test_a_drill_that_could_not_run_leaves_the_rto_untested_not_breached(
    site: Site, tmp_path: Path
) -> None:
    """On a write-only backup host a scheduled drill fails for want of an identity: it
    measured nothing, so status says "untested" and why, never "RTO breached"."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    site.write_config(
        [tmp_path / "data"], identity=False, source_extra='objectives = { rto = "1h" }'
    )
    site.run("init")
    site.run("backup")
    drill = site.run("drill", ok=False)
    assert "identity" in drill.stderr
    proc = site.run("status", "--json")  # exit 0: no breach
    report = json.loads(proc.stdout)
    [source] = report["sources"]
    assert source["rto_state"] == "untested"
    assert not report["breaches"]
    assert any("untested: the last drill" in w and "did not run" in w and "identity" in w
               for w in report["warnings"])  # fmt: skip


def test_the_newest_key_epoch_past_rotate_every_is_a_warning_read_without_an_identity(
    site: Site, tmp_path: Path
) -> None:
    """The epoch's start is in the sealed keys/recipients record, read with the writer key:
    a write-only host (no identity) sees its age; past [keys] rotate_every it warns (no
    breach, exit 0), and `keys rotate` makes it fresh again."""
    site.write_config([tree(tmp_path / "data")], identity=False)
    text = site.config_path.read_text()
    site.config_path.write_text(text.replace("[keys]\n", '[keys]\nrotate_every = "1d"\n', 1))
    site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
    site.run("init")
    backup_at(site, "2026-03-01T01:00:00Z")

    code, report = status(site, "2026-03-01T12:00:00Z")  # half a day: fresh
    assert code == 0 and report["state"] == "ok", report
    [target] = report["targets"]
    assert target["key_epoch"]["number"] == 1
    assert target["key_epoch"]["created"] == "2026-03-01T00:00:00Z"
    assert target["key_epoch"]["age_seconds"] == 12 * 3600
    assert target["key_epoch"]["rotate_every"] == "1d"
    assert target["key_epoch"]["rotation_due"] is False

    code, report = status(site, "2026-03-03T00:00:00Z")  # two days: rotation due
    assert code == 0 and report["state"] == "warning" and not report["breaches"], report
    [target] = report["targets"]
    assert target["key_epoch"]["age_seconds"] == 2 * 86400
    assert target["key_epoch"]["rotation_due"] is True
    [warning] = report["warnings"]
    assert "target local: key rotation due" in warning
    assert "past [keys] rotate_every = 1d" in warning and "emberkeep keys rotate" in warning
    text_out = site.run("status").stdout
    assert "key epoch 1 2d 0h old, rotate every 1d" in text_out

    site.run("keys", "rotate")  # at 2026-03-03T00:00:00Z, still pinned
    code, report = status(site, "2026-03-03T06:00:00Z")
    assert report["state"] == "ok", report
    assert report["targets"][0]["key_epoch"]["number"] == 2
    assert report["targets"][0]["key_epoch"]["age_seconds"] == 6 * 3600


def test_without_rotate_every_the_key_epoch_age_is_shown_and_never_warned(
    site: Site, tmp_path: Path
) -> None:
    site.write_config([tree(tmp_path / "data")])
    site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
    site.run("init")
    backup_at(site, "2026-03-01T01:00:00Z")
    code, report = status(site, "2027-03-01T00:00:00Z")
    assert code == 0 and report["state"] == "ok", report
    epoch = report["targets"][0]["key_epoch"]
    assert epoch["age_seconds"] == 365 * 86400
    assert epoch["rotate_every"] is None and epoch["rotation_due"] is None
