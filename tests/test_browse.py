"""Browsing a files snapshot without restoring it: ``ls``, ``find``, ``diff`` (README,
"Browse a snapshot"), each with ``--json``, and a forged listing refused by path as a
restore refuses it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Site
from test_hostile_repository import Forger, _node


def _shop(src: Path) -> None:
    (src / "media" / "products").mkdir(parents=True)
    (src / "media" / "products" / "candle.png").write_bytes(os.urandom(3000))
    (src / "media" / "products" / "soap.png").write_bytes(os.urandom(1200))
    (src / "config").mkdir()
    (src / "config" / "shop.ini").write_text("[shop]\nname = candles\n")
    (src / "config" / "shop.ini").chmod(0o640)
    os.symlink("config/shop.ini", src / "current.ini")


def _site(site: Site, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    _shop(src)
    site.write_config([src])
    site.run("init")
    site.run("backup")
    return src


def test_ls_lists_one_directory_and_long_format(site: Site, tmp_path: Path) -> None:
    src = _site(site, tmp_path)
    top = site.json("ls", "latest", str(src))
    paths = {e["path"]: e for e in top["entries"]}
    assert set(paths) == {f"{src}/media", f"{src}/config", f"{src}/current.ini"}
    assert paths[f"{src}/current.ini"] == {**paths[f"{src}/current.ini"], "type": "symlink",
                                           "target": "config/shop.ini"}  # fmt: skip
    ini = site.json("ls", "latest", f"{src}/config/shop.ini")["entries"]
    assert [(e["path"], e["type"], e["size"], e["mode"]) for e in ini] == [
        (f"{src}/config/shop.ini", "file", 22, "0640")
    ]
    everything = site.json("ls", "latest", str(src / "media"), "-R")["entries"]
    assert [e["path"] for e in everything] == [
        f"{src}/media/products",
        f"{src}/media/products/candle.png",
        f"{src}/media/products/soap.png",
    ]
    long = site.run("ls", "latest", f"{src}/config", "-l").stdout
    assert "-rw-r-----" in long and "22 B" in long and long.rstrip().endswith("shop.ini")
    plain = site.run("ls", "latest", str(src)).stdout.split()
    assert f"{src}/media/" in plain and f"{src}/current.ini" in plain


def test_ls_of_a_missing_path_is_a_usage_error(site: Site, tmp_path: Path) -> None:
    src = _site(site, tmp_path)
    proc = site.run("ls", "latest", f"{src}/nope", ok=False)
    assert proc.returncode == 2
    assert f"path {src}/nope is not in the snapshot" in proc.stderr
    proc = site.run("ls", "latest", f"{src}/config/shop.ini/below", ok=False)
    assert proc.returncode == 2


def test_find_names_every_snapshot_holding_a_path(site: Site, tmp_path: Path) -> None:
    src = _site(site, tmp_path)
    first = site.snapshots()[-1]["id"]
    (src / "media" / "products" / "soap.png").unlink()
    site.run("backup")
    second = site.snapshots()[-1]["id"]
    soap = site.json("find", "soap.png")["snapshots"]
    assert [s["snapshot"] for s in soap] == [first]
    assert soap[0]["matches"][0]["path"] == f"{src}/media/products/soap.png"
    assert soap[0]["matches"][0]["size"] == 1200
    pngs = site.json("find", f"{src}/media/*/*.png", "--source", "files")["snapshots"]
    assert [(s["snapshot"], len(s["matches"])) for s in pngs] == [(first, 2), (second, 1)]
    assert site.json("find", "*.docx")["snapshots"] == []
    text = site.run("find", "candle.png").stdout
    assert text.count("candle.png") == 2 and first[:12] in text and second[:12] in text
    proc = site.run("find", "x", "--source", "flies", ok=False)
    assert proc.returncode == 2 and "files" in proc.stderr


def test_diff_shows_added_removed_changed_with_sizes(site: Site, tmp_path: Path) -> None:
    src = _site(site, tmp_path)
    first = site.snapshots()[-1]["id"]
    (src / "media" / "products" / "soap.png").unlink()
    (src / "media" / "products" / "candle.png").write_bytes(os.urandom(5000))
    (src / "config" / "shop.ini").chmod(0o600)
    (src / "new").mkdir()
    (src / "new" / "a.txt").write_text("abc")
    site.run("backup")
    second = site.snapshots()[-1]["id"]
    out = site.json("diff", first, second)
    got = {(c["path"].removeprefix(str(src)), c["change"], c["what"], c["size_a"], c["size_b"])
           for c in out["changes"]}  # fmt: skip
    assert got == {
        ("/media/products/soap.png", "removed", "", 1200, None),
        ("/media/products/candle.png", "changed", "content", 3000, 5000),
        ("/config/shop.ini", "changed", "metadata", 22, 22),
        ("/new", "added", "", None, None),
        ("/new/a.txt", "added", "", None, 3),
    }
    assert (out["from"], out["to"]) == (first, second)
    same = site.json("diff", second, second)
    assert same["changes"] == []
    text = site.run("diff", first, second)
    assert f"- {src}/media/products/soap.png" in text.stdout
    assert f"M {src}/media/products/candle.png [content]" in text.stdout
    assert "2 added, 1 removed, 2 changed" in text.stderr


def test_a_forged_listing_is_refused_by_path_not_followed(site: Site, tmp_path: Path) -> None:
    """A writer-key holder stores a listing with '..' and a name holding '/': ``ls -R``,
    ``find`` and ``diff`` list the genuine entries and refuse those, naming each (exit 1)."""
    src = tmp_path / "src"
    src.mkdir()
    _shop(src)
    identity, _ = site.keygen()
    site.write_config([src], identity=False)
    site.run("init")
    site.run("backup")
    genuine = site.snapshots()[-1]["id"]
    forger = Forger(site, genuine)
    bad = [forger.file("..", b"escape"), forger.file("a/b", b"x"), _node("ok.txt", "symlink",
           target="/etc/passwd")]  # fmt: skip
    forged = forger.snapshot(bad, minutes=5)
    proc = site.run("ls", forged, "/", "-R", "--json", "--identity", identity, ok=False)
    assert proc.returncode == 1
    listed = json.loads(proc.stdout)
    paths = {e["path"] for e in listed["entries"]}
    assert "/ok.txt" in paths and f"/genuine{src}/config/shop.ini" in paths
    assert not any(".." in p or "a/b" in p for p in paths)
    reasons = {r["path"]: r["reason"] for r in listed["refused"]}
    assert any("would leave its directory" in r for r in reasons.values())
    assert any("more than one path component" in r for r in reasons.values())
    proc = site.run("diff", genuine, forged, "--identity", identity, ok=False)
    assert proc.returncode == 1 and "would leave its directory" in proc.stderr
    proc = site.run("find", "*", "--identity", identity, ok=False)
    assert proc.returncode == 1 and "/ok.txt" in proc.stdout
