"""The README's first command: the demo runs the main job end to end, and twice."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path


def _demo(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emberkeep", "demo", "--dir", str(folder), "--media-files", "40",
         *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_the_demo_backs_up_checks_and_restores_identically_and_runs_twice(tmp_path: Path) -> None:
    """And leaves the dashboard running (``--web``, as scripts/demo runs it): the second run
    stops the first one's and starts its own."""
    folder = tmp_path / "demo"
    pids: list[int] = []
    try:
        for _ in range(2):  # safe to run twice: it starts from its own empty folder
            proc = _demo(folder, "--web", "127.0.0.1:0")
            assert proc.returncode == 0, proc.stderr + proc.stdout
            assert "identical: " in proc.stdout and "refs and HEAD" in proc.stdout
            assert "ok: 8 snapshots" in proc.stdout  # mongodb, media, config, code, twice each
            assert "documents, byte for byte, and every index" in proc.stdout
            assert proc.stdout.count(": passed; RTO") == 4  # a drill of each source
            url = re.search(r"dashboard: (http://\S+/)", proc.stdout)
            assert url, proc.stdout
            pids.append(int((folder / "web.pid").read_text()))
            with urllib.request.urlopen(url[1], timeout=60) as page:
                html = page.read().decode()
            assert "candle-ecommerce-demo" in html and 'id="source-mongodb"' in html
            assert f"kill {pids[-1]}" in proc.stdout
        assert not _alive(pids[0]) and _alive(pids[1])
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    assert "PASSED" in (folder / "drill-report.md").read_text()
    assert (folder / "restored-code" / ".git").is_dir()


def test_the_demo_never_wipes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me\n")
    proc = _demo(precious)
    assert proc.returncode == 2 and "not made by the demo" in proc.stderr
    assert (precious / "data.txt").read_text() == "keep me\n"
