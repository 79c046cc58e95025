"""A restore over files in use replaces them, but keeps what differed, never destroying it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Site, restored, tree_listing
from robustness_helpers import mounted_tmpfs


def test_a_restore_over_a_tree_in_use_keeps_what_it_replaces(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "conf").mkdir(parents=True)
    (src / "conf" / "site.conf").write_text("server { listen 80; }\n")
    (src / "conf" / "same.conf").write_text("unchanged\n")
    (src / "conf" / "link").symlink_to("site.conf")
    (src / "notes.txt").write_text("notes\n")
    (src / "cache").mkdir()
    (src / "cache" / "entry").write_text("cached\n")
    site.write_config([src])
    site.run("init")
    site.run("backup")
    snapshot_view = tree_listing(src)

    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    live = restored(out, src)
    # the tree is used and changed after the backup
    (live / "conf" / "site.conf").write_text("server { listen 8080; }  # edited since\n")
    (live / "conf" / "link").unlink()
    (live / "conf" / "link").write_text("a file where the snapshot has a symlink\n")
    (live / "notes.txt").unlink()
    (live / "notes.txt").mkdir()
    (live / "notes.txt" / "inside").write_text("a directory where the snapshot has a file\n")
    (live / "cache").rename(live / "cache-dir")
    (live / "cache").write_text("a file where the snapshot has a directory\n")
    (live / "new.txt").write_text("not in the snapshot: left alone\n")

    proc = site.run("restore", "latest", "--to", out, "--json")
    result = json.loads(proc.stdout)
    assert result["replaced"] == 4, result
    [kept_in] = result["kept_in"]  # one filesystem here: one directory
    kept = Path(kept_in)
    assert kept.parent == out and kept.name.startswith(".emberkeep-replaced-")
    # everything the snapshot holds is back as it was backed up
    now = tree_listing(live)
    ours = {k: v for k, v in now.items() if k != "new.txt" and not k.startswith("cache-dir")}
    assert ours == snapshot_view
    assert (live / "new.txt").read_text() == "not in the snapshot: left alone\n"
    # and what was replaced is kept, byte for byte, under its snapshot path
    aside = kept / str(live.relative_to(out))
    assert (aside / "conf" / "site.conf").read_text().endswith("# edited since\n")
    assert (aside / "conf" / "link").read_text().startswith("a file where")
    assert (aside / "notes.txt" / "inside").read_text().startswith("a directory where")
    assert (aside / "cache").read_text().startswith("a file where the snapshot has a dir")
    assert not (aside / "conf" / "same.conf").exists()  # the same bytes: nothing to keep
    assert os.stat(kept).st_mode & 0o077 == 0

    again = site.run("restore", "latest", "--to", out, "--json")  # nothing differs now
    assert json.loads(again.stdout)["replaced"] == 0

    # an aside name planted in advance (a symlink to elsewhere) is never used: a new one is made
    (live / "conf" / "site.conf").write_text("edited again\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for n in range(3):
        stamp_guess = kept.name.rsplit("-", 1)[0]
        (out / f"{stamp_guess}-planted{n}").symlink_to(elsewhere)
    third = json.loads(site.run("restore", "latest", "--to", out, "--json").stdout)
    assert third["replaced"] == 1
    assert not any(elsewhere.iterdir())
    assert Path(third["kept_in"][0]).parent == out and not Path(third["kept_in"][0]).is_symlink()


def test_what_is_replaced_on_another_disk_is_kept_on_that_disk(site: Site, tmp_path: Path) -> None:
    """A disk mounted below the destination (``--to /`` with /home apart): the entry is kept
    at the top of its own filesystem, since a rename cannot cross disks."""
    src = tmp_path / "src"
    (src / "home").mkdir(parents=True)
    (src / "home" / "notes.txt").write_text("as backed up\n")
    site.write_config([src])
    site.run("init")
    site.run("backup")
    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    home = restored(out, src) / "home"
    with mounted_tmpfs(home, 8):
        (home / "notes.txt").write_text("written on the other disk since\n")
        result = json.loads(site.run("restore", "latest", "--to", out, "--json").stdout)
        assert result["replaced"] == 1
        [kept] = map(Path, result["kept_in"])
        assert kept.parent == home  # on the mounted disk, not under out
        assert os.stat(kept).st_dev == os.stat(home).st_dev != os.stat(out).st_dev
        aside = kept / str(home.relative_to(out)) / "notes.txt"
        assert aside.read_text() == "written on the other disk since\n"
        assert (home / "notes.txt").read_text() == "as backed up\n"
