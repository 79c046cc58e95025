"""Round trip: what goes into a backup comes back out, exactly (content and metadata)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import Site, repo_objects, restored, tree_listing

MiB = 1024 * 1024
T0 = 1_600_000_000_000_000_000  # a base mtime in ns; every entry gets T0 + its own offset


def write(path: Path, data: bytes, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def set_all_mtimes(root: Path) -> None:
    """Give every entry (and root) a distinct mtime with a non-zero ns part, deepest first."""
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        entries += [os.path.join(dirpath, n) for n in dirnames + filenames]
    for n, path in enumerate(sorted(entries, key=lambda p: -p.count("/"))):
        t = T0 + n * 1_000_000_007 + 123_456_789
        os.utime(path, ns=(t, t), follow_symlinks=False)
    os.utime(root, ns=(T0 + 7, T0 + 7))


def make_unix_socket(path: Path) -> None:
    # bind() takes at most ~107 bytes of path: bind a short relative name from the directory
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(path.name)
    finally:
        os.chdir(cwd)
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def drop_specials(root: Path, specials: list[Path]) -> None:
    """Remove skipped special files from the source, keeping their directory's times."""
    for path in specials:
        parent = os.lstat(path.parent)
        path.unlink()
        os.utime(path.parent, ns=(parent.st_atime_ns, parent.st_mtime_ns))


def diff_trees(a: Path, b: Path) -> None:
    proc = subprocess.run(
        ["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[:4000] + proc.stderr.decode(
        errors="replace"
    )


def build_rich_tree(src: Path, *, long_names: bool = True) -> dict[str, Path]:
    """Every kind of entry the files source keeps; returns a few paths by role."""
    roles: dict[str, Path] = {}
    # regular files of several sizes around the chunking thresholds
    sizes = {
        "one": 1,
        "small": 100,
        "page": 4096,
        "below_min": 512 * 1024 - 1,
        "at_min": 512 * 1024,
        "above_min": 512 * 1024 + 1,
        "three_mib": 3 * MiB,
    }
    for name, size in sizes.items():
        roles[name] = write(src / "files" / f"{name}.bin", os.urandom(size))
    roles["text"] = write(src / "files" / "compressible.txt", b"all work and no play\n" * 300_000)
    roles["empty"] = write(src / "files" / "empty", b"")
    # empty and nested directories
    (src / "empty_dir").mkdir()
    (src / "nested" / "a" / "b" / "c" / "empty").mkdir(parents=True)
    write(src / "nested" / "a" / "b" / "deep.txt", b"deep\n")
    # symlinks: relative, absolute, dangling, to a directory
    os.symlink("files/one.bin", src / "link_rel")
    os.symlink(str(src / "files" / "small.bin"), src / "link_abs")
    os.symlink("does/not/exist", src / "link_dangling")
    os.symlink("nested/a", src / "link_dir")
    # hardlinks: a pair in one directory and a trio across directories
    write(src / "hard" / "a", b"hardlinked content\n" * 10)
    os.link(src / "hard" / "a", src / "hard" / "b")
    write(src / "hard1" / "x", os.urandom(700_000))
    (src / "hard2").mkdir()
    os.link(src / "hard1" / "x", src / "hard2" / "y")
    os.link(src / "hard1" / "x", src / "hard2" / "z")
    # unusual modes and owners
    write(src / "modes" / "private", b"0600\n", 0o600)
    write(src / "modes" / "script.sh", b"#!/bin/sh\necho hi\n", 0o755)
    write(src / "modes" / "readonly", b"0444\n", 0o444)
    write(src / "modes" / "setgid-ish", b"2750\n", 0o2750)
    write(src / "modes" / "locked" / "inside", b"inside a 0700 dir\n")
    os.chmod(src / "modes" / "locked", 0o700)
    write(src / "owners" / "other", b"owned by 1234:5678\n")
    os.chown(src / "owners" / "other", 1234, 5678)
    os.symlink("other", src / "owners" / "link")
    os.chown(src / "owners" / "link", 4321, 8765, follow_symlinks=False)
    (src / "owners" / "dir").mkdir()
    os.chown(src / "owners" / "dir", 2000, 3000)
    # names: unicode, 255 bytes long, not UTF-8
    roles["unicode"] = write(src / "café" / "日本語 ✓.txt", "unicode ✓\n".encode())
    if long_names:
        write(src / ("L" * 255), b"a name of 255 bytes\n")
        write(src / "long" / ("日" * 85), b"255 bytes of UTF-8\n")  # 3 bytes each
    raw_file = Path(os.fsdecode(os.fsencode(src) + b"/\xff\xferaw"))
    roles["raw"] = write(raw_file, b"a name that is not UTF-8\n")
    raw_dir = Path(os.fsdecode(os.fsencode(src) + b"/dir-\xe9\x80"))
    write(raw_dir / "inner", b"inside a non-UTF-8 directory\n")
    return roles


def test_special_files_are_skipped_with_a_warning(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "keep.txt", b"kept\n")
    fifo = src / "pipe"
    os.mkfifo(fifo)
    sock = src / "sock"
    make_unix_socket(sock)
    site.write_config(paths=[src])
    site.run("init")
    results = site.json("backup")
    assert isinstance(results, list)
    assert len(results) == 1
    assert results[0]["source"] == "files"
    warnings = {w["path"]: w["message"] for w in results[0]["warnings"]}
    assert set(warnings) == {str(fifo), str(sock)}
    assert "fifo" in warnings[str(fifo)]
    assert "socket" in warnings[str(sock)]
    assert results[0]["snapshot"]["summary"]["files"] == 1

    # the snapshot holds no trace of them; the rest restores
    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert sorted(os.listdir(restored(out, src))) == ["keep.txt"]
    assert (restored(out, src) / "keep.txt").read_bytes() == b"kept\n"


def test_round_trip_of_a_rich_tree(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    roles = build_rich_tree(src)
    specials = [src / "special" / "fifo", src / "special" / "socket"]
    write(src / "special" / "regular", b"next to special files\n")
    os.mkfifo(specials[0])
    make_unix_socket(specials[1])
    set_all_mtimes(src)

    site.write_config(paths=[src])
    site.run("init")
    results = site.json("backup")
    assert {w["path"] for w in results[0]["warnings"]} == {str(p) for p in specials}
    drop_specials(src, specials)
    expected = tree_listing(src)

    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    got = tree_listing(restored(out, src))
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
    root_src, root_out = os.lstat(src), os.lstat(restored(out, src))
    assert (root_out.st_mode, root_out.st_mtime_ns) == (root_src.st_mode, root_src.st_mtime_ns)

    # hardlinks come back as hardlinks, not copies
    r = restored(out, src)
    assert os.stat(r / "hard" / "a").st_ino == os.stat(r / "hard" / "b").st_ino
    trio = {os.stat(r / p).st_ino for p in ("hard1/x", "hard2/y", "hard2/z")}
    assert len(trio) == 1
    assert os.stat(r / "hard1" / "x").st_nlink == 3
    assert os.stat(r / "files" / "one.bin").st_nlink == 1
    assert os.readlink(r / "link_abs") == str(src / "files" / "small.bin")
    assert (r / roles["raw"].name).read_bytes() == b"a name that is not UTF-8\n"
    diff_trees(src, r)


def test_round_trip_of_255_byte_names(site: Site, tmp_path: Path) -> None:
    """NAME_MAX is 255 bytes: such names back up and restore like any other."""
    src = tmp_path / "src"
    write(src / ("L" * 255), b"a name of 255 bytes\n")
    write(src / ("日" * 85), b"255 bytes of UTF-8\n")
    (src / ("D" * 255)).mkdir()
    write(src / ("D" * 255) / ("F" * 255), b"deep\n")
    os.symlink("L" * 255, src / ("S" * 255))
    set_all_mtimes(src)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert tree_listing(restored(out, src)) == tree_listing(src)


def test_round_trip_after_changes_with_the_files_cache(site: Site, tmp_path: Path) -> None:
    """A second backup, mostly from the files cache, restores as exactly as the first."""
    src = tmp_path / "src"
    build_rich_tree(src, long_names=False)  # those have a test of their own
    set_all_mtimes(src)
    site.write_config(paths=[src])
    site.run("init")
    first = site.json("backup")[0]["snapshot"]
    before = tree_listing(src)

    # same size and mtime, other bytes: only the ctime tells (the cache must not trust it)
    same = src / "files" / "small.bin"
    st = os.lstat(same)
    same.write_bytes(os.urandom(st.st_size))
    os.utime(same, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(src / "files" / "page.bin", "ab") as handle:
        handle.write(b"appended")
    (src / "files" / "one.bin").unlink()
    write(src / "files" / "new.txt", b"new after the first backup\n")
    os.rename(src / "nested", src / "nested2")
    os.link(src / "hard" / "a", src / "hard" / "c")  # a third name for an unchanged file

    second = site.json("backup")[0]["snapshot"]
    assert second["summary"]["bytes_from_cache"] > 3 * MiB  # the cache was used
    after = tree_listing(src)

    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert tree_listing(restored(out, src)) == after
    r = restored(out, src)
    assert (r / "files" / "small.bin").read_bytes() == same.read_bytes()
    assert os.stat(r / "hard" / "a").st_ino == os.stat(r / "hard" / "c").st_ino

    # the first snapshot, by a prefix of its id, is still the first tree
    out = tmp_path / "out-first"
    site.run("restore", first["id"][:10], "--to", out)
    assert tree_listing(restored(out, src)) == before


@pytest.mark.slow
def test_round_trip_of_a_big_file_and_many_small_files(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    big = src / "big" / "big.bin"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as handle:
        for _ in range(80):
            handle.write(os.urandom(MiB))

    # the big file alone: its blobs spread over at least four data packs
    site.write_config(paths=[big.parent])
    site.run("init")
    first = site.json("backup")[0]["snapshot"]["summary"]
    data_packs = repo_objects(site.repo, "data")
    assert len(data_packs) >= 4, [p.stat().st_size for p in data_packs]
    assert first["packs_new"] >= len(data_packs)
    assert all(p.stat().st_size <= 64 * MiB for p in data_packs)
    assert sum(p.stat().st_size for p in data_packs) >= 80 * MiB

    # 20,000 small files in 40 directories, next to the big one
    for d in range(40):
        folder = src / "many" / f"d{d:02}"
        folder.mkdir(parents=True)
        for f in range(500):
            (folder / f"f{f:03}.txt").write_bytes(f"file {d}/{f}\n".encode() * (1 + f % 7))
    site.write_config(paths=[src])
    summary = site.json("backup")[0]["snapshot"]["summary"]
    assert summary["files"] == 20_001
    assert summary["bytes_new"] < 16 * MiB  # small files and trees; the big file is stored
    expected = tree_listing(src)

    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    got = tree_listing(restored(out, src))
    assert len(got) == len(expected) == 20_001 + 40 + 2  # files, many/dNN, big and many
    assert got == expected
    diff_trees(src, restored(out, src))


def test_restore_of_chosen_paths(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a" / "one.txt", b"one\n")
    write(src / "a" / "two.txt", b"two\n")
    write(src / "b" / "three.txt", b"three\n")
    write(src / "b" / "sub" / "four.txt", b"four\n")
    (src / "b" / "empty").mkdir()
    os.symlink("three.txt", src / "b" / "link")
    write(src / "c" / "five.txt", b"five\n")
    write(src / "top.txt", b"top\n")
    # a hardlink whose first name (in walk order) is not among the chosen paths
    write(src / "h1" / "first", b"linked\n" * 100)
    (src / "h2").mkdir()
    os.link(src / "h1" / "first", src / "h2" / "second")
    os.chmod(src / "a", 0o750)
    set_all_mtimes(src)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")

    out = tmp_path / "out"
    site.run(
        "restore", "latest", src / "a" / "one.txt", src / "b", src / "h2" / "second", "--to", out
    )
    r = restored(out, src)
    got = tree_listing(r)
    assert sorted(got) == [
        "a",
        "a/one.txt",
        "b",
        "b/empty",
        "b/link",
        "b/sub",
        "b/sub/four.txt",
        "b/three.txt",
        "h2",
        "h2/second",
    ]
    full = tree_listing(src)
    for name in ("a/one.txt", "b", "b/empty", "b/link", "b/sub", "b/sub/four.txt", "b/three.txt"):
        assert got[name] == full[name], name
    # ancestors of chosen paths are recreated with their own metadata
    assert got["a"] == full["a"]
    assert (r / "h2" / "second").read_bytes() == b"linked\n" * 100

    # paths after the options, as the README writes them, choose the same
    after = tmp_path / "after"
    site.run("restore", "latest", "--to", after, src / "a" / "one.txt", src / "b", src / "h2")
    assert sorted(tree_listing(restored(after, src))) == sorted(got)

    # a path the snapshot does not hold is a usage error that names it
    proc = site.run("restore", "latest", src / "nope", "--to", tmp_path / "out2", ok=False)
    assert proc.returncode == 2
    assert str(src / "nope") in proc.stderr


def test_restore_of_a_chosen_non_utf8_path(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    raw = Path(os.fsdecode(os.fsencode(src) + b"/caf\xe9.txt"))  # latin-1, not UTF-8
    write(raw, b"latin-1 name\n")
    write(src / "other.txt", b"other\n")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    out = tmp_path / "out"
    site.run("restore", "latest", raw, "--to", out)
    assert os.listdir(os.fsencode(restored(out, src))) == [b"caf\xe9.txt"]
    assert (restored(out, src) / raw.name).read_bytes() == b"latin-1 name\n"


def test_exclude_patterns_leave_matching_files_out(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "keep.txt", b"keep\n")
    write(src / "drop.tmp", b"drop\n")
    write(src / "deep" / "er" / "drop.tmp", b"drop\n")
    write(src / "deep" / "er" / "keep.tmp.txt", b"keep\n")
    write(src / "deep" / "tmp", b"keep: no suffix\n")
    write(src / "cache.tmp" / "inside.txt", b"a directory that matches is left out whole\n")
    write(src / "skipme" / "x.txt", b"excluded by an absolute pattern\n")
    write(src / "keepme" / "skipme", b"a file named like the excluded dir\n")
    site.write_config(paths=[src], exclude=["*.tmp", str(src / "skipme")])
    site.run("init")
    summary = site.json("backup")[0]["snapshot"]["summary"]
    assert summary["files"] == 4

    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    got = tree_listing(restored(out, src))
    assert sorted(got) == [
        "deep",
        "deep/er",
        "deep/er/keep.tmp.txt",
        "deep/tmp",
        "keep.txt",
        "keepme",
        "keepme/skipme",
    ]
    full = tree_listing(src)
    for name in ("deep/er/keep.tmp.txt", "deep/tmp", "keep.txt", "keepme/skipme"):
        assert got[name] == full[name]


def test_restore_to_a_path_that_is_a_file_is_a_clear_error(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a.txt", b"a\n")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    dest = tmp_path / "not-a-dir"
    dest.write_text("a file, not a directory\n")
    proc = site.run("restore", "latest", "--to", dest, ok=False)  # asserts: no traceback
    assert proc.returncode in (1, 2)
    assert str(dest) in proc.stderr
    assert dest.read_text() == "a file, not a directory\n"


def test_a_source_name_that_is_nowhere_is_a_usage_error(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a.txt", b"a\n")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    proc = site.run("restore", "latest", "--source", "fiels", "--to", tmp_path / "o", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert "no source named 'fiels'" in proc.stderr and "(sources: files)" in proc.stderr
    assert site.json("snapshots", "--source", "fiels") == []  # a filter: none match (contract)
    assert site.json("snapshots", "--source", "files")  # a known source lists as before
