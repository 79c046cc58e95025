"""fsutil: every directory a write creates is durable (its parent is fsynced), and a
directory that cannot be created is a clear error naming it, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Site

from emberkeep import fsutil
from emberkeep.errors import StorageError


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories fsutil fsyncs, in order."""
    calls: list[Path] = []
    real = fsutil.fsync_dir

    def spy(path: Path) -> None:
        calls.append(Path(path))
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", spy)
    return calls


def test_write_atomic_fsyncs_the_parent_of_every_directory_it_creates(
    tmp_path: Path, synced: list[Path]
) -> None:
    final = tmp_path / "repo" / "data" / "ab" / "ab01"
    fsutil.write_atomic(final, b"pack")
    created = [tmp_path / "repo", tmp_path / "repo" / "data", tmp_path / "repo" / "data" / "ab"]
    assert {d.parent for d in created} <= set(synced), synced
    assert synced[-1] == final.parent  # the new name itself


def test_atomic_output_fsyncs_the_parent_of_every_directory_it_creates(
    tmp_path: Path, synced: list[Path]
) -> None:
    final = tmp_path / "export" / "db" / "coll.bson"
    with fsutil.atomic_output(final) as out:
        out.write(b"bson")
    assert {tmp_path, tmp_path / "export"} <= set(synced), synced
    assert final.read_bytes() == b"bson"


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_a_directory_that_cannot_be_created_is_a_clear_error(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    base = Path("/proc/emberkeep-no-such-dir") if where == "proc" else blocker
    final = base / "repo" / "config"
    with pytest.raises(StorageError, match=str(base)):
        fsutil.write_atomic(final, b"{}")
    with pytest.raises(StorageError, match=str(base)), fsutil.atomic_output(final) as out:
        out.write(b"{}")


def test_init_in_an_uncreatable_target_names_the_path(site: Site) -> None:
    target = "/proc/emberkeep-no-such-dir/repo"
    site.write_config(targets=f'[[targets]]\nname = "local"\nurl = "file://{target}"')
    proc = site.run("init", ok=False)  # asserts: no traceback
    assert proc.returncode == 1
    assert "/proc/emberkeep-no-such-dir" in proc.stderr
