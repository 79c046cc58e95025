"""Every JSON file of the state dir, damaged: garbage, or valid JSON of the wrong shape.

Each is read by the command that uses it (README, "How it keeps data safe": what is read
from the state dir may be damaged or edited); the command does its work, warns naming the
file, moves it aside to ``<name>.damaged``, and its next run is clean (``statefile``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Site


@dataclass(frozen=True)
class StateFile:
    name: str  # a glob under the state dir, matching one file once ``prepare`` ran
    command: Callable[[Site], list[str]]
    wrong_types: bytes  # valid JSON, plausible, but with a wrong type where one is used
    prepare: Callable[[Site], object] = lambda site: None  # its result is not used


def _recover(site: Site) -> list[str]:
    url = f"file://{site.repo}"
    return ["recover", "--from", url, "--identity", str(site.identities[0]), "--yes", "--json"]


def _run(site: Site) -> list[str]:
    site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
    return ["run", "--until", "2026-03-01T03:00:00Z", "--json"]


FILES = [
    StateFile(
        "scheduler.json",
        _run,
        b'{"version": 1, "jobs": {"backup:files": {"since": 5, "last_run": ["x"]}}}',
        prepare=lambda site: site.run(*_run(site)),
    ),
    StateFile(
        "verified-*-local.json",
        lambda site: ["check", "--read-data-subset", "50%", "--json"],
        b'{"data/00/00": 17, "meta/11/11": ["2026-01-01"]}',
        prepare=lambda site: site.run("check", "--read-data"),
    ),
    StateFile(
        "leases-seen.json",
        lambda site: ["prune", "--grace", "0s", "--json"],
        b'{"boot": "b", "seen": {"local locks/x": "not a pair"}}',
        # written once another host's lease was seen; as it would be
        prepare=lambda site: (site.state_dir / "leases-seen.json").write_text(
            '{"boot": "b", "seen": {"local locks/shared-x": ["digest", 1.5]}}'
        ),
    ),
    StateFile(
        "snapshots-seen.json",
        lambda site: ["status", "--json"],
        b'{"format": 1, "targets": {"local": {"repository": "r", "snapshots": [1, 2]}}}',
    ),
    StateFile(
        "siteconfig-stored.json",
        lambda site: ["backup", "--json"],
        b'{"local": {"tag": "abc"}}',
    ),
    StateFile(
        "recover.json",
        _recover,
        b'{"from": "file:///x", "done": ["files"]}',
    ),
    StateFile(
        "recover-seen.json",
        _recover,
        b'{"0123": {"from": "file:///x", "summary": {"recipients": "age1", "targets": {}, '
        b'"sources": {}, "hooks": {}}}}',
    ),
]

DAMAGE = {
    "garbage": lambda f: b'{"not json \x00\xff',
    "wrong top-level type": lambda f: b'["a", "list", 3]',
    "wrong types inside": lambda f: f.wrong_types,
    "nested too deep": lambda f: b"[" * 200_000 + b"]" * 200_000,
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
@pytest.mark.parametrize("state", FILES, ids=[f.name for f in FILES])
def test_a_damaged_state_file_is_reported_set_aside_and_rebuilt(
    site: Site, tmp_path: Path, state: StateFile, damage: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    site.write_config([src], source_extra='schedule = "0 2 * * *"')
    site.run("init")
    site.run("backup")
    site.run("recover", "--from", f"file://{site.repo}", "--identity", site.identities[0], "--yes")
    site.run("prune", "--grace", "0s")
    state.prepare(site)
    [path] = site.state_dir.glob(state.name)  # every state file is there by now
    data = DAMAGE[damage](state)
    path.write_bytes(data)

    proc = site.run(*state.command(site))  # exit 0, no traceback
    told = proc.stdout + proc.stderr
    assert f"{path} is damaged: not " in told, told
    assert f"moved aside to {path.name}.damaged" in told, told
    assert path.with_name(f"{path.name}.damaged").read_bytes() == data
    if path.exists():  # rebuilt by the command: valid JSON again
        json.loads(path.read_bytes())

    again = site.run(*state.command(site))
    assert f"{path} is damaged" not in again.stdout + again.stderr
