"""The journal (README, "Monitoring"): every run of every job in state_dir/journal.sqlite.

The API other jobs (the drill) use, its file (0600, WAL), its retention, and the CLI: each
job command journaled, `emberkeep log [--source S] [--since D] [--kind K] [--json]`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import Site

from emberkeep import journal
from emberkeep.durations import Duration
from emberkeep.errors import EmberkeepError
from emberkeep.journal import Journal


def test_record_and_job_are_one_call_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBERKEEP_NOW", "2026-03-01T02:00:00Z")
    entry = journal.record(
        tmp_path,
        kind="drill",
        source="db",
        target="local",
        outcome="ok",
        snapshot="ab" * 32,
        seconds=12.5,
        details={"rto_seconds": 12.5, "rto_ok": True},
    )
    assert entry.id is not None
    with journal.job(tmp_path, "check", target="local") as running:
        running.files = 3
    with pytest.raises(EmberkeepError), journal.job(tmp_path, "backup", source="db"):
        raise EmberkeepError("source db: cannot connect to mongodb://u:***@h")
    with journal.job(tmp_path, "check", target="remote") as damaged:
        damaged.outcome, damaged.error = "failed", "pack 1234: damaged"

    with Journal.open(tmp_path) as j:
        rows = j.entries()
        assert [(e.kind, e.outcome) for e in rows] == [
            ("drill", "ok"),
            ("check", "ok"),
            ("backup", "failed"),
            ("check", "failed"),
        ]
        drill = j.last("drill", source="db")
        assert drill is not None and drill.details == {"rto_seconds": 12.5, "rto_ok": True}
        assert drill.to_json()["started"] == "2026-03-01T02:00:00Z"
        assert drill.to_json()["ended"] == "2026-03-01T02:00:12Z"
        assert rows[1].files == 3 and rows[1].seconds is not None
        assert rows[2].error == "source db: cannot connect to mongodb://u:***@h"
        assert j.last("check", outcome="ok").target == "local"  # type: ignore[union-attr]
        assert [e.kind for e in j.entries(kind="check")] == ["check", "check"]
        assert [e.target for e in j.entries(target="remote")] == ["remote"]

    path = tmp_path / journal.FILE
    assert path.stat().st_mode & 0o777 == 0o600
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if side.exists():
            assert side.stat().st_mode & 0o077 == 0, side
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_site_journal_keeps_rows_for_journal_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimpleNamespace(monitor=SimpleNamespace(journal_keep=Duration("30d")))
    site = SimpleNamespace(state_dir=tmp_path, config=config)
    for day in ("01", "15", "28"):
        monkeypatch.setenv("EMBERKEEP_NOW", f"2026-01-{day}T00:00:00Z")
        journal.record(site, kind="backup", source="a")
    monkeypatch.setenv("EMBERKEEP_NOW", "2026-02-20T00:00:00Z")
    journal.record(site, kind="backup", source="b")  # expires what is older than 30 days
    with Journal.open(tmp_path) as j:
        assert [e.started.day for e in j.entries() if e.started] == [28, 20]
    monkeypatch.setenv("EMBERKEEP_NOW", "2026-03-10T00:00:00Z")
    journal.record(tmp_path, kind="drill", source="a")  # given only the folder: the same keep
    with Journal.open(tmp_path) as j:
        assert [e.started.day for e in j.entries() if e.started] == [20, 10]


def test_a_run_whose_process_died_is_marked_interrupted(tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; from emberkeep.journal import Journal, Entry; "
        "j = Journal.open(Path(sys.argv[1])); j.add(Entry(kind='prune', target='local')); "
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    with Journal.open(tmp_path) as j:
        assert j.entries()[0].outcome == "running"
    with journal.job(tmp_path, "prune", target="local"):
        pass
    with Journal.open(tmp_path) as j:
        assert [e.outcome for e in j.entries()] == ["interrupted", "ok"]


def test_writers_in_several_processes_at_once_lose_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from emberkeep import journal\n"
        "for i in range(40):\n"
        "    journal.record(Path(sys.argv[1]), kind='check', target=sys.argv[2])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"t{n}"]) for n in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with Journal.open(tmp_path) as j:
        assert len(j.entries()) == 120


def test_every_job_command_is_journaled_and_log_filters(site: Site, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    (data / "b.txt").write_text("bb\n")
    mirror = tmp_path / "mirror"
    site.write_config(
        [data],
        targets=(
            f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
            f'[[targets]]\nname = "mirror"\nurl = "file://{mirror}"\n'
        ),
        extra_sources=(
            f'[[sources]]\nname = "gone"\ntype = "files"\npaths = ["{tmp_path / "gone"}"]\n'
        ),
    )
    site.run("init")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T02:00:00Z"
    backup = site.json("backup", "files")[0]
    site.env["EMBERKEEP_NOW"] = "2026-03-02T02:00:00Z"
    proc = site.run("backup", "gone", ok=False)
    site.env["EMBERKEEP_NOW"] = "2026-03-03T02:00:00Z"
    site.run("replicate")
    site.run("check", "--target", "local")
    site.run("prune", "--target", "local")
    site.run("restore", "latest", "--source", "files", "--to", tmp_path / "out")

    rows = site.json("log")
    kinds = [(r["kind"], r["source"], r["target"], r["outcome"]) for r in rows]
    assert kinds == [
        ("backup", "files", "local", "ok"),
        ("replicate", "files", "mirror", "ok"),  # the copy right after the backup
        ("backup", "gone", "local", "failed"),
        ("replicate", None, "mirror", "ok"),  # `emberkeep replicate`: one row per target
        ("check", None, "local", "ok"),
        ("prune", None, "local", "ok"),
        ("restore", "files", "local", "ok"),
    ]
    first = rows[0]
    summary = backup["snapshot"]["summary"]
    assert first["snapshot"] == backup["snapshot"]["id"]
    assert (first["bytes"], first["bytes_new"], first["bytes_written"], first["files"]) == (
        summary["bytes"],
        summary["bytes_new"],
        summary["bytes_stored"],
        2,
    )
    assert first["started"] == "2026-03-01T02:00:00Z" and first["seconds"] >= 0
    assert rows[1]["snapshot"] == first["snapshot"] and rows[1]["bytes_written"] > 0
    assert str(tmp_path / "gone") in rows[2]["error"]
    assert str(tmp_path / "gone") in proc.stderr
    assert rows[4]["details"]["snapshots"] == 1
    assert rows[5]["details"]["snapshots_kept"] == 1
    assert rows[6]["snapshot"] == first["snapshot"] and rows[6]["files"] == 2

    assert [r["kind"] for r in site.json("log", "--source", "gone")] == ["backup"]
    assert [r["kind"] for r in site.json("log", "--kind", "check")] == ["check"]
    assert [r["kind"] for r in site.json("log", "--target", "mirror")] == ["replicate"] * 2
    assert len(site.json("log", "--since", "1d")) == 5  # from 2026-03-02T02:00:00Z on
    assert len(site.json("log", "--since", "2026-03-02T12:00:00Z")) == 4
    text = site.run("log", "--source", "gone").stdout
    assert "2026-03-02T02:00:00Z backup gone -> local: failed" in text
    proc = site.run("log", "--since", "yesterday", ok=False)
    assert proc.returncode == 2 and "--since 'yesterday'" in proc.stderr


def test_a_usage_error_and_a_dry_run_are_journaled_too(site: Site, tmp_path: Path) -> None:
    site.write_config([tmp_path])
    site.run("init")
    proc = site.run("restore", "zzzz", "--to", tmp_path / "out", ok=False)
    assert proc.returncode == 2
    site.run("prune", "--dry-run")
    rows = site.json("log")
    assert [(r["kind"], r["outcome"]) for r in rows] == [("restore", "failed"), ("prune", "ok")]
    assert "no snapshot 'zzzz'" in rows[0]["error"]
    assert rows[1]["details"]["dry_run"] is True
    assert json.loads(json.dumps(rows)) == rows


def test_a_damaged_journal_is_named_and_never_stops_a_backup(site: Site, tmp_path: Path) -> None:
    site.write_config([tmp_path / "state"], exclude=["*"])
    site.run("init")
    (site.state_dir / journal.FILE).write_bytes(b"not a database" * 100)
    proc = site.run("backup")
    assert "journal" in proc.stderr and "runs without being journaled" in proc.stderr
    assert len(site.snapshots()) == 1
    proc = site.run("log", ok=False)
    assert str(site.state_dir / journal.FILE) in proc.stderr and "move it aside" in proc.stderr
