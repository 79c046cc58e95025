"""The README's first command: the demo runs the main job end to end, and twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _demo(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emberkeep", "demo", "--dir", str(folder), "--media-files", "40"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_demo_backs_up_checks_and_restores_identically_and_runs_twice(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    for _ in range(2):  # safe to run twice: it starts from its own empty folder
        proc = _demo(folder)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert "identical: " in proc.stdout and "refs and HEAD" in proc.stdout
        assert "ok: 8 snapshots" in proc.stdout  # mongodb, media, config, code, twice each
        assert "documents, byte for byte, and every index" in proc.stdout
        assert proc.stdout.count(": passed; RTO") == 4  # a drill of each source
    assert "PASSED" in (folder / "drill-report.md").read_text()
    assert (folder / "restored-code" / ".git").is_dir()


def test_the_demo_never_wipes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me\n")
    proc = _demo(precious)
    assert proc.returncode == 2 and "not made by the demo" in proc.stderr
    assert (precious / "data.txt").read_text() == "keep me\n"
