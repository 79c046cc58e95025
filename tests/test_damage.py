"""Damaged objects: `check --read-data` names them, undamaged snapshots still restore.

One repository holds two snapshots of disjoint data (different paths, different random
contents, no empty directories whose tree blob could be shared), so snapshot 2 needs
none of the objects backup 1 wrote. Each test damages one object of backup 1 in a copy.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Site, tree_listing
from robustness_helpers import check_json, flip_byte, objects, restored, write_random

KINDS = ("data", "meta", "index", "snapshots")
POSITIONS = ("first", "middle", "last")


@dataclass(frozen=True)
class Template:
    root: Path
    identity: Path
    recipient: str
    a: Path
    b: Path
    first: frozenset[str]  # objects backup 1 wrote
    second: frozenset[str]  # objects backup 2 wrote
    s1: str
    s2: str


def _fill(root: Path, tag: str) -> None:
    write_random(root / f"{tag}-big.bin", 3 * 1024 * 1024 + 12345)
    write_random(root / f"{tag}-small.bin", 40_000)
    write_random(root / f"sub-{tag}" / f"{tag}-mid.bin", 900_000)
    (root / f"sub-{tag}" / f"{tag}-notes.txt").write_text(f"notes of {tag}\n" * 50)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("damage-template")
    site = Site(root)
    a, b = root / "A", root / "B"
    _fill(a, "a")
    _fill(b, "b")
    site.write_config(paths=[a])
    site.run("init")
    site.run("backup")
    first = objects(site.repo)
    [s1] = site.snapshots()
    site.write_config(paths=[b])
    site.run("backup")
    second = objects(site.repo) - first
    s2 = next(s for s in site.snapshots() if s["id"] != s1["id"])
    for kind in KINDS:
        assert any(n.startswith(kind + "/") for n in first), f"backup 1 wrote no {kind} object"
        assert any(n.startswith(kind + "/") for n in second), f"backup 2 wrote no {kind} object"
    return Template(
        root,
        site.identities[0],
        site.recipients[0],
        a,
        b,
        frozenset(first),
        frozenset(second),
        s1["id"],
        s2["id"],
    )


def _copy(template: Template, tmp_path: Path) -> Site:
    """A site of its own over a copy of the template's repository and state."""
    site = Site(tmp_path)
    site.identities.append(template.identity)
    site.recipients.append(template.recipient)
    shutil.copytree(template.root / "repo", site.repo)
    shutil.copytree(template.root / "state", site.state_dir)
    site.write_config(paths=[template.b])
    return site


def _mentions(error: dict[str, str], name: str) -> bool:
    text = f"{error['object']} {error['error']}"
    return name in text or name.rsplit("/", 1)[-1] in text


def _assert_snapshot2_restores(site: Site, template: Template, tmp_path: Path) -> None:
    listed = [s["id"] for s in site.snapshots()]
    assert template.s2 in listed
    dest = tmp_path / "restore-s2"
    site.run("restore", template.s2, "--to", dest)
    assert tree_listing(restored(dest, template.b)) == tree_listing(template.b)
    assert not restored(dest, template.a).exists()


def test_undamaged_repository_checks_clean(template: Template, tmp_path: Path) -> None:
    """The baseline the damage tests depend on: the copy itself is sound."""
    site = _copy(template, tmp_path)
    result = check_json(site, "--read-data", rc=0)
    assert result["ok"] is True and result["errors"] == [] and result["leftovers"] == []
    assert result["snapshots"] == 2
    assert result["packs_read"] == result["packs"] > 0


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_flipped_byte_is_named_and_other_snapshot_restores(
    template: Template, tmp_path: Path, kind: str, position: str
) -> None:
    site = _copy(template, tmp_path)
    victim = sorted(n for n in template.first if n.startswith(kind + "/"))[0]
    path = site.repo / victim
    size = path.stat().st_size
    flip_byte(path, {"first": 0, "middle": size // 2, "last": size - 1}[position])

    result = check_json(site, "--read-data", rc=1)
    assert result["ok"] is False
    errors = result["errors"]
    assert any(_mentions(e, victim) for e in errors), f"{victim} not named in {errors}"
    for error in errors:  # nothing backup 2 wrote is blamed
        blamed = [n for n in template.second if _mentions(error, n)]
        assert not blamed, f"undamaged {blamed} named in {error}"

    _assert_snapshot2_restores(site, template, tmp_path)


def test_restore_of_the_damaged_snapshot_fails_cleanly(template: Template, tmp_path: Path) -> None:
    """Restoring through a corrupted data pack is refused (exit 1), never silently wrong."""
    site = _copy(template, tmp_path)
    victim = sorted(n for n in template.first if n.startswith("data/"))[0]
    path = site.repo / victim
    flip_byte(path, path.stat().st_size // 2)
    proc = site.run("restore", template.s1, "--to", tmp_path / "restore-s1", ok=False)
    assert proc.returncode == 1
    assert victim.rsplit("/", 1)[-1][:16] in proc.stderr + proc.stdout
    _assert_snapshot2_restores(site, template, tmp_path)


def test_structural_check_reports_truncated_pack(template: Template, tmp_path: Path) -> None:
    site = _copy(template, tmp_path)
    victim = sorted(n for n in template.first if n.startswith("data/"))[0]
    path = site.repo / victim
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 1000)

    result = check_json(site, rc=1)  # structural: no --read-data, no identity needed
    named = [e for e in result["errors"] if _mentions(e, victim)]
    assert named, f"truncated {victim} not named in {result['errors']}"
    assert any("size" in e["error"].lower() for e in named), named
    assert result["packs_read"] == 0
    _assert_snapshot2_restores(site, template, tmp_path)


def test_a_pack_grown_past_its_indexed_size_is_named_and_never_read(
    template: Template, tmp_path: Path
) -> None:
    """The storage side can make a pack any size; ``check --read-data`` compares the size
    with the index's before reading, so it never fetches the object (a pack replaced after
    the listing is read no further than its indexed size)."""
    from emberkeep import config as ek_config
    from emberkeep.repository.check import check
    from emberkeep.site import Site as ApiSite

    site = _copy(template, tmp_path)
    victim = sorted(n for n in template.first if n.startswith("data/"))[0]
    size = (site.repo / victim).stat().st_size
    with open(site.repo / victim, "r+b") as handle:
        handle.truncate(size + (1 << 30))  # sparse: a GiB more, costing no disk

    repo = ApiSite(ek_config.load(str(site.config_path))).repository(read=True)
    real, fetched = repo.storage.get, dict[str, int]()

    def get(name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = real(name, offset, length)
        fetched[name] = fetched.get(name, 0) + len(data)
        return data

    repo.storage.get = get  # type: ignore[method-assign]  # our own seam, counted
    result = check(repo, read_data=True)
    assert [e["object"] for e in result.errors] == [victim], result.errors
    assert f"the index says {size}" in result.errors[0]["error"]
    assert victim not in fetched
    packs = {n for n in objects(site.repo) if n.startswith(("data/", "meta/"))} - {victim}
    assert result.packs_read == len(packs) and set(fetched) >= packs
