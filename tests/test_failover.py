"""No single point of failure among targets (README, "Targets"): when a source's first
target cannot be opened (its disk unmounted), the backup goes to the next one and is copied
from there; the one passed over is reported failed and `emberkeep replicate` fills it in
when it is back. A target's ``sources`` list limits what it takes (cold: the database)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Site


def _site(site: Site, tmp_path: Path) -> dict[str, Path]:
    dirs = {name: tmp_path / f"repo-{name}" for name in ("local", "remote", "cold")}
    for name in ("db", "media"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.txt").write_text(f"{name} day 1\n")
    sources = "".join(
        f'[[sources]]\nname = "{n}"\ntype = "files"\npaths = ["{tmp_path / n}"]\n'
        for n in ("db", "media")
    )
    targets = (
        f'[[targets]]\nname = "local"\nurl = "file://{dirs["local"]}"\n'
        f'[[targets]]\nname = "remote"\nurl = "file://{dirs["remote"]}"\n'
        f'[[targets]]\nname = "cold"\nurl = "file://{dirs["cold"]}"\ncopies = "monthly"\n'
        'sources = ["db"]\n'
    )
    site.write_config(None, extra_sources=sources, targets=targets)
    site.run("init")
    return dirs


def held(site: Site, target: str) -> list[tuple[str, str]]:
    return [(s["source"], s["id"]) for s in site.json("snapshots", "--target", target)]


def test_a_night_with_the_local_disk_unmounted_still_reaches_remote_and_cold(
    site: Site, tmp_path: Path
) -> None:
    dirs = _site(site, tmp_path)
    site.env["EMBERKEEP_NOW"] = "2026-03-31T02:00:00Z"
    march = {e["source"]: e["snapshot"]["id"] for e in site.json("backup")}
    assert held(site, "cold") == []  # March has not ended: nothing monthly to copy yet
    assert len(held(site, "local")) == len(held(site, "remote")) == 2

    dirs["local"].rename(tmp_path / "unmounted")  # the disk is gone for the night
    dirs["local"].mkdir()
    (tmp_path / "db" / "data.txt").write_text("db day 2\n")
    site.env["EMBERKEEP_NOW"] = "2026-04-01T02:00:00Z"
    proc = site.run("backup", "--json", ok=False)
    assert proc.returncode == 1
    out = {e["source"]: e for e in json.loads(proc.stdout)}
    for name in ("db", "media"):
        assert out[name]["snapshot"]["target"] == "remote"
        assert "is its disk mounted?" in out[name]["unavailable"]["local"]
        local = next(c for c in out[name]["copies"] if c["target"] == "local")
        assert local["status"] == "failed" and "unavailable at backup time" in local["error"]
    night = {out["db"]["snapshot"]["id"], out["media"]["snapshot"]["id"]}
    assert night <= {i for _, i in held(site, "remote")}
    # copied from remote, cold's only the database: March's last, the one the monthly rule keeps
    assert held(site, "cold") == [("db", march["db"])]
    assert "run `emberkeep replicate` when local is reachable" in proc.stderr
    rows = site.json("log", "--kind", "backup", "--since", "2026-04-01T00:00:00Z")
    assert {(r["source"], r["target"]) for r in rows} == {("db", "remote"), ("media", "remote")}

    dirs["local"].rmdir()
    (tmp_path / "unmounted").rename(dirs["local"])  # mounted again
    site.env["EMBERKEEP_NOW"] = "2026-04-01T08:00:00Z"
    copies = site.json("replicate")
    back = [c for c in copies if c["target"] == "local"]
    assert back and set(back[0]["snapshots"]) == night
    assert night <= {i for _, i in held(site, "local")}
    site.run("check")
    # the next night the local disk is primary again
    site.env["EMBERKEEP_NOW"] = "2026-04-02T02:00:00Z"
    again = {e["source"]: e for e in site.json("backup")}
    assert again["db"]["snapshot"]["target"] == "local" and "unavailable" not in again["db"]


def test_target_sources_are_checked_by_name(site: Site, tmp_path: Path) -> None:
    _site(site, tmp_path)
    text = site.config_path.read_text()
    site.config_path.write_text(text.replace('sources = ["db"]', 'sources = ["dbb"]'))
    proc = site.run("snapshots", ok=False)
    assert (
        proc.returncode == 2
        and "targets[3] (cold).sources[1]" in proc.stderr
        and "dbb" in proc.stderr
    )
    cut = text.index("[[targets]]")
    only = text[:cut] + f'[[targets]]\nname = "a"\nurl = "file://{tmp_path}/a"\nsources = ["db"]\n'
    site.config_path.write_text(only)
    proc = site.run("snapshots", ok=False)
    assert proc.returncode == 2 and "no target takes source 'media'" in proc.stderr
