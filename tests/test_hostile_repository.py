"""A hostile repository, storage side or config cannot harm the host that restores from it
(README, "How it keeps data safe": the threat model S, W, R and what each can do).

Every attack is built as the attacker would build it: as a compromised backup host (the
writer key only, no identity) through the project's own modules, or as the storage side
(adding, replacing and deleting objects, knowing only the public recipients). Each is then
shown to fail through the real CLI: nothing written outside the destination, no planted
hook run, no data deleted by prune, memory bounded, the refusal named, and every genuine
snapshot still restoring. The one race (a prune during a backup) is held at a fixed point
by a hook in the backup's storage, never by a sleep.

Sections: restore confinement and bounded reads; what recover and readers trust (site
config, config, keys/recipients, keys/writer.age); prune, `latest`, the RPO and the record
of what a target held.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import blake3
import pyrage
import pytest
import zstandard
from conftest import Site, restored, tree_listing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from robustness_helpers import check_json, objects, packs, write_random

from emberkeep import clock, crypto, keys
from emberkeep import config as ek_config
from emberkeep.engine.backup import backup as engine_backup
from emberkeep.engine.restore import Restorer
from emberkeep.engine.tree import content_digest, decode_listing
from emberkeep.engine.writer import BlobWriter
from emberkeep.errors import EmberkeepError, IntegrityError, WrongIdentity
from emberkeep.repository import layout, sealing
from emberkeep.repository.index import PackRecord, decode_index, encode_index
from emberkeep.repository.keyfiles import read_writer_key
from emberkeep.repository.pack import BlobEntry, PackWriter, blob_aad
from emberkeep.repository.repo import Repository
from emberkeep.repository.snapshot import Snapshot
from emberkeep.runner import maintenance
from emberkeep.runner.backup import run_backup
from emberkeep.runner.recover import plan_recover
from emberkeep.site import Site as ApiSite
from emberkeep.site import Site as RunSite
from emberkeep.sources.files import FilesWalker
from emberkeep.storage import open_storage
from emberkeep.storage.base import Payload, Storage

# ------------------------------------------------------------------------------------------
# Restore confinement and bounded reads
# ------------------------------------------------------------------------------------------

MARKER = b"HOSTILE-REPOSITORY-MARKER"
BOMB = 2 << 30  # what each bomb inflates to
RSS_LIMIT_KIB = 300 * 1024
MTIME = 1_700_000_000 * 10**9


@dataclass
class Attack:
    snapshot: str
    refusals: list[tuple[str, str]]  # (a fragment of the refused path, of the reason)
    check: Callable[[Path], None] = lambda dest: None  # more checks of the destination
    prepare: Callable[[Path], None] = lambda dest: None  # what is at the destination before


@dataclass
class World:
    root: Path
    site: Site
    data: Path  # what the genuine backup read
    sandbox: Path
    outside: Path  # a directory the attacks aim at
    genuine: str
    attacks: dict[str, Attack] = field(default_factory=dict)


# -- forging, as a host holding only the writer key -----------------------------------------


def _node(name: Any, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "mode": 0o644,
        "uid": 0,
        "gid": 0,
        "mtime_ns": MTIME,
        **fields,
    }


class Forger:
    def __init__(self, site: Site, genuine: str) -> None:
        run_site = RunSite(ek_config.load(str(site.config_path)))
        self.repo: Repository = run_site.repository()  # the writer key only
        assert not self.repo.identities
        [self.genuine] = [s for s in self.repo.snapshots() if s.id == genuine]
        self.writer = BlobWriter(self.repo, workers=1)
        self.mac = self.repo.writer_key.mac_key

    def file(self, name: Any, data: bytes, **fields: Any) -> dict[str, Any]:
        ids: list[bytes] = []
        if data:
            self.writer.submit(data, ids)
            self.writer.drain()
        return _node(
            name, "file", size=len(data), content=[i.hex() for i in ids],
            digest=content_digest(ids), **fields,
        )  # fmt: skip

    def tree(self, nodes: list[Any]) -> str:
        """A listing exactly as given (names and fields unchecked, in this order)."""
        return self.writer.store_tree(json.dumps({"nodes": nodes}).encode()).hex()

    def dir(self, name: Any, nodes: list[Any], **fields: Any) -> dict[str, Any]:
        return _node(name, "dir", subtree=self.tree(nodes), **{"mode": 0o755, **fields})

    def snapshot(
        self, nodes: list[Any], minutes: int, source_type: str = "files", seq: int | None = None
    ) -> str:
        """``seq``: where it is in the written order (None: before every one that has it)."""
        genuine = _node("genuine", "dir", mode=0o755, subtree=self.genuine.tree.hex())
        tree = bytes.fromhex(self.tree([genuine, *nodes]))
        self.writer.finish()
        blobs = set(self.genuine.blob_ids()) | self.writer.referenced | {tree}
        forged = Snapshot(
            source="files", source_type=source_type,
            time=self.genuine.time + timedelta(minutes=minutes), host="forged",
            tree=tree, blobs=b"".join(sorted(blobs)), paths=self.genuine.paths,
            summary=dict(self.genuine.summary), seq=seq,
        )  # fmt: skip
        snapshot_id = self.repo.save_snapshot(forged)
        self.writer = BlobWriter(self.repo, workers=1)
        return snapshot_id

    def bombs(self) -> list[dict[str, Any]]:
        """Three data blobs of 64 KiB that inflate to 2 GiB, sealed as a writer can seal
        anything: the index says 2 GiB; the index says 1 MiB and the zstd frame 2 GiB; the
        index says 1 MiB and the frame declares no size."""
        payload_sized, bomb_id = _zstd_bomb(self.mac, with_size=True)
        payload_unsized, _ = _zstd_bomb(None, with_size=False)
        specs = [
            ("bomb-index-says-2GiB", bomb_id, payload_sized, BOMB),
            ("bomb-frame-says-2GiB", os.urandom(32), payload_sized, 1 << 20),
            ("bomb-frame-says-nothing", os.urandom(32), payload_unsized, 1 << 20),
        ]
        pack = PackWriter(layout.BLOB_DATA)
        nodes = []
        for name, blob_id, payload, raw in specs:
            nonce = os.urandom(crypto.NONCE)
            aad = blob_aad(blob_id, layout.BLOB_DATA) + bytes([crypto.ZSTD])
            sealed = (
                bytes([crypto.ZSTD]) + nonce + AESGCM(pack.data_key).encrypt(nonce, payload, aad)
            )
            pack.add(blob_id, layout.BLOB_DATA, sealed, raw)
            nodes.append(_node(
                name, "file", size=raw, content=[blob_id.hex()], digest=content_digest([blob_id])
            ))  # fmt: skip
        name, parts, entries = pack.finish(self.repo.recipients, self.repo.writer_key.index_key)
        self.repo.storage.put(name, parts)
        self.repo.save_index([PackRecord(name, layout.BLOB_DATA, pack.size, tuple(entries))])
        return nodes


def _zstd_bomb(mac: bytes | None, *, with_size: bool) -> tuple[bytes, bytes]:
    """2 GiB of one byte, zstd-compressed (about 64 KiB), and its keyed id (with ``mac``)."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj(size=BOMB if with_size else -1)
    hasher = blake3.blake3(key=mac, max_threads=blake3.blake3.AUTO) if mac else None
    chunk = b"\x07" * (64 << 20)
    parts = []
    for _ in range(BOMB // len(chunk)):
        if hasher is not None:
            hasher.update(chunk)
        parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    return b"".join(parts), hasher.digest() if hasher else b""


# -- the world: one genuine backup, then every attack forged next to it ---------------------


def _genuine_data(data: Path) -> None:
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n" * 10)
    (data / "b.bin").write_bytes(os.urandom(50_000))
    (data / "sub" / "c.txt").write_text("charlie\n")
    (data / "big.bin").write_bytes(os.urandom(3 << 20))  # several chunks
    (data / "link").symlink_to("a.txt")
    os.link(data / "a.txt", data / "sub" / "a-again.txt")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("hostile")
    (root / "site").mkdir()
    site = Site(root / "site")
    data = root / "site" / "data"
    _genuine_data(data)
    sandbox = root / "sandbox"
    outside = sandbox / "outside"
    outside.mkdir(parents=True)
    (outside / "secret").write_text("outside the destination\n")
    (sandbox / "box").mkdir()
    site.write_config(paths=[data])
    site.run("init")
    site.run("backup")
    [genuine] = site.snapshots()
    world = World(root, site, data, sandbox, outside, genuine["id"])
    _forge_all(world, Forger(site, world.genuine))
    return world


def _forge_all(world: World, forge: Forger) -> None:
    mark = MARKER + b"\n"
    a_txt, b_bin = (world.data / "a.txt").read_bytes(), (world.data / "b.bin").read_bytes()
    a_id, b_id = crypto.blob_id(forge.mac, a_txt), crypto.blob_id(forge.mac, b_bin)
    attacks = world.attacks
    minute = iter(range(1, 60))

    attacks["names"] = Attack(
        forge.snapshot(
            [
                forge.file("..", mark),
                forge.file("../../x", mark),
                forge.file("a/b", mark),
                forge.file("", mark),
                forge.file("nul\x00x", mark),
                forge.file(".", mark),
                forge.dir("..", [forge.file("inside-dotdot", mark)], mode=0o777),
                forge.dir("fine", [forge.file("../escape", mark), forge.file("kept", b"ok\n")]),
            ],
            next(minute),
        ),
        [
            ("'..'", "would leave its directory"),  # the file
            ("'..'", "would leave its directory"),  # the directory of mode 0777
            ("'../../x'", "holding '/'"),
            ("'a/b'", "holding '/'"),
            ("<entry", "an empty name"),
            ("nul\\x00x", "NUL byte"),
            ("'.'", "would leave its directory"),
            ("/fine/'../escape'", "holding '/'"),
        ],
        check=lambda dest: _equal(dest / "fine" / "kept", b"ok\n"),
    )

    def symlink_checks(dest: Path) -> None:
        _is_symlink_to(dest / "out", world.outside)
        _equal(dest / "planted" / "through", mark)
        _is_symlink_to(_kept(dest) / "planted", world.outside)

    attacks["symlink-escape"] = Attack(
        forge.snapshot(
            [
                # a directory, then a symlink of the same name: a file queued into the
                # directory must not land where the symlink points
                forge.dir("twice", [forge.file("through", mark)]),
                _node("twice", "symlink", target=str(world.outside)),
                forge.dir(
                    "d",
                    [
                        _node("l", "symlink", target=str(world.outside)),
                        forge.dir("l", [forge.file("through", mark)]),
                    ],
                ),
                _node("out", "symlink", target=str(world.outside)),  # kept: it is a symlink
                forge.dir("planted", [forge.file("through", mark)]),  # a symlink is there
            ],
            next(minute),
        ),
        [("/twice", "appears 2 times")] * 2 + [("/d/l", "appears 2 times")] * 2,
        prepare=lambda dest: (dest / "planted").symlink_to(world.outside),
        check=symlink_checks,
    )

    secret = world.outside / "secret"

    def hardlink_checks(dest: Path) -> None:
        _not_linked_to(dest / "h-to-symlink", secret)
        _is_symlink_to(dest / "s", secret)

    attacks["hardlink-escape"] = Attack(
        forge.snapshot(
            [
                forge.file("h-outside", b"", hardlink=f"/../..{secret}"),
                forge.file("h-dotdot", b"", hardlink="/genuine/../../x"),
                _node("s", "symlink", target=str(secret)),
                forge.file("h-to-symlink", mark, hardlink="/s"),  # /s is no file restored
            ],
            next(minute),
        ),
        [("/h-outside", "not a path within the snapshot"), ("/h-dotdot", "not a path within")],
        check=hardlink_checks,
    )

    attacks["bomb"] = Attack(
        forge.snapshot(forge.bombs(), next(minute)),
        [
            ("/bomb-index-says-2GiB", "more than a data blob may hold"),
            ("/bomb-frame-says-2GiB", "inflates to 2147483648 bytes"),
            ("/bomb-frame-says-nothing", "does not inflate within 1048576 bytes"),
        ],
    )

    swapped = forge.file("swapped", b_bin)
    swapped["digest"] = content_digest([a_id])  # the node is a.txt's, its content b.bin's
    resized = forge.file("resized", b_bin)
    resized["size"] = len(a_txt)  # as a swapped files cache gives: b.bin's ids, a.txt's size

    def digest_checks(dest: Path) -> None:
        _equal(dest / "fine", b"fine\n")
        _absent(dest / "swapped")
        _absent(dest / "resized")

    attacks["digest"] = Attack(
        forge.snapshot([swapped, resized, forge.file("fine", b"fine\n")], next(minute)),
        [
            ("/swapped", "recorded at backup time"),
            ("/resized", f"holds {len(b_bin)} bytes, the snapshot says {len(a_txt)}"),
        ],
        check=digest_checks,
    )
    assert b_id != a_id

    fine = forge.file("fine", b"fine\n")
    broken = {k: v for k, v in fine.items() if k != "mode"}
    attacks["malformed"] = Attack(
        forge.snapshot(
            [
                {**broken, "name": "no-mode"},
                _node("fifo", "fifo"),
                {**fine, "name": "text-mtime", "mtime_ns": "1700000000"},
                {**fine, "name": "text-size", "size": "5"},
                {**fine, "name": "negative-uid", "uid": -1},
                {**fine, "name": "content-not-a-list", "content": fine["content"][0]},
                {**fine, "name": "bool-mode", "mode": True},
                _node("dir-without-subtree", "dir"),
                _node("link-without-target", "symlink"),
                _node("dir-of-lost-tree", "dir", subtree="ab" * 32),
                _node("dir-of-data", "dir", subtree=b_id.hex()),  # a data blob as a listing
                "not an object",
                {**fine, "name": 7},
                fine,
            ],
            next(minute),
        ),
        [
            ("/no-mode", "missing required field `mode`"),
            ("/fifo", "unknown type 'fifo'"),
            ("/text-mtime", "Expected `int`, got `str` - at `$.mtime_ns`"),
            ("/text-size", "Expected `int`, got `str` - at `$.size`"),
            ("/negative-uid", "$.uid"),
            ("/content-not-a-list", "$.content"),
            ("/bool-mode", "got `bool`"),
            ("/dir-without-subtree", "missing required field `subtree`"),
            ("/link-without-target", "missing required field `target`"),
            ("/dir-of-lost-tree", "not in the index"),
            ("/dir-of-data", "a data blob where a tree blob belongs"),
            ("<entry", "not an object but str"),
            ("<entry", "Expected `str`, got `int` - at `$.name`"),
        ],
        check=lambda dest: _equal(dest / "fine", b"fine\n"),
    )


# -- checks ---------------------------------------------------------------------------------


def _equal(path: Path, data: bytes) -> None:
    assert path.read_bytes() == data, path


def _absent(path: Path) -> None:
    assert not os.path.lexists(path), f"{path} was written"


def _is_symlink_to(path: Path, target: Path) -> None:
    assert path.is_symlink() and os.readlink(path) == str(target), path


def _not_linked_to(path: Path, other: Path) -> None:
    assert path.lstat().st_ino != other.stat().st_ino and other.stat().st_nlink == 1


def _kept(dest: Path) -> Path:
    [kept] = dest.glob(".emberkeep-replaced-*")
    return kept


def _listing(root: Path, skip: set[Path]) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` (``root`` included) but those in ``skip``: type, mode,
    owner, mtime, size and content, without following a symlink."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for path in [here] + [here / n for n in dirnames + filenames]:
            if path in skip or (path == here and here != root):
                continue
            st = path.lstat()
            detail: Any = None
            if stat.S_ISREG(st.st_mode):
                detail = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            found[str(path)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                st.st_nlink,
                detail,
            )
    return found


def _marked(world: World, *also: Path) -> list[Path]:
    """Files of the tmp tree that hold the attacks' marker, but in the restore destinations
    (``box/to-*``, where forged files belong) and ``also``."""
    skip = set(world.sandbox.glob("box/to-*")) | set(also)
    hits = []
    for dirpath, dirnames, filenames in os.walk(world.root):
        dirnames[:] = [d for d in dirnames if Path(dirpath) / d not in skip]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and MARKER in path.read_bytes():
                hits.append(path)
    return hits


# The child reports its own high-water mark: wait4's ru_maxrss is no good here, because
# Linux carries the forking parent's resident size over fork and exec into it (the pytest
# process of a whole suite is itself over 300 MiB), while /proc's VmHWM is the peak of the
# new program's own memory.
_PEAK_REPORTER = """
import atexit, runpy, sys
def report(path):
    with open("/proc/self/status") as status, open(path, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(report, sys.argv.pop(1))
runpy.run_module("emberkeep", run_name="__main__", alter_sys=True)
"""


def _run_measured(site: Site, *args: str | os.PathLike[str]) -> tuple[int, str, str, int]:
    """The CLI as a subprocess; returns (exit status, stdout, stderr, its peak RSS in KiB),
    the RSS being that process's own VmHWM, read by it as it exits."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak"
        cmd = [sys.executable, "-c", _PEAK_REPORTER, str(peak_file), "-c", str(site.config_path)]
        proc = subprocess.run(
            [*cmd, *map(str, args)],
            capture_output=True,
            text=True,
            env={**os.environ, **site.env},
            timeout=600,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        peak_kib = int(peak_file.read_text())
    return proc.returncode, proc.stdout, proc.stderr, peak_kib


def _assert_refusals(refused: list[dict[str, str]], expected: list[tuple[str, str]]) -> None:
    for path_part, reason_part in expected:
        assert any(path_part in r["path"] and reason_part in r["reason"] for r in refused), (
            f"no refusal of {path_part!r} for {reason_part!r} in {json.dumps(refused, indent=1)}"
        )


def _assert_genuine(world: World, restored: Path) -> None:
    """Every genuine entry byte for byte, with its metadata. Hardlinks come back as separate
    files here: their nodes name the genuine paths, which this snapshot holds elsewhere."""

    def unlinked(root: Path) -> dict[str, tuple[Any, ...]]:
        listing = tree_listing(root)
        return {
            k: (*v[:5], v[5][0] if isinstance(v[5], tuple) else v[5]) for k, v in listing.items()
        }

    copy = restored / "genuine" / str(world.data).lstrip("/")
    assert unlinked(copy) == unlinked(world.data)


ATTACKS = ["names", "symlink-escape", "hardlink-escape", "bomb", "digest", "malformed"]


@pytest.mark.parametrize("name", ATTACKS)
def test_restore_of_a_forged_snapshot_is_confined_and_names_each_refusal(
    world: World, name: str
) -> None:
    attack = world.attacks[name]
    dest = world.sandbox / "box" / f"to-{name}"
    dest.mkdir()
    attack.prepare(dest)
    state = world.site.state_dir
    before = _listing(world.root, {dest, state})

    code, stdout, stderr, rss = _run_measured(
        world.site, "restore", attack.snapshot, "--to", dest, "--json"
    )
    assert code == 1, (stdout, stderr)
    result = json.loads(stdout)
    _assert_refusals(result["refused"], attack.refusals)
    assert len(result["refused"]) == len(attack.refusals), result["refused"]
    print(f"peak RSS of the CLI: {rss // 1024} MiB")
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss // 1024} MiB"
    assert _listing(world.root, {dest, state}) == before, "something outside --to changed"
    assert _marked(world) == []
    _assert_genuine(world, dest)
    attack.check(dest)

    # the same refusals, one line each, in the text a user reads
    text = world.site.run("restore", attack.snapshot, "--to", dest, ok=False)
    assert text.returncode == 1
    for path_part, reason_part in attack.refusals:
        assert any(path_part in ln and reason_part in ln for ln in text.stderr.splitlines()), (
            path_part, text.stderr,
        )  # fmt: skip


@pytest.mark.parametrize("name", ATTACKS)
def test_drill_of_a_forged_snapshot_fails_naming_each_refusal(world: World, name: str) -> None:
    attack = world.attacks[name]
    before = _listing(world.root, {world.site.state_dir})
    code, stdout, stderr, rss = _run_measured(
        world.site, "drill", "files", "--snapshot", attack.snapshot, "--json"
    )
    assert code == 1, (stdout, stderr)
    [result] = json.loads(stdout)
    assert result["outcome"] == "failed" and result["error"]
    [refused] = [c["refused"] for c in result["checked"] if "refused" in c]
    _assert_refusals(refused, attack.refusals)
    print(f"peak RSS of the CLI: {rss // 1024} MiB")
    assert rss < RSS_LIMIT_KIB, f"peak RSS {rss // 1024} MiB"
    assert _listing(world.root, {world.site.state_dir}) == before
    assert _marked(world) == []  # in the state dir (the drill's scratch) neither
    assert not any((world.site.state_dir / "drill").iterdir())


def test_the_genuine_snapshot_still_restores_and_drills(world: World) -> None:
    dest = world.sandbox / "box" / "to-genuine"
    result = json.loads(world.site.run("restore", world.genuine, "--to", dest, "--json").stdout)
    assert result["refused"] == [] and result["setid"] == []
    assert tree_listing(dest / str(world.data).lstrip("/")) == tree_listing(world.data)
    world.site.run("drill", "files", "--snapshot", world.genuine)


def test_a_setuid_root_file_is_listed_and_kept_only_with_its_owner(
    world: World, tmp_path: Path
) -> None:
    """As root (the tests run as root) the owner is restored, so the bit is kept, and the
    file is listed; a restore that cannot restore the owner drops the bit (and lists it)."""
    forge = Forger(world.site, world.genuine)
    shell = b"#!/bin/sh\necho hello\n"
    snapshot = forge.snapshot([forge.file("suid", shell, mode=0o4755)], 59)
    dest = tmp_path / "as-root"
    proc = world.site.run("restore", snapshot, "--to", dest)
    assert "suid: setuid/setgid file (mode 4755, owner 0:0): the bit is kept" in proc.stderr
    assert stat.S_IMODE((dest / "suid").stat().st_mode) == 0o4755
    result = json.loads(world.site.run("restore", snapshot, "--to", dest, "--json").stdout)
    assert result["setid"] == [{"path": "/suid", "mode": "4755", "owner": "0:0", "kept": True}]

    repo = RunSite(ek_config.load(str(world.site.config_path))).repository(read=True)
    restorer = Restorer(repo, tmp_path / "not-root")
    restorer.as_root = False  # as a user who cannot give the file to root
    [chosen] = [s for s in repo.snapshots() if s.id == snapshot]
    dropped = restorer.restore(chosen)
    assert dropped.setid == [{"path": "/suid", "mode": "4755", "owner": "0:0", "kept": False}]
    assert stat.S_IMODE((tmp_path / "not-root" / "suid").stat().st_mode) == 0o755


def test_export_of_a_forged_snapshot_as_tar_leaves_the_bad_entries_out(
    world: World, tmp_path: Path
) -> None:
    """A tar is extracted by other tools: a member named ``../x`` would be an attack on them."""
    import tarfile

    for name in ("names", "digest"):
        attack = world.attacks[name]
        out = tmp_path / f"{name}.tar"
        proc = world.site.run(
            "export", attack.snapshot, "--format", "tar", "--to", out, "--json", ok=False
        )
        assert proc.returncode == 1
        _assert_refusals(json.loads(proc.stdout)["refused"], attack.refusals)
        with tarfile.open(out) as tar:
            members = tar.getnames()
            for member in members:
                assert ".." not in member.split("/") and "\x00" not in member, member
            assert "genuine/" + str(world.data / "b.bin").lstrip("/") in members
            assert "fine" in members
            tar.extractall(tmp_path / f"{name}-extracted", filter="data")  # what a user does
        assert _marked(world) == []


def test_restore_refuses_an_entry_whose_path_became_a_symlink_in_place(
    world: World, tmp_path: Path
) -> None:
    """Restoring over a tree in use, a directory of the destination replaced by a symlink
    to elsewhere is moved aside (kept), never written through."""
    dest = tmp_path / "in-use"
    world.site.run("restore", world.genuine, "--to", dest)
    sub = dest / str(world.data / "sub").lstrip("/")
    elsewhere = tmp_path / "elsewhere"
    sub.rename(elsewhere)
    sub.symlink_to(elsewhere)
    (elsewhere / "c.txt").write_text("edited where the symlink leads\n")
    result = json.loads(world.site.run("restore", world.genuine, "--to", dest, "--json").stdout)
    assert result["replaced"] == 1 and result["refused"] == []
    assert (elsewhere / "c.txt").read_text() == "edited where the symlink leads\n"
    assert not sub.is_symlink() and (sub / "c.txt").read_text() == "charlie\n"
    assert tree_listing(dest / str(world.data).lstrip("/")) == tree_listing(world.data)


# -- in-process: the one validating function, bounded inflation, bounded index -------------


def test_every_tree_entry_is_validated_in_one_place() -> None:
    ok = _node("ok", "file", size=0, content=[])
    nodes = [
        ok, _node("..", "dir", subtree="0" * 64), _node("a/b", "file", size=0, content=[]),
        {**ok, "name": "x\x00"}, {**ok, "name": ""}, {**ok, "name": "x" * 256},
        {**ok, "name": "dup"}, {**ok, "name": "dup"}, {**ok, "name": "s", "mtime_ns": "1"},
        {**ok, "name": "hl", "hardlink": "/a/../../b"}, _node("l", "symlink", target=""),
        {**ok, "name": "bad\udcffname-is-fine"},
    ]  # fmt: skip
    listing = decode_listing(json.dumps({"nodes": nodes}).encode())
    assert [n["name"] for n in listing.nodes] == ["ok", "bad\udcffname-is-fine"]
    assert len(listing.bad) == len(nodes) - 2
    reasons = " | ".join(b.reason for b in listing.bad)
    for expected in (
        "would leave",
        "holding '/'",
        "NUL byte",
        "empty name",
        "256 bytes",
        "appears 2 times",
        "$.mtime_ns",
        "not a path within",
        "symlink target",
    ):
        assert expected in reasons, expected


def test_inflation_is_bounded_before_anything_is_allocated() -> None:
    sized = zstandard.ZstdCompressor().compress(b"\0" * (8 << 20))
    assert len(crypto.inflate(sized, 8 << 20)) == 8 << 20
    with pytest.raises(crypto.TooLarge, match="inflates to 8388608 bytes"):
        crypto.inflate(sized, 1 << 20)
    unsized = zstandard.ZstdCompressor().compressobj()
    stream = unsized.compress(b"\0" * (8 << 20)) + unsized.flush()
    with pytest.raises(crypto.TooLarge, match="does not inflate within"):
        crypto.inflate(stream, 1 << 20)
    with pytest.raises(crypto.TooLarge, match="not a zstd frame"):
        crypto.inflate(b"garbage!", 1 << 20)


def test_a_forged_index_file_is_damage_never_a_crash(world: World) -> None:
    from emberkeep.errors import IntegrityError

    key = Forger(world.site, world.genuine).repo.writer_key.index_key

    def sealed(plain: bytes) -> tuple[str, bytes]:
        import hashlib

        data = crypto.encrypt(key, b"emberkeep index", zstandard.ZstdCompressor().compress(plain))
        return f"index/{hashlib.sha256(data).hexdigest()}", data

    for plain, why in [
        (b"\0" * (64 << 20), "inflates to"),  # a bomb: 64 MiB from a few KiB
        (b"\1" * 20, "ends inside a pack record"),
        (
            b"\0" * 32 + b"\0" + (1).to_bytes(8, "little") + (9999).to_bytes(4, "little"),
            "malformed",
        ),
    ]:
        name, data = sealed(plain)
        with pytest.raises(IntegrityError, match=why):
            list(decode_index(name, data, key))


def test_directories_emberkeep_makes_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    (tmp_path / "site").mkdir()
    data = tmp_path / "data"
    (data / "d").mkdir(parents=True)
    (data / "d" / "f").write_text("f\n")
    (data / "d").chmod(0o755)
    old = os.umask(0)
    try:
        site.write_config(
            paths=[data], targets=f'[[targets]]\nname = "local"\nurl = "file://{tmp_path}/new/repo"'
        )
        site.run("init")
        site.run("backup")
        site.run("restore", "latest", "--to", tmp_path / "made" / "for" / "restore")
        site.run("export", "latest", "--format", "tar", "--to", tmp_path / "made2" / "x.tar")
    finally:
        os.umask(old)
    made = [
        tmp_path / "new",
        tmp_path / "new" / "repo",
        tmp_path / "made",
        tmp_path / "made2",
        tmp_path / "made" / "for",
        tmp_path / "made" / "for" / "restore",
        site.state_dir,
    ]
    made += [p for p in (tmp_path / "new" / "repo").rglob("*") if p.is_dir()]
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, (path, oct(path.stat().st_mode))
    restored = tmp_path / "made" / "for" / "restore" / str(data / "d").lstrip("/")
    assert stat.S_IMODE(restored.stat().st_mode) == 0o755  # the snapshot's own mode


def test_a_forged_git_record_never_reaches_gits_command_line(world: World, tmp_path: Path) -> None:
    """HEAD and the refs of a git snapshot become arguments of git at restore: an option in
    their place (``--upload-pack=…``) is refused before git runs."""
    forge = Forger(world.site, world.genuine)
    pwned = tmp_path / "PWNED"
    record = {
        "format": 1, "path": "/srv/app",
        "head": {"symref": f"--upload-pack=touch {pwned}", "commit": None},
        "refs": [["0" * 40, "refs/heads/main"]],
    }  # fmt: skip
    nodes = [forge.file("HEAD.json", json.dumps(record).encode()), forge.file("repo.bundle", b"x")]
    snapshot = forge.snapshot(nodes, 58, source_type="git")
    proc = world.site.run("restore", snapshot, "--to", tmp_path / "code", ok=False)
    assert proc.returncode == 1
    assert "HEAD.json: a git snapshot record with a malformed ref or HEAD" in proc.stderr
    assert not pwned.exists() and not (tmp_path / "code").exists()


def test_a_restore_that_others_run_fails_when_an_entry_is_refused(
    world: World, tmp_path: Path
) -> None:
    """A caller that does not ask for them (``partial``: the CLI's restore and recover,
    which list them) gets the refusals as an error, after the rest is restored: never a
    success over missing entries."""
    from emberkeep.engine.restore import RestoreIncomplete
    from emberkeep.runner.restore import run_restore

    run_site = RunSite(ek_config.load(str(world.site.config_path)))
    dest = tmp_path / "out"
    with pytest.raises(RestoreIncomplete, match="2 entries not restored: /swapped: content digest"):
        run_restore(run_site, world.attacks["digest"].snapshot, dest, paths=[])
    assert (dest / "fine").read_bytes() == b"fine\n"


def test_a_backup_never_stores_a_listing_larger_than_a_restore_takes(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emberkeep.engine.backup import backup
    from emberkeep.errors import EmberkeepError
    from emberkeep.sources.files import FilesWalker

    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for n in range(40):
        (crowded / f"file-{n:03}").write_text("x")
    monkeypatch.setattr(layout, "TREE_MAX", 4096)  # 40 entries take more
    repo = Forger(world.site, world.genuine).repo
    before = {s.id for s in repo.snapshots()}
    walker = FilesWalker([crowded], [])
    with pytest.raises(EmberkeepError, match=f"directory {crowded}: its listing of 40 entries"):
        backup(repo, walker.walk(), source="files", source_type="files",
               paths=walker.roots, now=repo.snapshots()[0].time)  # fmt: skip
    assert {s.id for s in repo.snapshots()} == before


# ------------------------------------------------------------------------------------------
# What recover and readers trust: the site config, config, keys/recipients, keys/writer.age
# ------------------------------------------------------------------------------------------


def cli(site: Site, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """The CLI with stdin not a terminal (whatever runs the tests): nobody is asked."""
    proc = subprocess.run(
        [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **site.env},
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def recover(site: Site, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    url = f"file://{site.repo}"
    return cli(site, "recover", "--from", url, "--identity", site.identities[0], *args)


def backed_up(site: Site, tmp_path: Path, *, source_extra: str = "") -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("the shop's settings\n")
    (src / "b.bin").write_bytes(os.urandom(50_000))
    site.write_config([src], source_extra=source_extra)
    site.run("init")
    site.run("backup")
    return src


def destroy(site: Site, src: Path) -> None:
    """The host is gone: its files, config and state dir."""
    shutil.rmtree(src)
    site.config_path.unlink()
    shutil.rmtree(site.state_dir)


def plant_site_config(
    site: Site, toml: str, name: str, *, seal: str | None = None, time: str = "2099-01-01T00:00:00Z"
) -> str:
    """What anyone who knows a recipient can put under siteconfig/: a config encrypted to
    it, dated after every real one."""
    payload: dict[str, object] = {
        "format": 2, "path": str(site.config_path), "time": time, "toml": toml,
    }  # fmt: skip
    if seal is not None:
        payload["seal"] = seal
    recipient = pyrage.x25519.Recipient.from_str(site.recipients[0])
    obj = f"{layout.SITE_CONFIG}/{name}"
    (site.repo / obj).write_bytes(pyrage.encrypt(json.dumps(payload).encode(), [recipient]))
    return obj


def with_hook(toml: str, hook: str) -> str:
    changed = toml.replace("exclude = []", f"exclude = []\nhooks = {{ before_restore = {hook!r} }}")
    assert changed != toml
    return changed


def test_a_planted_site_config_is_refused_by_name_and_its_hook_never_runs(
    site: Site, tmp_path: Path
) -> None:
    src = backed_up(site, tmp_path)
    before = tree_listing(src)
    genuine = site.config_path.read_text()
    marker = tmp_path / "PWNED"
    evil = with_hook(genuine, f"id > {marker}; env >> {marker}")
    planted = plant_site_config(site, evil, "planted")
    forged = plant_site_config(site, evil, "forged-seal", seal="0" * 64)
    destroy(site, src)

    plan = recover(site, "--dry-run")
    shown = plan.stdout + plan.stderr
    assert plan.returncode == 1, shown  # the repository holds forged objects: a failure
    assert f"refused: {planted}: not sealed" in shown, shown
    assert f"refused: {forged}: its seal does not verify" in shown, shown
    assert "hooks: none" in plan.stdout  # the genuine config, shown: it has no hook
    assert not site.config_path.exists() and not marker.exists()

    done = recover(site, "--yes")  # even with every hook approved
    assert done.returncode == 1, done.stderr
    assert planted in done.stderr and "refused" in done.stderr
    assert not marker.exists()
    assert site.config_path.read_text() == genuine
    assert tree_listing(src) == before


def test_recover_over_a_forged_snapshot_fails_naming_each_refused_entry(
    site: Site, tmp_path: Path
) -> None:
    """A restore's refusals are the recovery's failure, by source, in the text and the
    JSON; the rest is restored, and only the incomplete source is done again."""
    src = backed_up(site, tmp_path)
    [genuine] = site.snapshots()
    forge = Forger(site, genuine["id"])
    swapped = forge.file("swapped", b"the content of another file\n")
    swapped["digest"] = content_digest([crypto.blob_id(forge.mac, b"what it claims\n")])
    forge.snapshot([swapped, forge.file("fine", b"fine\n")], 1, seq=(genuine["seq"] or 0) + 1)
    destroy(site, src)
    root = tmp_path / "recovered"

    proc = recover(site, "--yes", "--root", root, "--json")
    assert proc.returncode == 1, proc.stdout
    [step] = json.loads(proc.stdout)["steps"]
    assert step["status"] == "incomplete", step
    [problem] = step["problems"]
    assert problem["path"] == "/swapped" and "not restored" in problem["message"], problem
    assert (root / "fine").read_bytes() == b"fine\n" and not (root / "swapped").exists()
    report = (site.state_dir / "recover-report.md").read_text()
    assert "## files: not restored as it was" in report and "`/swapped`" in report

    again = recover(site, "--yes", "--root", root)  # not recorded as done: tried again
    assert again.returncode == 1
    assert "files (files) -> " in again.stdout and "INCOMPLETE" in again.stdout, again.stdout
    assert "files: /swapped: not restored" in again.stderr, again.stderr
    assert "the recovery is NOT complete: the restore of files" in again.stderr
    assert "recovered 0 of 1 sources" in again.stdout


def test_restore_hooks_run_only_when_approved(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    src = backed_up(site, tmp_path)
    genuine = with_hook(site.config_path.read_text(), f"echo ran >> {marker}")
    site.config_path.write_text(genuine)  # the site adds a hook; the next backup stores it
    site.env["EMBERKEEP_NOW"] = "2099-01-01T00:00:00Z"  # stored after the first, surely
    site.run("backup")
    del site.env["EMBERKEEP_NOW"]
    before = tree_listing(src)
    destroy(site, src)

    asked = recover(site)  # not on a terminal, no --yes: nothing is done
    assert asked.returncode == 2, asked.stderr
    assert "--yes" in asked.stderr and "--no-hooks" in asked.stderr
    assert f"hook files.before_restore: echo ran >> {marker}" in asked.stdout
    assert "hook files.before_restore added" in asked.stdout  # since the config before it
    assert not marker.exists() and not site.config_path.exists() and not src.exists()

    plan = json.loads(recover(site, "--dry-run", "--json").stdout)
    assert plan["restore_hooks"] == {"files.before_restore": f"echo ran >> {marker}"}
    assert plan["hooks_run"] is False and not marker.exists()

    recover(site, "--yes").check_returncode()
    assert marker.read_text() == "ran\n"
    assert tree_listing(src) == before

    marker.unlink()
    destroy(site, src)
    without = recover(site, "--no-hooks", "--json")
    assert without.returncode == 0, without.stderr
    assert json.loads(without.stdout)["hooks_run"] is False
    assert not marker.exists()
    assert tree_listing(src) == before
    assert site.config_path.read_text() == genuine  # the site's config, hooks and all


def test_a_fabricated_repository_is_caught_by_its_id(site: Site, tmp_path: Path) -> None:
    """Someone who can write to the target makes a whole repository of their own (a new
    writer key, encrypted to the public recipient): everything in it verifies, except the
    id the site's runbook gave."""
    backed_up(site, tmp_path)
    genuine_id = keys.WriterKey.load(site.state_dir / "writer.key").repo_id
    runbook = site.run("runbook").stdout
    assert f"--expect-repository {genuine_id}" in runbook

    impostor = Site(tmp_path / "impostor", recipients=list(site.recipients))
    impostor.identities.append(site.identities[0])
    impostor.root.mkdir()
    backed_up(impostor, impostor.root)
    url = f"file://{impostor.repo}"
    args: list[str | Path] = ["recover", "--from", url, "--identity", site.identities[0]]
    args.append("--dry-run")
    trusting = cli(site, *args)
    assert trusting.returncode == 0  # it decrypts, it verifies: only the id differs
    assert genuine_id not in trusting.stdout
    refused = cli(site, *args, "--expect-repository", genuine_id)
    assert refused.returncode == 1
    assert f"not the expected {genuine_id}" in refused.stderr


def test_a_recipients_record_replaced_by_the_storage_side_is_refused_and_reported(
    site: Site, tmp_path: Path
) -> None:
    backed_up(site, tmp_path)
    record = site.repo / layout.RECIPIENTS
    original = record.read_bytes()
    _, attacker = site.keygen("attacker.txt")
    for forgery in (
        sealing.seal_secret(keys.WriterKey.generate(), "recipients", {"recipients": [attacker]}),
        sealing.seal(keys.WriterKey.generate(), "recipients", {"recipients": [attacker]}),
        b'{"format": 2, "recipients": ["' + attacker.encode() + b'"]}',
    ):
        record.write_bytes(forgery)
        snapshots = len(site.snapshots())
        backup = cli(site, "backup")
        assert backup.returncode == 1 and "keys/recipients" in backup.stderr, backup.stderr
        assert len(site.snapshots()) == snapshots
        check = cli(site, "check", "--json")
        assert check.returncode == 1
        errors = json.loads(check.stdout)["local"]["errors"]
        assert [e["object"] for e in errors] == [layout.RECIPIENTS], errors
    record.write_bytes(original)
    site.run("backup")


# -- bit flips: check reports every one, a backup host repairs what it can ---------------


def _flip(path: Path, rng: random.Random) -> int:
    data = bytearray(path.read_bytes())
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    return bit


@pytest.mark.parametrize("host", ["write-only", "with-identity", "new-host"])
def test_every_bit_flip_in_the_key_objects_is_reported_by_check(
    site: Site, tmp_path: Path, host: str
) -> None:
    """20 random bit flips in each object, each checked as a write-only backup host does
    (structural), as a host with an identity does (``--read-data``), and as a new host
    does that has only the identity (its writer key comes from the damaged copy)."""
    reader = host != "write-only"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    site.write_config([src], identity=True if reader else None)
    site.run("init")
    site.run("backup")
    api = ApiSite(ek_config.load(str(site.config_path)))
    pristine = {name: (site.repo / name).read_bytes() for name in _KEY_OBJECTS}
    rng = random.Random(f"flips-{host}")
    for name in _KEY_OBJECTS:
        for trial in range(20):
            for other, data in pristine.items():
                (site.repo / other).write_bytes(data)
            if host == "new-host":
                (site.state_dir / "writer.key").unlink(missing_ok=True)
            bit = _flip(site.repo / name, rng)
            try:
                result = maintenance.run_check(api, "local", read_data=reader, subset=None)
            except EmberkeepError as exc:  # the one object a new host cannot do without
                assert host == "new-host" and name == layout.WRITER_KEY, (name, bit, exc)
                assert f"{layout.WRITER_KEY}: damaged" in str(exc), (bit, exc)
                continue
            named = [e for e in result.errors if e["object"] == name]
            assert named and not result.ok, (name, trial, bit, result.errors)
            assert all(e["object"] == name for e in result.errors), (name, bit, result.errors)
            assert result.packs_read == (result.packs if reader else 0)
            if host == "new-host":
                continue
            again = maintenance.run_check(api, "local", read_data=False, subset=None)
            if name == layout.RECIPIENTS:  # never written over: it guards the recipient set
                assert [e["object"] for e in again.errors] == [name]
            else:  # the host holds the writer key: the check wrote it again
                assert again.ok, (name, bit, again.errors)


_KEY_OBJECTS = (layout.WRITER_KEY, layout.RECIPIENTS, layout.CONFIG)


def test_a_backup_host_writes_a_damaged_writer_key_copy_again(site: Site, tmp_path: Path) -> None:
    src = backed_up(site, tmp_path)
    copy = site.repo / layout.WRITER_KEY
    _flip(copy, random.Random(3))
    out = site.json("backup")[0]
    said = [w for w in out["warnings"] if w["path"].endswith(layout.WRITER_KEY)]
    assert said and "written again" in said[0]["message"], out["warnings"]
    assert site.json("check", "--read-data")["local"]["ok"] is True
    destroy(site, src)
    recover(site).check_returncode()  # a new host rebuilds the writer key from the copy
    assert (src / "a.txt").read_text() == "the shop's settings\n"


def test_recover_tells_a_damaged_writer_key_copy_from_a_wrong_identity(
    site: Site, tmp_path: Path
) -> None:
    backed_up(site, tmp_path)
    url = f"file://{site.repo}"
    identities = keys.load_identities(site.identities[0])
    storage = open_storage(url, name="local")
    copy = site.repo / layout.WRITER_KEY
    original = copy.read_bytes()
    flips = [_flipped(original, at) for at in (0, len(original) // 2, len(original) - 1)]
    for damaged in [*flips, _wrong_stanza(original, identities)]:
        copy.write_bytes(damaged)
        with pytest.raises(IntegrityError) as caught:
            read_writer_key(storage, identities)
        assert f"{layout.WRITER_KEY}: damaged" in str(caught.value), caught.value
    proc = recover(site, "--dry-run")
    assert proc.returncode == 1 and f"{layout.WRITER_KEY}: damaged" in proc.stderr, proc.stderr
    assert "not one of the recipients" not in proc.stderr

    copy.write_bytes(original)
    stranger, _ = site.keygen("stranger.txt")
    with pytest.raises(WrongIdentity):
        plan_recover(url, stranger, dry_run=True)
    proc = cli(site, "recover", "--from", url, "--identity", stranger, "--dry-run")
    assert proc.returncode == 1 and "not one of the recipients" in proc.stderr
    assert f"{layout.WRITER_KEY}: damaged" not in proc.stderr


def _flipped(data: bytes, position: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 0x04
    return bytes(damaged)


def _wrong_stanza(data: bytes, identities: list[pyrage.x25519.Identity]) -> bytes:
    """The copy with one character of its recipient stanza's wrapped file key changed for
    another valid one: age then finds no stanza it can open, exactly as for an identity
    that is not a recipient; only the site config beside it tells the two apart."""
    start = data.index(b"-> X25519 ")
    body = data.index(b"\n", start) + 1 + 10
    swapped = b"B" if data[body : body + 1] != b"B" else b"C"
    damaged = data[:body] + swapped + data[body + 1 :]
    with pytest.raises(pyrage.DecryptError, match=keys.NO_MATCHING_KEY):
        pyrage.decrypt(damaged, identities)
    return damaged


def test_a_damaged_host_writer_key_says_how_it_is_rebuilt(site: Site, tmp_path: Path) -> None:
    backed_up(site, tmp_path)
    path = site.state_dir / "writer.key"
    original = path.read_bytes()
    raw = json.loads(original)
    raw["index_key"] = (
        raw["index_key"][:5] + ("A" if raw["index_key"][5] != "A" else "B") + (raw["index_key"][6:])
    )  # still a key, no longer this one: its fingerprint tells
    for damaged in (b"{not json", json.dumps(raw).encode()):
        path.write_bytes(damaged)
        proc = cli(site, "snapshots")
        assert proc.returncode == 2, proc.stderr
        assert f"delete {path}" in proc.stderr and "identity" in proc.stderr
    path.unlink()
    assert len(site.snapshots()) == 1  # rebuilt from keys/writer.age with the identity
    assert path.read_bytes() == original


# -- repositories from before sealing ---------------------------------------------------


def _as_before_sealing(site: Site) -> None:
    """Rewrite config, keys/recipients and the site config as the format before sealing
    wrote them (no seal, no recorded digest, the site config's payload unsealed)."""
    from emberkeep import crypto

    writer_key = keys.WriterKey.load(site.state_dir / "writer.key")
    config = json.loads((site.repo / layout.CONFIG).read_text())
    del config["seal"]
    (site.repo / layout.CONFIG).write_text(json.dumps(config, indent=1))
    plain = json.dumps({"format": 1, "recipients": sorted(site.recipients)}).encode()
    sealed = crypto.encrypt(writer_key.index_key, b"emberkeep recipients v1", plain)
    (site.repo / layout.RECIPIENTS).write_bytes(sealed)
    identities = keys.load_identities(site.identities[0])
    recipients = keys.parse_recipients(site.recipients)
    for path in (site.repo / layout.SITE_CONFIG).iterdir():
        payload = json.loads(pyrage.decrypt(path.read_bytes(), identities))
        payload = {k: v for k, v in payload.items() if k != "seal"} | {"format": 1}
        path.unlink()
        old = site.repo / layout.SITE_CONFIG / f"old{path.name[:8]}"
        old.write_bytes(keys.wrap(json.dumps(payload).encode(), recipients))


def test_a_repository_from_before_sealing_is_read_then_sealed_by_the_next_backup(
    site: Site, tmp_path: Path
) -> None:
    src = backed_up(site, tmp_path)
    _as_before_sealing(site)
    check = site.json("check")["local"]
    assert check["ok"] is True, check["errors"]
    assert {n["object"] for n in check["notes"]} >= {layout.CONFIG, layout.WRITER_KEY}

    saved = site.config_path.read_text()
    state = tmp_path / "state-aside"
    shutil.copytree(site.state_dir, state)
    destroy(site, src)
    refused = recover(site)
    assert refused.returncode == 1 and "--allow-unverified" in refused.stderr
    plan = recover(site, "--dry-run")
    assert plan.returncode == 0 and "UNVERIFIED" in plan.stdout
    assert not site.config_path.exists()

    site.config_path.write_text(saved)  # the host is back: its next backup seals
    shutil.copytree(state, site.state_dir)
    src.mkdir()
    (src / "a.txt").write_text("the shop's settings\n")
    out = site.json("backup")[0]
    assert any(w["path"].endswith(layout.CONFIG) for w in out["warnings"]), out["warnings"]
    assert "seal" in json.loads((site.repo / layout.CONFIG).read_text())
    check = site.json("check")["local"]
    assert check["ok"] is True and check["notes"] == [], check
    sealed = recover(site, "--dry-run")
    assert sealed.returncode == 0, sealed.stderr
    assert "sealed by the repository's writer key" in sealed.stdout
    assert "1 older unsealed site configs (from before sealing) not used" in sealed.stdout


def test_a_site_config_of_other_recipients_or_damaged_is_refused_not_fatal(
    site: Site, tmp_path: Path
) -> None:
    """Objects the identity cannot read do not stop a recovery: each is named."""
    src = backed_up(site, tmp_path)
    stranger = pyrage.x25519.Identity.generate().to_public()
    junk = site.repo / layout.SITE_CONFIG / "junk"
    junk.write_bytes(pyrage.encrypt(b"{}", [stranger]))
    broken = site.repo / layout.SITE_CONFIG / "broken"
    broken.write_bytes(b"age-encryption.org/v1\n-> nonsense\n")
    destroy(site, src)
    proc = recover(site, "--json")
    assert proc.returncode == 1
    refused = {r["object"]: r["reason"] for r in json.loads(proc.stdout)["refused"]}
    assert set(refused) == {"siteconfig/junk", "siteconfig/broken"}
    assert "other recipients" in refused["siteconfig/junk"]
    assert (src / "a.txt").exists()


def test_a_world_readable_identity_file_is_refused(site: Site, tmp_path: Path) -> None:
    identity, _ = site.keygen()
    identity.chmod(0o644)
    with pytest.raises(EmberkeepError) as caught:
        keys.load_identities(identity)
    message = str(caught.value)
    assert str(identity) in message and "0644" in message and f"chmod 600 {identity}" in message
    identity.chmod(0o600)
    assert keys.load_identities(identity)


def test_a_damaged_config_without_a_recipient_record_is_still_repaired(
    site: Site, tmp_path: Path
) -> None:
    """The snapshot headers show whose repository it is, so the backup host repairs all."""
    backed_up(site, tmp_path)
    (site.repo / layout.RECIPIENTS).unlink()
    (site.repo / layout.CONFIG).write_text("{damaged")
    out = site.json("backup")[0]
    repaired = {w["path"].split("/", 1)[1] for w in out["warnings"]}
    assert repaired >= {layout.CONFIG, layout.WRITER_KEY}, out["warnings"]
    check = site.json("check", "--read-data")["local"]
    assert check["ok"] is True and check["notes"] == [], check


# ------------------------------------------------------------------------------------------
# Prune, `latest`, the RPO and the record of what a target held; wrong clocks
# ------------------------------------------------------------------------------------------

MB = 1024 * 1024


def _repo(site: Site) -> Repository:
    return ApiSite(ek_config.load(str(site.config_path))).repository("local")


def _files(root: Path, tag: str, count: int = 2, size: int = MB) -> Path:
    for i in range(count):
        write_random(root / f"{tag}-{i}.bin", size + i * 4099)
    return root


def _assert_restores(site: Site, snapshot: str, source: Path, listing: Any, dest: Path) -> None:
    site.run("restore", snapshot, "--to", dest)
    assert tree_listing(restored(dest, source)) == listing, f"snapshot {snapshot[:12]}"


def _status(site: Site) -> tuple[int, dict[str, Any]]:
    proc = site.run("status", "--json", ok=None)
    return proc.returncode, json.loads(proc.stdout)


# -- a shadow index: every blob listed again, in packs that do not exist ------------------


def _plant_shadow_index(repo: Repository) -> str:
    """An index file, sealed with the writer key's index key, that lists every blob again
    in a data and a meta pack that do not exist, named to sort before every real pack and
    the file itself before every real index file. Returns its name."""
    entries: dict[int, list[BlobEntry]] = {}
    for name in repo.index_files():
        for record in repo.read_index_file(name):
            entries.setdefault(record.kind, []).extend(record.entries)
    fake = [
        PackRecord(layout.pack_object(kind, "00" * 32), kind, 1 << 20, tuple(listed))
        for kind, listed in sorted(entries.items())
    ]
    first = min(repo.index_files())
    while True:  # the name is the SHA-256 of the sealed bytes (random nonce): draw again
        name, sealed = encode_index(fake, repo.writer_key.index_key)
        if name < first:
            break
    repo.storage.put(name, sealed)
    return name


def test_a_shadow_index_makes_prune_delete_no_live_pack(site: Site, tmp_path: Path) -> None:
    src = _files(tmp_path / "src", "one")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    first_listing = tree_listing(src)
    _files(src, "two")
    site.run("backup")
    second_listing = tree_listing(src)
    first, second = (s["id"] for s in site.snapshots())
    live = packs(objects(site.repo))

    shadow = _plant_shadow_index(_repo(site))
    result = check_json(site, rc=1)
    assert [e["object"] for e in result["errors"]] == [shadow], result["errors"]
    assert "not in the target" in result["errors"][0]["error"]
    assert "ignored" in result["errors"][0]["error"]

    site.run("prune", "--grace", "0s")  # an ordinary prune, as the scheduler runs it
    assert live <= objects(site.repo), f"live packs deleted: {sorted(live - objects(site.repo))}"
    _assert_restores(site, first, src, first_listing, tmp_path / "r1")
    _assert_restores(site, second, src, second_listing, tmp_path / "r2")
    after = check_json(site, "--read-data", rc=0)  # prune dropped the shadow entries
    assert after["errors"] == [] and after["snapshots"] == 2


def test_prune_deletes_nothing_while_a_kept_snapshot_has_blobs_in_no_pack(
    site: Site, tmp_path: Path
) -> None:
    """The storage side deletes the index file: the packs look like a crash's leftovers."""
    src = _files(tmp_path / "src", "one")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    [snapshot] = site.snapshots()
    for index_file in (site.repo / "index").iterdir():
        index_file.unlink()
    before = objects(site.repo)

    proc = site.run("prune", "--grace", "0s", ok=False)
    assert proc.returncode == 1
    message = proc.stderr
    assert snapshot["short_id"] in message and "blobs" in message, message
    assert f"prune --forget {snapshot['short_id']}" in message, message
    assert objects(site.repo) == before, "prune deleted objects"


# -- clocks ----------------------------------------------------------------------------


def _forge_future(repo: Repository, snapshot_id: str, days: int) -> str:
    """A copy of a snapshot's header dated ``days`` later, sealed with the index key."""
    [real] = [s for s in repo.snapshots() if s.id == snapshot_id]
    real.time += timedelta(days=days)
    real.seq = (real.seq or 0) + days
    return repo.save_snapshot(real)


def test_future_dated_snapshots_take_no_retention_slot_and_fake_no_rpo(
    site: Site, tmp_path: Path
) -> None:
    src = _files(tmp_path / "src", "one")
    site.write_config(
        paths=[src], source_extra='retention = { daily = 2 }\nobjectives = { rpo = "1h" }'
    )
    site.env["EMBERKEEP_NOW"] = "2026-03-10T02:00:00Z"
    site.run("init")
    site.run("backup")
    listing = tree_listing(src)
    [real] = site.snapshots()
    repo = _repo(site)
    forged = [_forge_future(repo, real["id"], days) for days in (365, 366)]

    site.env["EMBERKEEP_NOW"] = "2026-03-10T04:00:00Z"  # two hours later: past the RPO
    code, report = _status(site)
    [source] = report["sources"]
    assert source["rpo_state"] == "breached" and code == 1, source
    assert source["last_backup"]["snapshot"] == real["id"]
    assert report["targets"][0]["future_snapshots"] == 2
    assert any(forged[0][:12] in w or forged[1][:12] in w for w in report["warnings"])

    checked = check_json(site, rc=0)
    future = [w for w in checked["warnings"] if "after now" in w]
    assert len(future) == 2 and all(any(f[:12] in w for w in future) for f in forged), future

    pruned = site.json("prune", "--grace", "0s")["local"]
    decided = {d["id"]: (d["action"], d["reason"]) for d in pruned["snapshots"]}
    assert decided[real["id"]] == ("keep", "daily 1/2"), decided
    assert all(decided[f][0] == "keep" and "future" in decided[f][1] for f in forged)
    _assert_restores(site, real["id"], src, listing, tmp_path / "restore")


def test_after_a_clock_step_back_latest_is_the_snapshot_written_last(
    site: Site, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    version = src / "version.txt"
    site.write_config(paths=[src], source_extra="retention = { daily = 1 }")
    site.run("init")
    written = []
    clocks = ("2026-03-10T02:00:00Z", "2026-03-10T20:00:00Z", "2026-03-10T10:00:00Z")
    for now, text in zip(clocks, ("one", "two", "three"), strict=True):
        version.write_text(text)
        site.env["EMBERKEEP_NOW"] = now  # the third backup's clock stepped back 10 hours
        [entry] = site.json("backup")
        written.append(entry)
    warned = [[w["message"] for w in e["warnings"] if w["path"] == "clock"] for e in written]
    assert warned[:2] == [[], []] and len(warned[2]) == 1, warned
    assert "behind the newest snapshot" in warned[2][0]

    ids = [e["snapshot"]["id"] for e in written]
    listed = site.snapshots()  # by time, as the contract says; seq tells the order written
    assert [s["id"] for s in listed] == [ids[0], ids[2], ids[1]]
    assert [s["seq"] for s in listed] == [1, 3, 2]
    assert "seq" in site.run("snapshots").stdout
    out = tmp_path / "latest"
    site.run("restore", "latest", "--to", out)
    assert (restored(out, src) / "version.txt").read_text() == "three"

    pruned = site.json("prune", "--grace", "0s")["local"]
    kept = [d["id"] for d in pruned["snapshots"] if d["action"] == "keep"]
    assert kept == [ids[2]], pruned["snapshots"]


class _StallBeforeIndex:
    """A storage that calls ``hook`` before it writes an index file (the backup's packs
    are uploaded by then, and no index lists them yet)."""

    def __init__(self, inner: Storage, hook: Callable[[], None]) -> None:
        self._inner = inner
        self._hook = hook
        self.label = inner.label

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        if name.startswith(f"{layout.INDEX}/"):
            self._hook()
        self._inner.put(name, data, overwrite=overwrite)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_prune_a_day_ahead_leaves_a_running_backups_packs_alone(
    site: Site, tmp_path: Path
) -> None:
    src = _files(tmp_path / "src", "d", count=3, size=3 * MB)
    site.write_config(paths=[src])
    site.run("init")
    listing = tree_listing(src)
    stalled, resume = threading.Event(), threading.Event()

    def hold() -> None:
        stalled.set()
        assert resume.wait(120), "the test never let the backup go on"

    repo = _repo(site)
    repo.storage = _StallBeforeIndex(repo.storage, hold)
    outcome: dict[str, Any] = {}

    def run_backup() -> None:
        walker = FilesWalker([src], [])
        try:
            outcome["result"] = engine_backup(
                repo,
                walker.walk(),
                source="files",
                source_type="files",
                paths=walker.roots,
                now=clock.now(),
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run_backup, name="running-backup")
    thread.start()
    try:
        assert stalled.wait(120), "the backup never came to its index"
        uploaded = packs(objects(site.repo))
        assert uploaded, "the backup uploaded no pack before its index"
        site.env["EMBERKEEP_NOW"] = clock.iso(clock.now() + timedelta(days=1))
        pruned = site.json("prune", "--grace", "0s")["local"]
        del site.env["EMBERKEEP_NOW"]
        assert uploaded <= objects(site.repo), "prune deleted the running backup's packs"
        assert pruned["packs_deleted"] == 0 and pruned["packs_deferred"] == len(uploaded)
    finally:
        resume.set()
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    snapshot = outcome["result"].snapshot
    check_json(site, "--read-data", rc=0)
    _assert_restores(site, snapshot.id, src, listing, tmp_path / "restore")


# -- deletion and rollback noticed -------------------------------------------------------


def _two_backups(site: Site, tmp_path: Path) -> str:
    """Two snapshots of a small source; returns the newest's id."""
    src = _files(tmp_path / "src", "one", count=1)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    _files(src, "two", count=1)
    site.run("backup")
    return str(site.snapshots()[-1]["id"])


def test_the_newest_snapshot_deleted_by_the_storage_side_is_noticed(
    site: Site, tmp_path: Path
) -> None:
    newest = _two_backups(site, tmp_path)
    code, report = _status(site)
    assert code == 0 and report["snapshots_gone"] == [], report

    (site.repo / layout.SNAPSHOTS / newest).unlink()  # or the whole target rolled back
    checked = check_json(site, rc=0)
    assert any(newest[:12] in w and "is gone" in w for w in checked["warnings"]), checked
    code, report = _status(site)
    assert code == 1 and report["state"] == "breach"
    assert any(newest[:12] in g for g in report["snapshots_gone"]), report
    assert "gone: " in site.run("status", ok=False).stdout
    [entry] = site.json("backup")
    assert any(newest[:12] in w["message"] for w in entry["warnings"]), entry["warnings"]

    code, report = _status(site)  # a newer backup does not make the deletion go away
    assert code == 1 and any(newest[:12] in g for g in report["snapshots_gone"]), report
    (site.state_dir / "snapshots-seen.json").unlink()  # the operator accepts the target
    code, report = _status(site)
    assert code == 0 and report["snapshots_gone"] == [], report


def test_this_hosts_own_prune_is_no_deletion_and_a_damaged_memory_is_rebuilt(
    site: Site, tmp_path: Path
) -> None:
    newest = _two_backups(site, tmp_path)
    site.run("prune", "--forget", newest, "--grace", "0s")
    code, report = _status(site)
    assert code == 0 and report["snapshots_gone"] == [], report

    memory = site.state_dir / "snapshots-seen.json"
    assert stat.S_IMODE(memory.stat().st_mode) == 0o600
    for damage in ('{"format": 1, "targets": {"local": {"snapshots": "many"}}}', "{not json"):
        memory.write_text(damage)
        code, report = _status(site)
        assert code == 0 and report["snapshots_gone"] == [], report
        assert any("damaged" in w and "rebuilt" in w for w in report["warnings"]), report
        assert len(json.loads(memory.read_text())["targets"]["local"]["snapshots"]) == 1


def test_another_hosts_prune_is_no_deletion_and_a_forged_record_of_it_excuses_nothing(
    site: Site, tmp_path: Path
) -> None:
    """Prune records what it deletes, sealed; this host forgets what a record that
    verifies names, reports a planted or altered one, and accepts the rest on request."""
    newest = _two_backups(site, tmp_path)
    [oldest] = [s["id"] for s in site.snapshots() if s["id"] != newest]
    memory = site.state_dir / "snapshots-seen.json"
    assert _status(site)[0] == 0
    as_another_host_remembers = memory.read_bytes()
    pruned = site.json("prune", "--forget", newest, "--grace", "0s")["local"]
    record = pruned["forgotten_record"]
    assert record and record.startswith("forgotten/") and (site.repo / record).is_file()
    memory.write_bytes(as_another_host_remembers)  # this host did not see the prune happen

    code, report = _status(site)
    assert code == 0 and report["snapshots_gone"] == [], report
    assert not [w for w in report["warnings"] if "forgotten/" in w or "gone" in w], report
    assert newest not in json.loads(memory.read_text())["targets"]["local"]["snapshots"]

    # the storage side deletes the other snapshot and plants records that would excuse it
    (site.repo / layout.SNAPSHOTS / oldest).unlink()
    body = {"repository": _repo(site).writer_key.repo_id, "time": clock.iso(clock.now()),
            "snapshots": [oldest]}  # fmt: skip
    planted = "forgotten/20260101T000000Z-0000000000000000"
    forged = "forgotten/20260101T000000Z-1111111111111111"
    (site.repo / planted).write_text(json.dumps(body))
    (site.repo / forged).write_text(json.dumps({**body, "seal": "0" * 64}))
    code, report = _status(site)
    assert code == 1 and any(oldest[:12] in g for g in report["snapshots_gone"]), report
    warned = "\n".join(report["warnings"])
    assert f"{planted}: not sealed by the repository's writer key" in warned, warned
    assert f"{forged}: its seal does not verify" in warned, warned

    accepted = site.run("status", "--accept-missing", ok=None)
    assert "accepted: target local: 1 snapshots this host remembered are gone" in accepted.stdout
    assert oldest in accepted.stdout and "gone: " not in accepted.stdout, accepted.stdout
    code, report = _status(site)
    assert report["snapshots_gone"] == [] and report["snapshots_accepted_as_gone"] == {}, report

    # records are kept 90 days (by the time sealed in them), then a prune deletes them
    site.env["EMBERKEEP_NOW"] = clock.iso(clock.now() + timedelta(days=91))
    later = site.json("prune", "--grace", "0s")["local"]
    assert later["forgotten_records_expired"] == 1 and not (site.repo / record).exists()
    assert any(planted in m and "excuses no deleted snapshot" in m for m in later["messages"])
    assert (site.repo / planted).exists()  # never trusted, and never deleted as if it were


def _store_header(site: Site, body: dict[str, Any]) -> str:
    """A snapshot header of ``body`` as a writer seals one; its id."""
    import hashlib

    from emberkeep.repository.snapshot import SNAPSHOT_AAD

    key = _repo(site).writer_key.index_key
    plain = zstandard.ZstdCompressor().compress(json.dumps(body).encode())
    sealed = crypto.encrypt(key, SNAPSHOT_AAD, plain)
    digest = hashlib.sha256(sealed).hexdigest()
    (site.repo / layout.SNAPSHOTS / digest).write_bytes(sealed)
    return digest


def _header_of(site: Site, snapshot_id: str) -> dict[str, Any]:
    key = _repo(site).writer_key.index_key
    from emberkeep.repository.snapshot import SNAPSHOT_AAD

    sealed = (site.repo / layout.SNAPSHOTS / snapshot_id).read_bytes()
    return json.loads(zstandard.decompress(crypto.decrypt(key, SNAPSHOT_AAD, sealed)))


def test_a_newer_writers_snapshot_header_lists_and_restores_and_a_malformed_one_is_damage(
    site: Site, tmp_path: Path
) -> None:
    """Members this version does not know are left out, not fatal; a known member of the
    wrong type makes the header damaged, named by check, and the others still list."""
    src = _files(tmp_path / "src", "one", count=1, size=4096)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    [genuine] = site.snapshots()
    body = _header_of(site, genuine["id"])
    unknown = {"written_by": "emberkeep 9", "provenance": {"x": [1, 2]}}  # a newer writer's
    newer = _store_header(site, {**body, "seq": body["seq"] + 1, "host": "newer", **unknown})
    listed = {s["id"]: s for s in site.snapshots()}
    assert set(listed) == {genuine["id"], newer} and listed[newer]["host"] == "newer"
    site.run("restore", "latest", "--to", tmp_path / "out")  # `latest` is the newer one
    assert tree_listing(restored(tmp_path / "out", src)) == tree_listing(src)
    check_json(site, rc=0)

    for member, wrong in [("tags", "not-a-list"), ("time", 5), ("blobs", "zz"), ("host", None)]:
        bad = _store_header(site, {**body, "seq": 99, member: wrong})
        result = check_json(site, rc=1, what=member)
        assert any(e["object"] == f"snapshots/{bad}" and "malformed field" in e["error"]
                   for e in result["errors"]), result  # fmt: skip
        assert {s["id"] for s in site.snapshots()} == {genuine["id"], newer}
        (site.repo / layout.SNAPSHOTS / bad).unlink()


def test_prune_and_replicate_read_index_files_within_the_bound(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reader of index files refuses one larger than ``layout.INDEX_FILE_MAX`` before
    reading it, not only the loading of the index (``check``)."""
    from emberkeep.repository import prune as prune_module
    from emberkeep.repository import replicate as replicate_module

    src = _files(tmp_path / "src", "one", count=1, size=4096)
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    repo = _repo(site)
    packs = sorted(repo.index.packs)  # loaded within the bound
    monkeypatch.setattr(layout, "INDEX_FILE_MAX", 16)  # every index file is larger now
    with pytest.raises(IntegrityError, match="more than the 16 an index file may hold"):
        prune_module._holders(repo)
    with pytest.raises(IntegrityError, match="more than the 16"):
        replicate_module._pack_records(repo, packs)
    fresh = _repo(site)  # nothing listed yet: the size is asked before reading
    with pytest.raises(IntegrityError, match="more than the 16"):
        fresh.read_index_file(min(n for n in objects(site.repo) if n.startswith("index/")))


def test_a_backup_reads_only_the_snapshot_headers_its_host_has_not_seen(
    site: Site, tmp_path: Path
) -> None:
    """The seq goes on from what the host remembers; what it does not know it reads."""
    src = _files(tmp_path / "src", "one", count=1, size=1024)
    site.write_config(paths=[src])
    site.run("init")
    api = ApiSite(ek_config.load(str(site.config_path)))
    first = run_backup(api, "files").result
    second = run_backup(api, "files").result
    assert [s.id for s in second.previous] == [], "read headers the host had seen"
    assert (first.snapshot.seq, second.snapshot.seq) == (1, 2)
    (site.state_dir / "snapshots-seen.json").unlink()  # a new host, say
    third = run_backup(api, "files").result
    assert {s.id for s in third.previous} == {first.snapshot.id, second.snapshot.id}
    assert third.snapshot.seq == 3
    other = third.snapshot  # another writer host's snapshot, further on
    other.seq, other.host = 50, "other-host"
    _repo(site).save_snapshot(other)
    site.run("check")  # sees it by name only: the next backup must still read its header
    fourth = run_backup(api, "files").result
    assert [s.id for s in fourth.previous] == [other.id] and fourth.snapshot.seq == 51
