"""The site config kept in the target: recover starts from the newest, even one changed back."""

from __future__ import annotations

from pathlib import Path

from conftest import Site

from emberkeep import keys
from emberkeep.repository import siteconfig
from emberkeep.storage import open_storage


def _newest_text(site: Site) -> str:
    storage = open_storage(f"file://{site.repo}", name="local")
    writer_key = keys.WriterKey.load(site.state_dir / "writer.key")
    identities = keys.load_identities(site.identities[0])
    return siteconfig.newest(storage, identities, writer_key).text


def _backup_at(site: Site, hour: int) -> None:
    site.env["EMBERKEEP_NOW"] = f"2026-03-01T{hour:02d}:00:00Z"
    site.run("backup")


def test_a_config_changed_back_to_an_earlier_text_is_the_newest_again(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    site.write_config([src], extra="# first\n")
    first = site.config_path.read_text()
    site.run("init")
    _backup_at(site, 1)
    assert _newest_text(site) == first

    site.write_config([src], extra="# second\n")
    second = site.config_path.read_text()
    _backup_at(site, 2)
    assert _newest_text(site) == second

    site.config_path.write_text(first)  # back to the first text: recover must get it
    _backup_at(site, 3)
    assert _newest_text(site) == first
    stored = list((site.repo / "siteconfig").iterdir())
    _backup_at(site, 4)  # unchanged since: nothing more is stored
    assert list((site.repo / "siteconfig").iterdir()) == stored
    assert len(stored) == 3


def test_a_damaged_host_record_only_means_storing_once_more(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    site.write_config([src])
    site.run("init")
    _backup_at(site, 1)
    (site.state_dir / "siteconfig-stored.json").write_text("{not json")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T02:00:00Z"
    out = site.json("backup")[0]
    # One warning naming the damaged record (state files, emberkeep/statefile.py); the only
    # consequence is that the config is stored once more.
    about = [w for w in out["warnings"] if "site config" in w["message"]]
    assert len(about) == 1 and about[0]["path"].endswith("siteconfig-stored.json"), about
    assert "stored again" in about[0]["message"]
    assert (site.state_dir / "siteconfig-stored.json.damaged").exists()
    assert _newest_text(site) == site.config_path.read_text()
