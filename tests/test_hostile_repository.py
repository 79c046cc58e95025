"""A hostile repository cannot harm the host that restores from it (README, "How it keeps
data safe": what a restore refuses and reports).

Each attack is built as a compromised backup host would build it: with the writer key
only (no identity), through the project's own modules, a snapshot whose root holds the
genuine snapshot's tree (its id is in the genuine header, which the writer key reads)
next to the hostile entries. Then, through the CLI, ``restore`` and ``drill`` of it must:
write nothing outside the destination (every path of the tmp tree around it is compared,
and no file anywhere holds the attack's marker), name each refusal, exit 1, and restore
every genuine file byte for byte.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard
from conftest import Site, tree_listing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emberkeep import config as ek_config
from emberkeep.engine import crypto
from emberkeep.engine.restore import Restorer
from emberkeep.engine.tree import content_digest, decode_listing
from emberkeep.engine.writer import BlobWriter
from emberkeep.repository import layout
from emberkeep.repository.index import PackRecord, decode_index
from emberkeep.repository.pack import PackWriter, blob_aad
from emberkeep.repository.repo import Repository
from emberkeep.repository.snapshot import Snapshot
from emberkeep.runner.site import Site as RunSite

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

    def snapshot(self, nodes: list[Any], minutes: int, source_type: str = "files") -> str:
        genuine = _node("genuine", "dir", mode=0o755, subtree=self.genuine.tree.hex())
        tree = bytes.fromhex(self.tree([genuine, *nodes]))
        self.writer.finish()
        blobs = set(self.genuine.blob_ids()) | self.writer.referenced | {tree}
        forged = Snapshot(
            source="files", source_type=source_type,
            time=self.genuine.time + timedelta(minutes=minutes), host="forged",
            tree=tree, blobs=b"".join(sorted(blobs)), paths=self.genuine.paths,
            summary=dict(self.genuine.summary),
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
        check=lambda dest: (
            _is_symlink_to(dest / "out", world.outside),
            _equal(dest / "planted" / "through", mark),
            _is_symlink_to(_kept(dest) / "planted", world.outside),
        ),
    )

    secret = world.outside / "secret"
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
        check=lambda dest: (
            _not_linked_to(dest / "h-to-symlink", secret),
            _is_symlink_to(dest / "s", secret),
        ),
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
    attacks["digest"] = Attack(
        forge.snapshot([swapped, resized, forge.file("fine", b"fine\n")], next(minute)),
        [
            ("/swapped", "recorded at backup time"),
            ("/resized", f"holds {len(b_bin)} bytes, the snapshot says {len(a_txt)}"),
        ],
        check=lambda dest: (
            _equal(dest / "fine", b"fine\n"),
            _absent(dest / "swapped"),
            _absent(dest / "resized"),
        ),
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


def _run_measured(site: Site, *args: str | os.PathLike[str]) -> tuple[int, str, str, int]:
    """The CLI as a subprocess; returns (exit status, stdout, stderr, its peak RSS in KiB),
    the RSS from wait4 of that very process."""
    cmd = [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), *map(str, args)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **site.env})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert "Traceback" not in stderr, stderr
    return proc.returncode, stdout, stderr, usage.ru_maxrss


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
    """``recover`` (and any caller but the CLI's restore, which lists them) gets the refusals
    as an error, after the rest is restored: never a success over missing entries."""
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
