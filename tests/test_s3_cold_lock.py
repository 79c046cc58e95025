"""S3 cold storage (thaw before reading) and Object Lock (README, "Using it": targets).

What versitygw v1.8.0 (the test server) does, read from its source and checked here:

- Storage classes are accepted and ignored: every object reads back as STANDARD, and
  RestoreObject answers NotImplemented on the posix backend. A real thaw cannot run end to
  end, so this file tests (a) what the real client sends to the real server, through
  botocore's event hooks, and (b) the waiting loop as a pure function over ``head`` and
  ``restore`` with a fake clock (``wait_for_thaw``), plus ``prepare_read`` on the real server
  where nothing is archived.
- Object Lock is implemented: a bucket created with ObjectLockEnabledForBucket takes
  per-object retention (PutObject / CreateMultipartUpload headers), HEAD shows it, and a
  DELETE or an overwrite of an object under retention is refused (403 AccessDenied "object
  protected by object lock"). It works on unversioned buckets, and with ``--versioning-dir``
  on versioned ones (as AWS requires; there a plain DELETE only adds a delete marker, which
  is why the backend deletes by version). Both are tested, through the backend and the CLI.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Site
from servers import S3Server, start_versitygw

from emberkeep.errors import AlreadyExists, UsageError
from emberkeep.storage import open_storage
from emberkeep.storage.base import ObjectLocked, prepare_read
from emberkeep.storage.s3 import (
    ARCHIVED,
    READY,
    THAWING,
    S3Storage,
    ThawProgress,
    ThawTimeout,
    thaw_packs,
    thaw_state,
    wait_for_thaw,
)

MiB = 1024 * 1024


# -- URL options ---------------------------------------------------------------------------


def test_thaw_and_lock_options_have_defaults() -> None:
    loc = S3Storage("s3://bucket/p", label="cold").loc
    assert (loc.thaw_days, loc.thaw_tier, loc.thaw_poll, loc.thaw_timeout) == (
        1,
        "Standard",
        60.0,
        48 * 3600.0,
    )
    assert loc.lock_days is None


def test_thaw_and_lock_options_are_parsed() -> None:
    url = (
        "s3://bucket/p?thaw_days=3&thaw_tier=bulk&thaw_poll=0.5&thaw_timeout=12h"
        "&lock_days=30&lock_mode=governance"
    )
    loc = S3Storage(url, label="cold").loc
    assert (loc.thaw_days, loc.thaw_tier, loc.thaw_poll, loc.thaw_timeout) == (
        3,
        "Bulk",
        0.5,
        12 * 3600.0,
    )
    assert (loc.lock_days, loc.lock_mode) == (30, "GOVERNANCE")
    assert S3Storage("s3://b/p?thaw_timeout=90", label="c").loc.thaw_timeout == 90.0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("thaw_days=0", "thaw_days='0' in the URL is not a whole number"),
        ("thaw_days=two", "thaw_days='two' in the URL is not a whole number"),
        ("thaw_tier=Fast", "thaw_tier='Fast' in the URL is not one of Standard, Bulk, Expedited"),
        ("thaw_poll=-1", "thaw_poll='-1' in the URL is not a positive number of seconds"),
        ("thaw_timeout=soon", "thaw_timeout='soon' in the URL is not a positive number"),
        ("lock_days=0", "lock_days='0' in the URL is not a whole number from 1 to 36500"),
        ("lock_days=40000", "lock_days='40000' in the URL is not a whole number from 1 to 36500"),
        ("lock_days=1&lock_mode=STRICT", "lock_mode='STRICT' in the URL is not one of COMPLIANCE"),
        ("lock_mode=COMPLIANCE", "lock_mode= in the URL needs lock_days=N"),
        ("thaw=yes", "unknown option thaw"),
    ],
)
def test_bad_thaw_and_lock_options_are_usage_errors(query: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(f"target cold: {message}")):
        open_storage(f"s3://bucket/p?{query}", name="cold")


# -- the thaw loop, a pure function over head and restore, on a fake clock ------------------


class FakeCold:
    """Objects in storage classes, with restores that take ``takes`` seconds of fake time."""

    def __init__(self, classes: dict[str, str], *, takes: float | None = 250.0) -> None:
        self.classes = classes
        self.takes = takes  # None: a restore never finishes
        self.time = 1000.0
        self.started: dict[str, float] = {}  # name -> when its restore was asked
        self.restores: list[str] = []
        self.sleeps: list[float] = []
        self.heads = 0

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds

    def head(self, name: str) -> dict[str, Any]:
        self.heads += 1
        reply: dict[str, Any] = {"ContentLength": 1}
        if self.classes[name] != "STANDARD":  # AWS leaves STANDARD out of a HEAD reply
            reply["StorageClass"] = self.classes[name]
        if name in self.started:
            done = self.takes is not None and self.time - self.started[name] >= self.takes
            reply["Restore"] = (
                'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'
                if done
                else 'ongoing-request="true"'
            )
        return reply

    def restore(self, name: str) -> None:
        self.restores.append(name)
        self.started.setdefault(name, self.time)


def test_thaw_state_reads_the_head_reply() -> None:
    assert thaw_state({}) == READY  # missing, or STANDARD (AWS leaves the class out)
    assert thaw_state({"StorageClass": "GLACIER"}) == ARCHIVED
    assert thaw_state({"StorageClass": "DEEP_ARCHIVE"}) == ARCHIVED
    assert thaw_state({"StorageClass": "INTELLIGENT_TIERING", "ArchiveStatus": "ARCHIVE_ACCESS"})
    assert thaw_state({"StorageClass": "DEEP_ARCHIVE", "Restore": 'ongoing-request="true"'}) == (
        THAWING
    )
    done = 'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'
    assert thaw_state({"StorageClass": "GLACIER", "Restore": done}) == READY
    for instantly_readable in ("GLACIER_IR", "STANDARD_IA", "ONEZONE_IA", "STANDARD"):
        assert thaw_state({"StorageClass": instantly_readable}) == READY


def test_archived_objects_are_restored_at_once_and_waited_for_once() -> None:
    cold = FakeCold(
        {
            "data/a": "DEEP_ARCHIVE",
            "data/b": "GLACIER",
            "data/c": "GLACIER_IR",  # instantly readable: never thawed
            "data/d": "STANDARD",
            "data/e": "GLACIER",
        }
    )
    cold.restore("data/e")  # a restore already running (an earlier, interrupted run)
    cold.restores.clear()
    cold.time += 100  # data/e finishes 150 s into this run, the others at 250 s
    reports: list[ThawProgress] = []
    needed = wait_for_thaw(
        ["data/a", "data/b", "data/c", "data/d", "data/e", "data/a"],
        cold.head,
        cold.restore,
        poll=60,
        timeout=3600,
        on_progress=reports.append,
        label="cold",
        now=cold.now,
        sleep=cold.sleep,
    )
    assert needed == 3
    assert cold.restores == ["data/a", "data/b"]  # one request each, none for data/e
    thawing = [(3, 3), (3, 3), (3, 3), (3, 2), (3, 2), (3, 0)]  # data/e is done after 150 s
    assert [(r.total, r.thawing) for r in reports] == thawing
    assert [r.waited for r in reports] == [0, 60, 120, 180, 240, 300]
    assert cold.sleeps == [60] * 5
    assert str(reports[0]) == (
        "target cold: 3 of 3 objects thawing from cold storage (waited 0s); "
        "Glacier takes hours, Deep Archive up to 48 h"
    )
    assert str(reports[-1]) == "target cold: 3 archived objects thawed after 5m"


def test_nothing_archived_returns_at_once() -> None:
    cold = FakeCold({"data/a": "STANDARD", "data/b": "GLACIER_IR"})
    reports: list[ThawProgress] = []
    assert (
        wait_for_thaw(
            ["data/a", "data/b"],
            cold.head,
            cold.restore,
            poll=60,
            timeout=3600,
            on_progress=reports.append,
            now=cold.now,
            sleep=cold.sleep,
        )
        == 0
    )
    assert (reports, cold.restores, cold.sleeps, cold.heads) == ([], [], [], 2)


def test_thaw_gives_up_after_the_timeout_and_names_the_option() -> None:
    cold = FakeCold({"data/a": "DEEP_ARCHIVE", "data/b": "GLACIER"}, takes=None)
    reports: list[ThawProgress] = []
    with pytest.raises(ThawTimeout, match="thaw_timeout=") as caught:
        wait_for_thaw(
            ["data/a", "data/b"],
            cold.head,
            cold.restore,
            poll=600,
            timeout=1500,
            on_progress=reports.append,
            label="cold",
            now=cold.now,
            sleep=cold.sleep,
        )
    assert "target cold: 2 of 2 archived objects were still thawing after 25m" in str(caught.value)
    assert caught.value.pending == ["data/a", "data/b"]
    assert cold.sleeps == [600, 600, 300]  # the last wait is cut to the timeout
    assert sum(cold.sleeps) == 1500
    assert cold.restores == ["data/a", "data/b"]


def test_a_restore_that_lapsed_while_waiting_is_asked_again() -> None:
    cold = FakeCold({"data/a": "GLACIER"})
    lapsed = {"done": False}
    real_head = cold.head

    def head(name: str) -> dict[str, Any]:
        if cold.restores == ["data/a"] and cold.time >= 1060 and not lapsed["done"]:
            lapsed["done"] = True
            del cold.started[name]  # the server forgot the restore (or it expired)
        return real_head(name)

    wait_for_thaw(
        ["data/a"],
        head,
        cold.restore,
        poll=60,
        timeout=3600,
        on_progress=lambda p: None,
        now=cold.now,
        sleep=cold.sleep,
    )
    assert cold.restores == ["data/a", "data/a"]


def test_a_read_refused_as_archived_thaws_the_batch_prepare_read_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With data not sent to an archival class (a lifecycle rule may still archive it),
    prepare_read only remembers the names; the first archived read thaws them all."""
    st = S3Storage("s3://bucket/p?storage_class=STANDARD_IA", label="cold")
    thawed: list[tuple[list[str], Any]] = []
    monkeypatch.setattr(st, "_thaw", lambda names, progress: thawed.append((names, progress)))
    report = print
    prepare_read(st, ["data/b", "data/a", "data/b"], report)
    assert thawed == []
    st._thaw_on_demand("data/c")
    assert thawed == [(["data/a", "data/b", "data/c"], report)]
    st._thaw_on_demand("data/a")  # the batch is used up: one name, the default reporter
    assert thawed[1] == (["data/a"], st.on_thaw)


def test_an_archival_storage_class_thaws_in_prepare_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st = S3Storage("s3://bucket/p?storage_class=DEEP_ARCHIVE", label="cold")
    thawed: list[list[str]] = []
    monkeypatch.setattr(st, "_thaw", lambda names, progress: thawed.append(names))
    thaw_packs(st, ["data/b", "data/a"], None)
    assert thawed == [["data/a", "data/b"]]
    thaw_packs(open_storage("file:///nonexistent", name="local"), ["data/a"], None)  # no-op


# -- against the real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def versioned_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A second versitygw whose buckets can be versioned, as AWS requires for Object Lock."""
    server = start_versitygw(tmp_path_factory.mktemp("versitygw-versioned"), versioning=True)
    yield server
    server.stop()


@pytest.fixture(params=["unversioned", "versioned"])
def lock_server(request: pytest.FixtureRequest) -> S3Server:
    return request.getfixturevalue(
        "s3_server" if request.param == "unversioned" else "versioned_s3"
    )


def lock_bucket(server: S3Server) -> str:
    name = f"vault-{secrets.token_hex(4)}"
    server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def capture_writes(st: Any) -> dict[str, dict[str, Any]]:
    """What the real client sends with every PutObject / CreateMultipartUpload, by key."""
    sent: dict[str, dict[str, Any]] = {}
    keys = ("StorageClass", "ObjectLockMode", "ObjectLockRetainUntilDate")

    def capture(params: dict[str, Any], **_: object) -> None:
        sent[params["Key"]] = {k: params[k] for k in keys if k in params}

    for operation in ("PutObject", "CreateMultipartUpload"):
        st.client.meta.events.register(f"provide-client-params.s3.{operation}", capture)
    return sent


def test_data_packs_go_cold_and_every_object_but_leases_is_locked(
    lock_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in lock_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = lock_bucket(lock_server)
    url = lock_server.url(bucket, "site", storage_class="DEEP_ARCHIVE", lock_days=2)
    st = open_storage(url, name="vault")
    sent = capture_writes(st)
    before = datetime.now(UTC)
    st.put("data/aa/small", b"x")
    st.put("data/bb/large", [b"y" * (9 * MiB)])  # a multipart upload
    for name in ("meta/aa/tree", "index/i1", "snapshots/s1", "keys/writer.age", "config"):
        st.put(name, b"x")
    st.put("locks/backup-1", b"lease")
    st.put("trash/data/aa/small", b"marker")
    after = datetime.now(UTC)

    cold = {"site/data/aa/small", "site/data/bb/large"}
    unlocked = {"site/locks/backup-1", "site/trash/data/aa/small"}
    assert set(sent) == cold | unlocked | {
        f"site/{n}" for n in ("meta/aa/tree", "index/i1", "snapshots/s1", "keys/writer.age")
    } | {"site/config"}
    for key, params in sent.items():
        assert params.get("StorageClass") == ("DEEP_ARCHIVE" if key in cold else None), key
        if key in unlocked:
            assert "ObjectLockMode" not in params, key
            continue
        assert params["ObjectLockMode"] == "COMPLIANCE", key
        until = params["ObjectLockRetainUntilDate"]
        assert before + timedelta(days=2, seconds=-1) <= until <= after + timedelta(days=2)
    # The server kept the retention (and, being versitygw, ignored the storage class).
    client = lock_server.client()
    head = client.head_object(Bucket=bucket, Key="site/data/bb/large")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=1)
    assert "ObjectLockMode" not in client.head_object(Bucket=bucket, Key="site/locks/backup-1")


def test_a_delete_of_a_locked_object_is_refused_by_the_server(
    lock_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in lock_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = lock_bucket(lock_server)
    st = open_storage(lock_server.url(bucket, "site", lock_days=1), name="vault")
    st.put("data/aa/pack", b"precious")
    st.put("data/bb/large", [b"z" * (9 * MiB)])
    for name in ("data/aa/pack", "data/bb/large"):
        with pytest.raises(ObjectLocked, match=f"target vault: {name} is protected by S3 Object"):
            st.delete(name)
    with pytest.raises(ObjectLocked) as caught:
        st.delete("data/aa/pack")
    assert caught.value.name == "data/aa/pack"
    assert caught.value.until is not None
    assert timedelta(hours=23) < caught.value.until - datetime.now(UTC) <= timedelta(days=1)
    assert st.locked_until("data/aa/pack") == caught.value.until  # type: ignore[attr-defined]
    assert st.get("data/aa/pack") == b"precious"
    assert [i.name for i in st.list("data/")] == ["data/aa/pack", "data/bb/large"]
    # Nothing left hidden behind a delete marker either: the name still reads.
    versions = lock_server.client().list_object_versions(Bucket=bucket, Prefix="site/data/aa")
    assert not versions.get("DeleteMarkers")
    # A create-only write of the name is "exists", as for any existing name.
    with pytest.raises(AlreadyExists):
        st.put("data/aa/pack", b"precious")
    # Leases are not locked: removed and taken again (on a versioned bucket too).
    st.put("locks/exclusive", b"lease")
    st.put("locks/exclusive", b"refreshed", overwrite=True)
    st.delete("locks/exclusive")
    assert st.stat("locks/exclusive") is None
    st.put("locks/exclusive", b"again")
    assert st.get("locks/exclusive") == b"again"


def test_governance_mode_is_sent_and_also_refuses_a_plain_delete(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = lock_bucket(s3_server)
    st = open_storage(s3_server.url(bucket, lock_days=1, lock_mode="GOVERNANCE"), name="vault")
    st.put("index/i1", b"x")
    head = s3_server.client().head_object(Bucket=bucket, Key="index/i1")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(ObjectLocked):
        st.delete("index/i1")


def test_lock_days_on_a_bucket_without_object_lock_is_a_clear_error(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    st = open_storage(s3_server.url(s3_server.make_bucket(), lock_days=1), name="vault")
    with pytest.raises(Exception, match="does not have Object Lock enabled, which lock_days="):
        st.put("config", b"{}")


def test_prepare_read_on_the_real_server_heads_and_requests_nothing(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """versitygw stores DEEP_ARCHIVE objects as STANDARD: nothing to thaw, no restore sent."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    url = s3_server.url(s3_server.make_bucket(), storage_class="DEEP_ARCHIVE", thaw_poll=0.01)
    st = open_storage(url, name="cold")
    for name in ("data/aa/1", "data/bb/2"):
        st.put(name, b"pack")
    calls: list[str] = []
    for operation in ("HeadObject", "RestoreObject"):
        st.client.meta.events.register(  # type: ignore[attr-defined]
            f"provide-client-params.s3.{operation}",
            lambda params, model, **_: calls.append(model.name),
        )
    reports: list[ThawProgress] = []
    thaw_packs(st, ["data/aa/1", "data/bb/2", "data/cc/missing"], reports.append)
    assert sorted(calls) == ["HeadObject"] * 3
    assert reports == []
    assert st.get("data/bb/2") == b"pack"


# -- prune through the CLI leaves locked objects and says so ----------------------------------


def test_prune_leaves_locked_objects_in_place_and_says_until_when(
    site: Site, lock_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = lock_bucket(lock_server)
    site.env.update(lock_server.env())
    url = lock_server.url(bucket, "candle", lock_days=1)
    src = tmp_path / "src"
    src.mkdir()
    site.write_config(
        paths=[src],
        source_extra="retention = { daily = 1 }",
        targets=f'[[targets]]\nname = "vault"\nurl = "{url}"',
    )
    site.run("init")
    for day in ("2026-03-01", "2026-03-02"):
        (src / "day.txt").write_text(f"{day}\n" * 1000)
        site.env["EMBERKEEP_NOW"] = f"{day}T02:00:00Z"
        site.run("backup", "-q")
    first, second = site.snapshots()
    # A pack a crashed backup left behind: no index lists it, so prune condemns and deletes it.
    for key, value in lock_server.env().items():
        monkeypatch.setenv(key, value)
    orphan = "data/ab/ab" + "0" * 62
    open_storage(url, name="vault").put(orphan, b"left by a crash")

    def stored() -> set[str]:
        listing = lock_server.client().list_objects_v2(Bucket=bucket, Prefix="candle/")
        return {o["Key"] for o in listing.get("Contents", [])}

    before = stored()

    proc = site.run("prune", "--grace", "0s")  # exit 0: a lock is not an error
    said = re.search(r"(\d+) objects are still under S3 Object Lock until (\S+Z)", proc.stdout)
    assert said, proc.stdout
    until = datetime.fromisoformat(said[2].replace("Z", "+00:00"))
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1)
    # Retention drops the first snapshot, but it is locked: kept, with all it references.
    assert f"keep   {first['id'][:12]}" in proc.stdout
    assert "locked by S3 Object Lock until" in proc.stdout
    assert [s["id"] for s in site.snapshots()] == [first["id"], second["id"]]
    # The orphan, the index files, the snapshots: all still there; the orphan stays condemned.
    # Plus the sealed record of what the prune set out to delete (written before deleting;
    # it excuses only snapshots that are actually gone, repository/forgotten.py).
    after = stored()
    added = after - before
    records = {k for k in added if k.startswith("candle/forgotten/")}
    assert before <= after and added - records == {f"candle/trash/{orphan}"}
    assert len(records) == 1, added
    assert f"candle/{orphan}" in before
    # Again (the exclusive lease is taken again, on a versioned bucket too), as JSON.
    result = site.json("prune", "--grace", "0s")["vault"]
    assert result["objects_locked"] == int(said[1]) >= 4  # snapshot, 2 index files, orphan
    assert result["packs_deleted"] == 0
    assert [d["action"] for d in result["snapshots"]] == ["keep", "keep"]
    assert any("S3 Object Lock" in m for m in result["messages"])
    site.run("check")
