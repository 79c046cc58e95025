"""The storage contract, the same for every backend, against real servers on loopback.

file:// on a temp folder, sftp:// on Debian's sshd, s3:// on versitygw (tests/servers.py).
Then the failures a user meets (unreachable or silent endpoint, wrong host key, wrong
credentials, missing bucket), each a StorageError naming the target, and one round trip per
remote backend through the CLI.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Site, restored, tree_listing
from servers import S3Server, SshServer, free_port

from emberkeep.errors import AlreadyExists, NotFound, StorageError
from emberkeep.storage import Storage, open_storage
from emberkeep.storage.base import ObjectInfo

MiB = 1024 * 1024
CLIENTS = ["openssh", "paramiko"]  # ?ssh= in sftp URLs


@dataclass
class Backend:
    """A storage under test and how to reach behind it (to fake an interrupted write)."""

    kind: str
    storage: Storage
    folder: Path | None = None  # local and sftp: where the objects lie on disk
    s3: S3Server | None = None
    bucket: str = ""
    prefix: str = ""

    def leave_unfinished_write(self, name: str) -> None:
        """What a crash mid-upload leaves: a temp file, or an unfinished multipart upload."""
        if self.s3 is not None:
            self.s3.client().create_multipart_upload(Bucket=self.bucket, Key=self.prefix + name)
            return
        assert self.folder is not None
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(f".{path.name}.tmp-0123456789ab").write_bytes(b"half of it")


@pytest.fixture(params=["local", "sftp", "sftp-paramiko", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    kind = request.param
    folder = tmp_path / "target"
    if kind == "local":
        yield Backend(kind, open_storage(f"file://{folder}", name="t-local"), folder=folder)
    elif kind.startswith("sftp"):
        # sftp through OpenSSH's ssh (the default) and through paramiko (?ssh=paramiko).
        client = {"sftp": "openssh", "sftp-paramiko": "paramiko"}[kind]
        server: SshServer = request.getfixturevalue("sftp_server")
        storage = open_storage(server.url(folder, ssh=client), name="t-sftp")
        yield Backend(kind, storage, folder=folder)
        storage.close()  # type: ignore[attr-defined]
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        bucket = s3.make_bucket()
        storage = open_storage(s3.url(bucket, "site/a"), name="t-s3")
        yield Backend(kind, storage, s3=s3, bucket=bucket, prefix="site/a/")


# -- the contract --------------------------------------------------------------------------


def _stat(st: Storage, name: str) -> ObjectInfo:
    info = st.stat(name)
    assert info is not None, f"{name} missing"
    return info


def test_put_get_and_ranges(backend: Backend) -> None:
    st = backend.storage
    st.put("config", b"0123456789")
    assert st.get("config") == b"0123456789"
    assert st.get("config", 2, 3) == b"234"
    assert st.get("config", 5) == b"56789"
    assert st.get("config", 8, 10) == b"89"  # a range past the end is cut short
    assert st.get("config", 20) == b""
    assert st.get("config", 3, 0) == b""
    st.put("empty", b"")
    assert st.get("empty") == b""
    assert _stat(st, "empty").size == 0


def test_get_of_a_missing_object_raises_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound, match=f"target {backend.storage.label}"):
        backend.storage.get("snapshots/nothing")


def test_list_and_stat(backend: Backend) -> None:
    st = backend.storage
    objects = {"config": 3, "data/aa/aa11": 5, "data/bb/bb22": 7, "index/i1": 1}
    for name, size in objects.items():
        st.put(name, b"x" * size)
    assert {(i.name, i.size) for i in st.list("data/")} == {
        ("data/aa/aa11", 5),
        ("data/bb/bb22", 7),
    }
    assert {i.name: i.size for i in st.list("")} == objects
    assert list(st.list("snapshots/")) == []
    assert _stat(st, "data/bb/bb22").size == 7
    assert st.stat("data/bb/nothing") is None
    assert st.stat("nowhere/at/all") is None


def test_create_only_refuses_an_existing_name_and_overwrite_replaces(backend: Backend) -> None:
    st = backend.storage
    st.put("locks/exclusive", b"first")
    with pytest.raises(AlreadyExists, match=f"target {st.label}: .*locks/exclusive"):
        st.put("locks/exclusive", b"second")
    assert st.get("locks/exclusive") == b"first"
    st.put("locks/exclusive", b"third, longer", overwrite=True)
    assert st.get("locks/exclusive") == b"third, longer"
    st.put("locks/new", b"made by an overwrite", overwrite=True)
    assert st.get("locks/new") == b"made by an overwrite"
    assert st.incomplete() == []  # the refused write left nothing behind


def test_a_list_of_parts_is_one_object(backend: Backend) -> None:
    st = backend.storage
    st.put("meta/pack", [b"head-", bytearray(b""), bytearray(b"body-"), b"tail"])
    assert st.get("meta/pack") == b"head-body-tail"
    st.put("meta/view", memoryview(b"..a view..")[2:8])
    assert st.get("meta/view") == b"a view"


def test_delete(backend: Backend) -> None:
    st = backend.storage
    st.put("trash/p1", b"1")
    st.delete("trash/p1")
    assert st.stat("trash/p1") is None
    assert list(st.list("trash/")) == []
    st.delete("trash/p1")  # missing: not an error
    st.delete("never/was")


def test_unfinished_writes_are_listed_and_deleted(backend: Backend) -> None:
    st = backend.storage
    st.put("data/cc/done", b"complete")
    backend.leave_unfinished_write("data/cc/half")
    unfinished = st.incomplete()
    assert len(unfinished) == 1, unfinished
    assert [i.name for i in st.list("data/")] == ["data/cc/done"]  # not an object
    st.delete(unfinished[0])
    assert st.incomplete() == []
    assert st.get("data/cc/done") == b"complete"


def test_large_object_in_parts_with_ranges(backend: Backend) -> None:
    st = backend.storage
    blob = os.urandom(40 * MiB + 12345)  # several S3 multipart parts, many SFTP requests
    parts: list[bytes | bytearray] = [
        blob[: 3 * MiB],
        bytearray(blob[3 * MiB : 21 * MiB + 7]),
        blob[21 * MiB + 7 :],
    ]
    st.put("data/ff/large", parts)
    assert _stat(st, "data/ff/large").size == len(blob)
    assert st.get("data/ff/large") == blob
    start = 8 * MiB - 100  # across a part boundary
    assert st.get("data/ff/large", start, 2 * MiB) == blob[start : start + 2 * MiB]
    with pytest.raises(AlreadyExists):
        st.put("data/ff/large", blob)
    assert st.incomplete() == []  # the refused multipart upload was abandoned
    assert st.get("data/ff/large", len(blob) - 10) == blob[-10:]


def test_concurrent_callers_share_a_target(backend: Backend) -> None:
    st = backend.storage
    payloads = {f"data/{i:02x}/obj{i}": os.urandom(1000 + i * 70_000) for i in range(24)}
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda item: st.put(*item), payloads.items()))
        got = dict(zip(payloads, pool.map(st.get, payloads), strict=True))
    assert got == payloads
    assert {i.name for i in st.list("data/")} == set(payloads)


def test_free_bytes(backend: Backend) -> None:
    backend.storage.put("config", b"{}")  # the target's folder exists from the first write on
    free = backend.storage.free_bytes()
    if backend.kind == "s3":
        assert free is None
    else:
        assert isinstance(free, int) and free > 0


def test_names_leaving_the_target_are_refused(backend: Backend) -> None:
    for name in ("../outside", "/etc/passwd", "data/../../x"):
        with pytest.raises(StorageError, match="refusing object name"):
            backend.storage.put(name, b"x")


# -- failures a user meets -----------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _fails_in_time(call, timeout: float, *patterns: str) -> StorageError:
    start = time.monotonic()
    with pytest.raises(StorageError) as caught:
        call()
    elapsed = time.monotonic() - start
    # Bounded by the target's timeout, not the clients' own (60 s and more); the margin is
    # wide because on a loaded machine starting the client alone can take seconds.
    assert elapsed < timeout + 20, f"took {elapsed:.1f}s with a {timeout}s timeout"
    for pattern in patterns:
        assert pattern in str(caught.value), str(caught.value)
    return caught.value


@pytest.mark.parametrize("client", CLIENTS)
def test_sftp_unreachable_and_silent_endpoints_fail_within_the_timeout(
    sftp_server: SshServer, tmp_path: Path, client: str, silent_port: int
) -> None:
    closed = sftp_server.url(tmp_path, timeout=2, ssh=client).replace(
        str(sftp_server.port), str(free_port())
    )
    st = open_storage(closed, name="down")
    _fails_in_time(lambda: st.get("config"), 2, "target down:", "cannot connect", "refused")
    silent = sftp_server.url(tmp_path, timeout=2, ssh=client).replace(
        str(sftp_server.port), str(silent_port)
    )
    st = open_storage(silent, name="mute")
    _fails_in_time(lambda: st.get("config"), 2, "target mute:", "did not answer within 2s")


def test_s3_unreachable_and_silent_endpoints_fail_within_the_timeout(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    closed = s3_server.url("bkt", timeout=2).replace(str(s3_server.port), str(free_port()))
    st = open_storage(closed, name="down")
    _fails_in_time(lambda: st.get("config"), 2, "target down:", "could not be reached within 2s")
    silent = s3_server.url("bkt", timeout=2).replace(str(s3_server.port), str(silent_port))
    st = open_storage(silent, name="mute")
    _fails_in_time(lambda: st.stat("config"), 2, "target mute:", "did not answer within 2s")


@pytest.mark.parametrize("client", CLIENTS)
def test_sftp_unknown_host_key_is_refused_with_the_fix(
    sftp_server: SshServer, tmp_path: Path, client: str
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    st = open_storage(sftp_server.url(tmp_path, known_hosts=str(empty), ssh=client), name="remote")
    error = _fails_in_time(
        lambda: list(st.list("")), 30, "target remote:", "is not in", "ssh-keyscan"
    )
    assert f"-p {sftp_server.port} 127.0.0.1 >> {empty}" in str(error)


@pytest.mark.parametrize("client", CLIENTS)
def test_sftp_wrong_host_key_is_refused(
    sftp_server: SshServer, tmp_path: Path, client: str
) -> None:
    from servers import _keygen

    other = _keygen(tmp_path / "impostor")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(sftp_server.host_entry_for(other))
    st = open_storage(sftp_server.url(tmp_path, known_hosts=str(wrong), ssh=client), name="remote")
    _fails_in_time(
        lambda: st.put("config", b"x"), 30, "target remote:", "does not match", "ssh-keygen -R"
    )
    assert not (tmp_path / "config").exists()


@pytest.mark.parametrize("client", CLIENTS)
def test_sftp_wrong_credentials(sftp_server: SshServer, tmp_path: Path, client: str) -> None:
    from servers import _keygen

    _keygen(tmp_path / "stranger")
    url = sftp_server.url(tmp_path, key=str(tmp_path / "stranger"), ssh=client)
    st = open_storage(url, name="remote")
    _fails_in_time(lambda: st.get("config"), 30, "target remote:", "refused user", "authorized")
    st = open_storage(
        sftp_server.url(tmp_path, key=str(tmp_path / "nokey"), ssh=client), name="remote"
    )
    _fails_in_time(lambda: st.get("config"), 30, "target remote:", "does not exist")


def test_sftp_reconnects_after_a_dropped_connection(sftp_server: SshServer, tmp_path: Path) -> None:
    st = open_storage(sftp_server.url(tmp_path / "t"), name="remote")
    st.put("index/a", b"before")
    assert sftp_server.drop_connections() >= 1
    assert st.get("index/a") == b"before"
    st.put("index/b", os.urandom(3 * MiB))
    assert sftp_server.drop_connections() >= 1
    time.sleep(0.2)  # let the client see the connection close
    assert {i.name for i in st.list("index/")} == {"index/a", "index/b"}


def test_sftp_short_reads_are_completed(
    sftp_server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ask for more per request than OpenSSH sends (255 KiB): each reply is short."""
    from emberkeep.storage.sftp import session

    def learn_limits(self: session.Session) -> None:
        self.read_size = MiB

    monkeypatch.setattr(session.Session, "learn_limits", learn_limits)
    st = open_storage(sftp_server.url(tmp_path / "t"), name="remote")
    blob = os.urandom(5 * MiB + 3)
    st.put("data/aa/x", blob)
    assert st.get("data/aa/x") == blob
    assert st.get("data/aa/x", 100, 3 * MiB) == blob[100 : 100 + 3 * MiB]


def test_s3_wrong_credentials_and_missing_bucket(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.make_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    st = open_storage(s3_server.url(bucket), name="cold")
    for call in (lambda: st.get("config"), lambda: st.stat("config"), lambda: st.put("x", b"")):
        error = _fails_in_time(call, 30, "target cold:", "refused the credentials")
        assert "not-the-secret" not in str(error)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKNOBODY")
    st = open_storage(s3_server.url(bucket), name="cold")
    _fails_in_time(lambda: st.stat("config"), 30, "target cold:", "refused the credentials")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    st = open_storage(s3_server.url("no-such-bucket"), name="cold")
    listing: Callable[[], object] = lambda: list(st.list(""))  # noqa: E731
    for probe in (lambda: st.get("config"), lambda: st.stat("config"), listing):
        _fails_in_time(probe, 30, "target cold:", "bucket no-such-bucket", "does not exist")


def test_s3_upload_survives_dropped_connections(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy cuts the first connections mid-request; the parts are sent again."""
    from servers import FlakyProxy

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.make_bucket()
    with FlakyProxy(s3_server.port, drops=3, after_bytes=MiB) as proxy:
        url = s3_server.url(bucket).replace(str(s3_server.port), str(proxy.port))
        st = open_storage(url, name="cold")
        blob = os.urandom(20 * MiB)
        st.put("data/aa/big", blob)
        assert proxy.dropped == 3
        assert st.get("data/aa/big") == blob
        assert st.incomplete() == []


# -- the whole program through each remote backend -----------------------------------------


def _make_tree(root: Path) -> None:
    (root / "media" / "images").mkdir(parents=True)
    (root / "media" / "images" / "large.bin").write_bytes(os.urandom(20 * MiB))
    for i in range(30):
        (root / "media" / f"small-{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (root / "config").mkdir()
    (root / "config" / ".env.local").write_text("SECRET=1\n")
    os.symlink("media/small-1.txt", root / "link")


def _round_trip(site: Site, url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src)
    site.write_config(paths=[src], targets=f'[[targets]]\nname = "remote"\nurl = "{url}"')
    site.run("init")
    site.run("backup")
    snapshots = site.snapshots()
    assert [s["target"] for s in snapshots] == ["remote"]
    out = tmp_path / "out"
    site.run("restore", snapshots[0]["id"], "--to", out)
    assert tree_listing(restored(out, src)) == tree_listing(src)
    site.run("check", "--read-data")
    site.run("prune", "--forget", snapshots[0]["id"], "--grace", "0s")
    assert site.snapshots() == []


@pytest.mark.slow
def test_cli_round_trip_through_sftp(site: Site, sftp_server: SshServer, tmp_path: Path) -> None:
    _round_trip(site, sftp_server.url(tmp_path / "remote-repo"), tmp_path)
    leftovers = [p for p in (tmp_path / "remote-repo" / "data").rglob("*") if p.is_file()]
    assert leftovers == []  # prune removed every pack


@pytest.mark.slow
def test_cli_round_trip_through_s3(site: Site, s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    site.env.update(s3_server.env())
    _round_trip(site, s3_server.url(bucket, "candle"), tmp_path)
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="candle/data/")
    assert listed.get("KeyCount", 0) == 0  # prune removed every pack


def test_s3_create_only_falls_back_to_head_then_put(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path taken with a server that lacks If-None-Match (versitygw has it: forced here)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    st = open_storage(s3_server.url(s3_server.make_bucket()), name="old")
    st._conditional = False  # type: ignore[attr-defined]
    st.put("locks/exclusive", b"first")
    with pytest.raises(AlreadyExists, match="target old: object locks/exclusive"):
        st.put("locks/exclusive", b"second")
    big = os.urandom(9 * MiB)
    st.put("data/aa/big", big)
    with pytest.raises(AlreadyExists):
        st.put("data/aa/big", big)
    assert st.get("locks/exclusive") == b"first"
    assert st.incomplete() == []


def test_s3_storage_class_is_sent_for_data_packs_only(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    url = s3_server.url(s3_server.make_bucket(), "p", storage_class="STANDARD_IA")
    st = open_storage(url, name="cold")
    sent: dict[str, str | None] = {}

    def capture(params: dict, **_: object) -> None:
        sent[params["Key"]] = params.get("StorageClass")

    for operation in ("PutObject", "CreateMultipartUpload"):
        st.client.meta.events.register(f"provide-client-params.s3.{operation}", capture)  # type: ignore[attr-defined]
    st.put("data/aa/small", b"x")
    st.put("data/bb/large", os.urandom(9 * MiB))
    st.put("meta/aa/tree", b"x")
    st.put("index/i1", b"x")
    st.put("snapshots/s1", b"x")
    assert sent == {
        "p/data/aa/small": "STANDARD_IA",
        "p/data/bb/large": "STANDARD_IA",
        "p/meta/aa/tree": None,
        "p/index/i1": None,
        "p/snapshots/s1": None,
    }
    assert st.get("data/bb/large", 0, 1)


def test_cli_names_the_target_that_fails(
    site: Site, sftp_server: SshServer, s3_server: S3Server, tmp_path: Path
) -> None:
    from servers import _keygen

    wrong = tmp_path / "known_hosts"
    wrong.write_text(sftp_server.host_entry_for(_keygen(tmp_path / "impostor")))
    url = sftp_server.url(tmp_path / "r", known_hosts=str(wrong))
    site.write_config(paths=[tmp_path], targets=f'[[targets]]\nname = "offsite"\nurl = "{url}"')
    proc = site.run("init", ok=False)
    assert proc.returncode == 1
    assert "target offsite: the host key of" in proc.stderr

    site.env.update(s3_server.env())
    url = s3_server.url("no-such-bucket")
    site.write_config(paths=[tmp_path], targets=f'[[targets]]\nname = "cold"\nurl = "{url}"')
    proc = site.run("snapshots", ok=False)
    assert proc.returncode == 1
    assert "target cold: bucket no-such-bucket" in proc.stderr
    assert s3_server.secret_key not in proc.stderr + proc.stdout


def test_open_storage_rejects_bad_remote_urls() -> None:
    from emberkeep.errors import UsageError

    for url, message in [
        ("sftp://u:pw@host/x", "no password"),
        ("sftp:///x", "give a host"),
        ("sftp://host/", "give a folder"),
        ("sftp://host/x?timeout=soon", "timeout='soon' in the URL is not a number of seconds"),
        *[
            (f"{scheme}://host/x?timeout={value}", f"timeout='{value}' .* from 1 to 3600")
            for scheme in ("sftp", "s3")
            for value in ("inf", "1e309", "nan", "-5", "0", "0.5", "3601")
        ],
        ("s3://b/x?thaw_poll=inf", "thaw_poll='inf' .* at most 1d"),
        ("s3://b/x?thaw_timeout=1e309", "thaw_timeout='1e309' .* at most 30d"),
        ("s3://b/x?thaw_timeout=99999999999999d", "thaw_timeout='99999999999999d'"),
        ("s3://b/x?thaw_days=99999", "thaw_days='99999' .* from 1 to 3650"),
        ("s3://b/x?lock_days=1e3", "lock_days='1e3' .* whole number"),
        ("sftp://host/x?colour=red", "unknown option colour"),
        ("s3://key:secret@bucket/x", "give a bucket"),
        ("s3://bucket/x?endpoint=ftp://h", "not an http"),
        ("s3://bucket/x?storage=cold", "unknown option storage"),
    ]:
        with pytest.raises(UsageError, match=message) as caught:
            open_storage(url, name="t")
        assert "pw" not in str(caught.value) and "secret" not in str(caught.value)


def test_s3_storage_class_applies_to_data_packs_only() -> None:
    st = open_storage("s3://bucket/p?storage_class=DEEP_ARCHIVE", name="cold")
    assert st.storage_class_for("data/ab/abcd") == "DEEP_ARCHIVE"  # type: ignore[attr-defined]
    for name in ("meta/ab/abcd", "index/x", "snapshots/x", "keys/writer.age", "config"):
        assert st.storage_class_for(name) is None  # type: ignore[attr-defined]
