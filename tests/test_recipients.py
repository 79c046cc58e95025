"""A repository keeps the recipients its data is encrypted to; a backup under others is refused."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Site, repo_objects, tree_listing


def _objects(repo: Path) -> set[Path]:
    return {p for p in repo.rglob("*") if p.is_file() and "locks" not in p.parts}


def _backup_refused(site: Site, *fragments: str) -> None:
    before = _objects(site.repo)
    proc = site.run("backup", ok=False)
    assert proc.returncode == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    assert "AGE-SECRET-KEY" not in proc.stderr
    assert _objects(site.repo) == before  # nothing written: no pack, index or snapshot


def test_a_backup_under_changed_recipients_is_refused_and_writes_nothing(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(300_000))
    _, first = site.keygen("first.txt")
    site.write_config([src])
    site.run("init")
    site.run("backup")
    assert (site.repo / "keys" / "recipients").is_file()

    _, second = site.keygen("second.txt")  # a second recipient added to the config
    site.write_config([src])
    _backup_refused(site, "added", second[:12], "new, empty location")
    proc = site.run("init", ok=False)  # init says so too, rather than "already initialized"
    assert proc.returncode == 1 and "added" in proc.stderr, proc.stderr

    site.recipients[:] = [second]  # the first replaced by the second
    site.write_config([src], identity=site.identities[1])
    _backup_refused(site, "added", "removed", first[:12])

    site.recipients[:] = [first]  # put back: backups go on
    site.write_config([src], identity=site.identities[0])
    (src / "more.bin").write_bytes(os.urandom(100_000))
    site.run("backup")
    assert len(site.snapshots()) == 2
    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert tree_listing(out / src.relative_to("/")) == tree_listing(src)


def test_a_repository_without_the_record_gets_it_at_its_next_backup(
    site: Site, tmp_path: Path
) -> None:
    """Repositories made before the record existed: the config's set is recorded, then held."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    site.write_config([src])
    site.run("init")
    record = site.repo / "keys" / "recipients"
    if record.exists():
        record.unlink()  # as in a repository initialized by an earlier version
    site.run("backup")
    assert record.is_file()
    site.keygen("other.txt")
    site.write_config([src])
    _backup_refused(site, "added")
    assert len(repo_objects(site.repo, "snapshots")) == 1
