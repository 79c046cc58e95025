"""A source kind is one module and one registration (runner/kinds): the kind below, with
its config struct and its backup, restore, drill and status parts, is registered by one
line (the fixture) and then backed up, restored, drilled and shown by the real CLI.

The CLI runs in this process (``emberkeep.cli.main``): a subprocess would not know a kind
registered here. Unregistered again, a config naming it is refused as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Site

from emberkeep import cli, clock
from emberkeep.config import SourceConfig
from emberkeep.engine.backup import BackupResult, Progress, backup
from emberkeep.engine.events import bytes_stream, made_node
from emberkeep.engine.restore import RestoreResult
from emberkeep.monitor.status import Report, SourceStatus
from emberkeep.repository.repo import Repository
from emberkeep.repository.snapshot import Snapshot
from emberkeep.runner import kinds
from emberkeep.runner.kinds.base import DrillResult, OnFile, OnTotal, TreeKind, restore_tree
from emberkeep.site import Site as EkSite

NOTE = "notes.txt"


class NotesSource(SourceConfig, tag="notes", kw_only=True):
    """A text kept in the config itself: the smallest thing a source can back up."""

    text: str


class NotesKind(TreeKind):
    source_type = "notes"
    config = NotesSource

    def __init__(self) -> None:
        self.calls: list[str] = []

    def backup(
        self, site: EkSite, source: SourceConfig, repo: Repository, *,
        tags: list[str] | None, progress: Progress | None,
    ) -> BackupResult:  # fmt: skip
        assert isinstance(source, NotesSource)
        self.calls.append("backup")
        return backup(
            repo,
            [bytes_stream(made_node(NOTE), source.text.encode())],
            source=source.name,
            source_type=self.source_type,
            paths=[f"notes:{source.name}"],
            now=clock.now(),
            tags=tags,
            progress=progress,
        )

    def restore(
        self, repo: Repository, snapshot: Snapshot, dest: Path, paths: list[str], *,
        on_file: OnFile, on_total: OnTotal, in_place: bool,
    ) -> RestoreResult:  # fmt: skip
        self.calls.append("restore")
        return restore_tree(repo, snapshot, dest, paths, on_file, on_total)

    def drill(
        self, site: EkSite, repo: Repository, snapshot: Snapshot, source: SourceConfig,
        result: DrillResult,
    ) -> None:  # fmt: skip
        """Restored into a scratch directory, the note compared with the config's text."""
        assert isinstance(source, NotesSource)
        self.calls.append("drill")
        scratch = site.state_dir / "notes-drill"
        restore_tree(repo, snapshot, scratch, [], lambda path, size: None, lambda size: None)
        restored = (scratch / NOTE).read_text()
        result.checked.append({"notes_characters": len(restored)})
        if restored != source.text:
            result.first_difference = f"/{NOTE}: not the text the config holds"

    def add_status(
        self, site: EkSite, source: SourceConfig, snapshots: list[Snapshot],
        status: SourceStatus, report: Report,
    ) -> None:  # fmt: skip
        held = [s for s in snapshots if s.source == source.name]
        report.warnings.append(f"source {source.name}: {len(held)} notes snapshots held")


@pytest.fixture
def notes() -> Iterator[NotesKind]:
    with kinds.registered(NotesKind()) as kind:  # the one line that adds the kind
        assert isinstance(kind, NotesKind)
        yield kind


def notes_site(site: Site, text: str = "the safe's code is 1234\n") -> None:
    site.write_config(
        extra_sources=(
            f'[[sources]]\nname = "journal"\ntype = "notes"\ntext = {json.dumps(text)}\n'
            'objectives = { rpo = "1d", rto = "1h" }\n'
        )
    )


def ek(site: Site, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    """``emberkeep -c CONFIG ARGS`` in this process; its stdout (its stderr in ``errors``)."""
    capsys.readouterr()
    returned = cli.main(["-c", str(site.config_path), *args])
    out, err = capsys.readouterr()
    assert returned == code, f"{args}: exit {returned}, not {code}:\n{err}\n{out}"
    errors.append(err)
    return out


errors: list[str] = []


def ek_json(site: Site, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> Any:
    return json.loads(ek(site, capsys, *args, "--json", code=code))


def test_a_registered_kind_is_backed_up_restored_drilled_and_shown(
    notes: NotesKind, site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes_site(site)
    ek(site, capsys, "init")
    [backed_up] = ek_json(site, capsys, "backup")
    assert backed_up["source"] == "journal" and notes.calls == ["backup"]
    [snapshot] = ek_json(site, capsys, "snapshots")
    assert snapshot["source"] == "journal" and snapshot["source_type"] == "notes"

    out = tmp_path / "out"
    ek(site, capsys, "restore", "latest", "--source", "journal", "--to", str(out))
    assert (out / NOTE).read_text() == "the safe's code is 1234\n"
    assert notes.calls[-1] == "restore"

    [drilled] = ek_json(site, capsys, "drill", "journal")
    assert drilled["outcome"] == "passed", drilled
    assert drilled["source_type"] == "notes" and drilled["checked"] == [{"notes_characters": 24}]
    assert notes.calls[-1] == "drill"

    status = ek_json(site, capsys, "status")
    [source] = status["sources"]
    assert source["name"] == "journal" and source["type"] == "notes"
    assert source["last_backup"]["snapshot"] == snapshot["id"]
    assert source["rpo_state"] == "ok" and source["drill"]["outcome"] == "ok"
    assert "source journal: 1 notes snapshots held" in status["warnings"]

    runbook = ek(site, capsys, "runbook")
    assert "`journal` (notes)" in runbook


def test_the_kinds_drill_fails_when_the_restore_differs(
    notes: NotesKind, site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kind's own drill decides: the config's text changed after the backup, so the
    restored note no longer matches it."""
    notes_site(site, "first text\n")
    ek(site, capsys, "init")
    ek(site, capsys, "backup")
    notes_site(site, "second text\n")
    [drilled] = ek_json(site, capsys, "drill", "journal", code=1)
    assert drilled["outcome"] == "failed"
    assert drilled["first_difference"] == f"/{NOTE}: not the text the config holds"


def test_an_unregistered_kind_is_refused_by_the_config(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    with kinds.registered(NotesKind()):
        pass
    notes_site(site)
    ek(site, capsys, "init", code=2)
    assert "unknown source type; use 'files', 'mongodb' or 'git'" in errors[-1]
