"""init and an empty target: one that held this host's repository (an unmounted disk) is
not silently replaced by a new repository; one the host never used gets a new one."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

from conftest import Site

from emberkeep import config as ek_config
from emberkeep import keys
from emberkeep.errors import RepositoryError
from emberkeep.repository import layout
from emberkeep.runner import setup
from emberkeep.site import Site as ApiSite


def _unmount(site: Site, tmp_path: Path) -> None:
    """What an unmounted backup disk looks like: the mount point, empty."""
    shutil.move(site.repo, tmp_path / "the-disk")
    site.repo.mkdir()


def _backed_up_site(site: Site, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a\n")
    site.write_config(paths=[source])
    site.run("init")
    site.run("backup")


def test_init_refuses_an_empty_target_that_held_this_hosts_repository(
    site: Site, tmp_path: Path
) -> None:
    _backed_up_site(site, tmp_path)
    repo_id = keys.WriterKey.load(site.state_dir / "writer.key").repo_id
    _unmount(site, tmp_path)

    proc = site.run("init", ok=False)
    assert proc.returncode == 1
    assert repo_id in proc.stderr and "mounted" in proc.stderr and "--new" in proc.stderr
    assert list(site.repo.iterdir()) == [], "init wrote into the empty mount point"

    # mounted again: all is as before
    site.repo.rmdir()
    shutil.move(tmp_path / "the-disk", site.repo)
    site.run("backup")
    assert len(site.snapshots()) == 2


def test_init_new_creates_a_repository_in_an_empty_target_anyway(
    site: Site, tmp_path: Path
) -> None:
    _backed_up_site(site, tmp_path)
    _unmount(site, tmp_path)
    api = ApiSite(ek_config.load(str(site.config_path)))
    outcomes = setup.init(api, new=True)
    assert [(o.target, o.created) for o in outcomes] == [("local", True)]
    assert (site.repo / layout.CONFIG).is_file() and (site.repo / layout.WRITER_KEY).is_file()
    shutil.rmtree(site.repo)  # and from the command line, as the refusal says
    site.repo.mkdir()
    site.run("init", "--new")
    assert (site.repo / layout.CONFIG).is_file()


def test_init_new_makes_a_new_writer_key_and_keeps_the_old_one_aside(
    site: Site, tmp_path: Path
) -> None:
    """A new repository shares no key with the old one (whose disk may come back)."""
    _backed_up_site(site, tmp_path)
    key_path = site.state_dir / "writer.key"
    old = keys.WriterKey.load(key_path)
    refused = site.run("init", "--new", ok=False)  # the target still holds the old one
    assert refused.returncode == 1 and old.repo_id in refused.stderr, refused.stderr
    assert keys.WriterKey.load(key_path) == old

    _unmount(site, tmp_path)
    proc = site.run("init", "--new")
    new = keys.WriterKey.load(key_path)
    assert new.repo_id != old.repo_id and new.mac_key != old.mac_key
    assert new.index_key != old.index_key and new.chunker_seed != old.chunker_seed
    assert json.loads((site.repo / layout.CONFIG).read_text())["id"] == new.repo_id
    [aside] = site.state_dir.glob("writer.key.before-new-*")
    assert keys.WriterKey.load(aside) == old and str(aside) in proc.stdout
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    site.run("backup")
    assert len(site.snapshots()) == 1


def test_init_creates_a_repository_in_an_empty_target_the_host_never_used(
    site: Site, tmp_path: Path
) -> None:
    _backed_up_site(site, tmp_path)
    second = tmp_path / "second"
    site.write_config(
        paths=[tmp_path / "src"],
        targets=(
            f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
            f'[[targets]]\nname = "second"\nurl = "file://{second}"'
        ),
    )
    second.mkdir()
    site.run("init")
    assert (second / layout.CONFIG).is_file()


def test_the_missing_repository_of_an_unmounted_disk_is_explained(
    site: Site, tmp_path: Path
) -> None:
    """What backup (through Site.repository) should say: the hint that site.py uses."""
    _backed_up_site(site, tmp_path)
    _unmount(site, tmp_path)
    api = ApiSite(ek_config.load(str(site.config_path)))
    error = setup.unmounted_error(api, "local")
    assert isinstance(error, RepositoryError)
    assert "mounted" in str(error) and "emberkeep init`" not in str(error)


def test_backup_into_an_unmounted_disk_does_not_suggest_init(site: Site, tmp_path: Path) -> None:
    _backed_up_site(site, tmp_path)
    _unmount(site, tmp_path)
    proc = site.run("backup", ok=False)
    assert "mounted" in proc.stderr and "init" not in proc.stderr
