"""A create-only write whose reply is lost, then retried, against the real servers.

The s3 and sftp backends retry a request when the connection drops. If the first attempt was
stored and only its reply was lost, the retry finds the name taken. That must count as
success when what is stored is what was being written (else ``save_snapshot`` fails after
saving, and a lease taken so looks held by someone else), and stay AlreadyExists when it is
another object. The reply is lost at our own seam (the boto3 client's call, paramiko's
rename): the real call runs against the real server (versitygw, sshd), then the connection
is reported dropped, once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions as boto_errors
import pytest
from servers import FlakyProxy, S3Server, SshServer

from emberkeep.errors import AlreadyExists, StorageError
from emberkeep.storage import open_storage
from emberkeep.storage.s3 import retry as s3_retry
from emberkeep.storage.s3 import upload as s3_upload
from emberkeep.storage.sftp import session as sftp_session

MiB = 1024 * 1024
Meddle = Callable[[str], None]  # runs after the real call, before the reply is lost


def _content_named(data: bytes, folder: str = "snapshots") -> str:
    return f"{folder}/{hashlib.sha256(data).hexdigest()}"


# -- s3 ------------------------------------------------------------------------------------


@pytest.fixture
def s3_target(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.make_bucket()
    st = open_storage(s3_server.url(bucket, "site"), name="t-s3")
    st.s3_server, st.bucket = s3_server, bucket  # type: ignore[attr-defined]
    yield st
    st.close()  # type: ignore[attr-defined]


def _lose_s3_reply(st: Any, method: str, meddle: Meddle | None = None) -> list[int]:
    """Make the first ``method`` call reach the server, then lose its reply; count calls."""
    real = getattr(st.client, method)
    calls: list[int] = []

    def call(**kwargs: Any) -> Any:
        calls.append(1)
        reply = real(**kwargs)
        if len(calls) == 1:
            if meddle is not None:
                meddle(kwargs["Key"])
            raise boto_errors.ConnectionClosedError(endpoint_url=st.loc.endpoint)
        return reply

    setattr(st.client, method, call)
    return calls


def _s3_replace(st: Any, body: bytes) -> Meddle:
    """Another writer's object under the same key (what the retry must not accept)."""
    return lambda key: st.s3_server.client().put_object(Bucket=st.bucket, Key=key, Body=body)


def test_s3_lost_reply_of_a_create_only_put_is_success(s3_target: Any) -> None:
    st = s3_target
    snapshot = b"sealed snapshot header" * 10
    name = _content_named(snapshot)
    calls = _lose_s3_reply(st, "put_object")
    st.put(name, snapshot)
    assert len(calls) == 2  # retried, and the retry found the name taken
    assert st.get(name) == snapshot
    lease = b'{"kind": "exclusive", "token": "ours"}'
    _lose_s3_reply(st, "put_object")
    st.put("locks/exclusive", lease)
    assert st.get("locks/exclusive") == lease
    with pytest.raises(AlreadyExists):  # without a lost reply, a taken name stays taken
        st.put("locks/exclusive", lease)


def test_s3_lost_reply_then_another_object_stays_already_exists(s3_target: Any) -> None:
    st = s3_target
    _lose_s3_reply(st, "put_object", _s3_replace(st, b'{"token": "theirs"}'))
    with pytest.raises(AlreadyExists, match="locks/exclusive"):
        st.put("locks/exclusive", b'{"token": "ours!!"}')  # same size, other bytes
    pack = b"pack bytes" * 50
    _lose_s3_reply(st, "put_object", _s3_replace(st, b"truncated"))
    with pytest.raises(AlreadyExists):
        st.put(_content_named(pack, "data/ab"), pack)


def test_s3_lost_reply_of_a_multipart_completion_is_success(
    s3_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_upload, "MULTIPART_THRESHOLD", MiB)
    st = s3_target
    pack = bytes(range(256)) * (2 * MiB // 256)  # one part of 2 MiB: a multipart upload
    name = _content_named(pack, "data/00")
    calls = _lose_s3_reply(st, "complete_multipart_upload")
    st.put(name, pack)
    assert len(calls) == 2
    assert st.get(name) == pack
    assert st.incomplete() == []
    # Overwrites complete without If-None-Match; their retry must not fail either.
    calls = _lose_s3_reply(st, "complete_multipart_upload")
    st.put("config", pack, overwrite=True)
    assert len(calls) == 2
    assert st.get("config") == pack


def test_s3_lost_reply_of_a_multipart_completion_then_the_object_gone(
    s3_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """versitygw answers a retried completion 200 while the object is there (the test above),
    NoSuchUpload once it is gone: not success, since nothing holds what was written."""
    monkeypatch.setattr(s3_upload, "MULTIPART_THRESHOLD", MiB)
    st = s3_target
    pack = b"\x01" * 2 * MiB

    def delete(key: str) -> None:
        st.s3_server.client().delete_object(Bucket=st.bucket, Key=key)

    _lose_s3_reply(st, "complete_multipart_upload", delete)
    with pytest.raises(StorageError, match="NoSuchUpload") as caught:
        st.put(_content_named(pack, "data/01"), pack)
    assert not isinstance(caught.value, AlreadyExists)


# -- s3 through a network that drops: servers.FlakyProxy in front of versitygw ------------


@pytest.fixture
def s3_via_proxy(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An s3 target whose every connection goes through a FlakyProxy (``st.proxy``)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.make_bucket()
    with FlakyProxy(s3_server.port) as proxy:
        url = s3_server.url(bucket, "site", endpoint=f"http://127.0.0.1:{proxy.port}", timeout=10)
        st = open_storage(url, name="t-s3")
        st.proxy, st.direct, st.bucket = proxy, s3_server.client(), bucket  # type: ignore[attr-defined]
        yield st
        st.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [6 * MiB, 20 * MiB], ids=["single put", "multipart"])
@pytest.mark.parametrize("cut", ["close", "reset"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_s3_one_cut_during_a_transfer_is_retried_and_succeeds(
    s3_via_proxy: Any, direction: str, cut: str, size: int
) -> None:
    """ "up": the upload is cut mid-body; "down": the download is cut mid-body."""
    st = s3_via_proxy
    blob = os.urandom(size)
    name = _content_named(blob, "data/aa")
    st.proxy.arm(drops=1, after_bytes=MiB, direction=direction, cut=cut)
    st.put(name, blob)
    assert st.get(name) == blob
    assert st.proxy.dropped == 1, "the proxy did not cut the connection: the test proved nothing"
    stored = st.direct.get_object(Bucket=st.bucket, Key=f"site/{name}")["Body"].read()
    assert stored == blob  # what the server holds, read past the proxy


@pytest.mark.parametrize("direction", ["up", "down"])
def test_s3_a_connection_cut_every_time_fails_naming_the_drop(
    s3_via_proxy: Any, direction: str
) -> None:
    st = s3_via_proxy
    blob = os.urandom(3 * MiB)
    name = _content_named(blob, "data/bb")
    if direction == "down":
        st.put(name, blob)
    st.proxy.arm(drops=1000, after_bytes=MiB, direction=direction, cut="reset")
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        st.put(name, blob) if direction == "up" else st.get(name)
    message = str(caught.value)
    assert st.proxy.dropped == s3_retry.ATTEMPTS, message
    doing = "writing" if direction == "up" else "reading"
    assert message.startswith("target t-s3: the connection to "), message
    assert f"dropped {s3_retry.ATTEMPTS} times while {doing} {name}" in message, message
    assert time.monotonic() - started < 60  # bounded: five tries and four pauses


# -- sftp ----------------------------------------------------------------------------------


@pytest.fixture
def sftp_target(sftp_server: SshServer, tmp_path: Path) -> Iterator[Any]:
    folder = tmp_path / "target"
    st = open_storage(sftp_server.url(folder), name="t-sftp")
    st.folder = folder  # type: ignore[attr-defined]
    yield st
    st.close()  # type: ignore[attr-defined]


def _lose_sftp_rename(
    monkeypatch: pytest.MonkeyPatch, meddle: Callable[[str], None] | None = None
) -> list[int]:
    """Make the first create-only rename happen on the server, then drop the session."""
    real = sftp_session.Session.rename
    calls: list[int] = []

    def rename(self: Any, old: str, new: str) -> None:
        calls.append(1)
        real(self, old, new)
        if len(calls) == 1:
            if meddle is not None:
                meddle(new)
            self.get_channel().close()  # the session is gone before its reply is read
            raise EOFError

    monkeypatch.setattr(sftp_session.Session, "rename", rename)
    return calls


def test_sftp_lost_reply_of_a_create_only_rename_is_success(
    sftp_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = sftp_target
    snapshot = b"sealed snapshot header" * 10
    name = _content_named(snapshot)
    calls = _lose_sftp_rename(monkeypatch)
    st.put(name, snapshot)
    assert len(calls) == 2  # retried, and the retry found the name taken
    assert st.get(name) == snapshot
    lease = b'{"kind": "exclusive", "token": "ours"}'
    _lose_sftp_rename(monkeypatch)
    st.put("locks/exclusive", lease)
    assert st.get("locks/exclusive") == lease
    assert st.incomplete() == []  # the retry's temp file was removed
    with pytest.raises(AlreadyExists):  # without a lost reply, a taken name stays taken
        st.put("locks/exclusive", lease)


def test_sftp_lost_reply_then_another_object_stays_already_exists(
    sftp_target: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = sftp_target

    def replace(body: bytes) -> Callable[[str], None]:
        def write(path: str) -> None:  # the server's folder is local
            Path(path).write_bytes(body)

        return write

    _lose_sftp_rename(monkeypatch, replace(b'{"token": "theirs"}'))
    with pytest.raises(AlreadyExists, match="locks/exclusive"):
        st.put("locks/exclusive", b'{"token": "ours!!"}')
    pack = b"pack bytes" * 50
    _lose_sftp_rename(monkeypatch, replace(b"truncated"))
    with pytest.raises(AlreadyExists):
        st.put(_content_named(pack, "data/ab"), pack)
