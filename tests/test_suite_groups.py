"""The suite's groups (CONTRIBUTING.md, "Run, test, bench"): markers set at collection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collected(marker: str, *files: str) -> set[str]:
    """The test files that ``-m marker`` selects among ``files``."""
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only"]
    out = subprocess.run(
        [*pytest, "-q", "-m", marker, *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode in (0, 5), out.stdout + out.stderr  # 5: nothing selected
    return {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line}


FILES = ("tests/test_layers.py", "tests/test_storage_backends.py", "tests/test_damage.py")


def test_each_group_selects_its_files() -> None:
    assert _collected("unit", *FILES) == {"tests/test_layers.py"}
    assert _collected("integration", *FILES) == {"tests/test_storage_backends.py"}
    assert _collected("e2e", *FILES) == {"tests/test_storage_backends.py", "tests/test_damage.py"}
