"""Point-in-time recovery (README, "Point-in-time recovery"): the oplog archiver, restores
to a point, MongoDB's oplog shapes, and hostile slices. Against FerretDB 1.24 with its
oplog; MongoDB-shaped entries (transactions, DDL) are inserted into its capped
``local.oplog.rs`` by the tests, and ``$v: 2`` diffs (FerretDB refuses ``$`` keys there)
go through the replay path directly."""

from __future__ import annotations

import itertools
import json
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Timestamp
from conftest import Site
from mongo_helpers import mongo_site
from pymongo import MongoClient
from robustness_helpers import popen
from servers_mongo import MongoTestServer, client_of, module_server

from emberkeep.demo.oplogwriter import Writer, live_entries
from emberkeep.errors import IntegrityError
from emberkeep.sources.mongodb.oplog import Oplog, Replayer
from emberkeep.sources.mongodb.oplogcmd import Transactions, UnsupportedEntry
from emberkeep.sources.mongodb.optime import LAST_INC
from emberkeep.sources.mongodb.pitr import SliceInfo, chains, entry_digest, slice_entries

PITR = '[sources.pitr]\nenabled = true\nslice = "1s"\nmax_lag = "1m"\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTestServer]:
    yield from module_server(tmp_path_factory, "mongo-pitr", 16 << 20)


@pytest.fixture(scope="module")
def client(server: MongoTestServer) -> Iterator[MongoClient[Any]]:
    yield from client_of(server)


_names = iter(range(1, 1 << 20))


@pytest.fixture
def db_name(client: MongoClient[Any]) -> Iterator[str]:
    name = f"pitr{next(_names)}"
    yield name
    for db in client.list_database_names():
        if db.startswith(name):
            client.drop_database(db)


def server_second(client: MongoClient[Any]) -> int:
    return int(client.admin.command("hello")["localTime"].timestamp())


def wait_settled(client: MongoClient[Any], ts: Timestamp) -> None:
    """Until the server's clock is past the second after ``ts`` (the archiver's settled
    point then includes it): a condition on the server's clock, not a guess of a delay."""
    while server_second(client) <= ts.time + 1:
        time.sleep(0.05)


SYNTHETIC_INC = 1 << 31


def insert_entries(client: MongoClient[Any], entries: list[dict[str, Any]], after: int) -> int:
    """Insert MongoDB-shaped entries into the oplog in one go, timestamped ``(S-1, 2^31+k)``
    where ``S`` is the server's second, once ``S-1`` is past second ``after``. FerretDB logs
    an insert into ``local.oplog.rs`` itself as an entry of the current second, written
    after the inserted ones: so they come after every earlier entry and before those.
    Returns ``S-1``."""
    while server_second(client) - 1 <= after:
        time.sleep(0.05)
    second = server_second(client) - 1
    for k, entry in enumerate(entries, start=1):
        entry["ts"] = Timestamp(second, SYNTHETIC_INC + k)
    client.local["oplog.rs"].insert_many(entries)
    return second


def docs(client: MongoClient[Any], db: str) -> dict[str, dict[Any, dict[str, Any]]]:
    return {
        name: {d["_id"]: d for d in client[db][name].find()}
        for name in sorted(client[db].list_collection_names())
    }


# -- chains and slices, refused by name -------------------------------------------------


def _info(n: int, start: int, end: int, chain: str = "b" * 64, entries: int = 0) -> SliceInfo:
    return SliceInfo(chain, n, Timestamp(start, 1), Timestamp(end, 1), entries, id=f"{n:064}")


def test_a_chain_with_a_gap_a_repeat_or_a_forged_link_is_refused_by_name() -> None:
    good = [_info(0, 10, 20), _info(1, 20, 30), _info(2, 30, 40)]
    [chain] = chains(good)
    assert (chain.start, chain.end) == (Timestamp(10, 1), Timestamp(40, 1))
    with pytest.raises(IntegrityError, match="a gap in the chain"):
        chains([good[0], good[2]])
    [pruned] = chains(good[1:])  # retention took #0: the chain begins at #1
    assert pruned.start == Timestamp(20, 1)
    with pytest.raises(IntegrityError, match="repeats"):
        chains([*good, _info(1, 20, 30)])
    with pytest.raises(IntegrityError, match="the chain is broken"):
        chains([good[0], _info(1, 21, 30)])
    with pytest.raises(IntegrityError, match="inside the chain of base"):
        chains([*good, _info(0, 35, 50, chain="c" * 64)])


def test_slice_entries_out_of_order_beyond_bounds_or_miscounted_are_refused() -> None:
    def raw(t: int, i: int) -> bytes:
        return bson.encode({"ts": Timestamp(t, i), "op": "n", "ns": "", "o": {}})

    entries = [raw(11, 1), raw(12, 1), raw(20, 1)]
    info = SliceInfo("b" * 64, 0, Timestamp(10, 1), Timestamp(20, 1), 3, entry_digest(entries[-1]))
    assert list(slice_entries(entries, info)) == entries
    with pytest.raises(IntegrityError, match="out of order"):
        list(slice_entries([entries[1], entries[0], entries[2]], info))
    with pytest.raises(IntegrityError, match="beyond the slice's end"):
        list(slice_entries([*entries, raw(21, 1)], info))
    with pytest.raises(IntegrityError, match="holds 2 entries"):
        list(slice_entries(entries[:2], info))
    forged = SliceInfo("b" * 64, 0, Timestamp(10, 1), Timestamp(20, 1), 3, "0" * 32)
    with pytest.raises(IntegrityError, match="not the one its header names"):
        list(slice_entries(entries, forged))


def test_a_bad_pitr_setting_is_a_config_error_naming_it(site: Site) -> None:
    source = '[[sources]]\nname = "db"\ntype = "mongodb"\n[sources.pitr]\nslice = "soon"\n'
    site.write_config(extra_sources=source)
    proc = site.run("status", ok=False)
    assert proc.returncode == 2 and "pitr.slice" in proc.stderr and "soon" in proc.stderr


def test_retention_keeps_the_slices_that_extend_a_kept_base() -> None:
    from emberkeep.config import Retention
    from emberkeep.policy import retention
    from emberkeep.repository.snapshot import Snapshot

    def header(day: int, source: str, kind: str, extra: dict[str, Any]) -> Snapshot:
        when = datetime(2026, 3, day, 2, tzinfo=UTC)
        return Snapshot(source, kind, when, "h", b"", b"", extra=extra, id=f"{source}-{day}")

    def point(day: int) -> dict[str, int]:
        return {"t": int(datetime(2026, 3, day, 2, tzinfo=UTC).timestamp()), "i": 1}

    bases = [header(d, "db", "mongodb", {"mongodb": {"point_in_time": True,
                                                     "oplog_end": point(d)}})
             for d in (1, 2, 3)]  # fmt: skip
    slices = [
        header(d, "db@oplog", "mongodb-oplog", {"pitr": {"start": point(d - 1), "end": point(d)}})
        for d in (2, 3, 4)
    ]
    now = datetime(2026, 3, 4, 3, tzinfo=UTC)
    kept = retention.keep([*bases, *slices], now, {"db": Retention(daily=2)})
    assert sorted(kept) == ["db-2", "db-3", "db@oplog-3", "db@oplog-4"]  # day 2's slice: no
    assert kept["db@oplog-3"] == retention.SLICE_EXTENDS
    everything = retention.keep([*bases, *slices], now, {"db": None})
    assert len(everything) == 6


# -- transactions, unit level -----------------------------------------------------------


def _txn(ts: int, ops: list[dict[str, Any]], *, txn: int, prev: int = 0, **flags: Any) -> dict:
    return {
        "ts": Timestamp(ts, 1),
        "op": "c",
        "ns": "admin.$cmd",
        "o": {"applyOps": ops, **flags},
        "lsid": {"id": bson.Binary(b"s" * 16, 4)},
        "txnNumber": txn,
        "prevOpTime": {"ts": Timestamp(prev, 1 if prev else 0), "t": 1},
    }


def test_transactions_unpack_committed_only() -> None:
    ins = {"op": "i", "ns": "d.a", "o": {"_id": 1}}
    t = Transactions()
    assert [o["o"] for o in t.expand(_txn(5, [ins], txn=1))] == [{"_id": 1}]
    assert t.expand(_txn(6, [ins], txn=2, partialTxn=True)) == []
    done = t.expand(_txn(7, [dict(ins, o={"_id": 2})], txn=2, prev=6, count=2))
    assert [o["o"]["_id"] for o in done] == [1, 2]
    assert t.expand(_txn(8, [ins], txn=3, partialTxn=True)) == []  # never committed
    assert t.left_open == 1 and t.committed == 2
    with pytest.raises(UnsupportedEntry, match="whose first entries are not in the archive"):
        Transactions().expand(_txn(9, [ins], txn=4, prev=3))


# -- the replay path: $v: 2 diffs, which FerretDB's oplog cannot hold ------------------


def test_v2_diffs_replay_on_the_path_that_restores_points(
    client: MongoClient[Any], db_name: str
) -> None:
    client[db_name].a.insert_one({"_id": 1, "keep": 1, "gone": 2, "sub": {"x": 1}, "arr": [1, 2]})
    diff = {"d": {"gone": False}, "u": {"keep": 5}, "i": {"new": 7},
            "ssub": {"i": {"y": 2}}, "sarr": {"a": True, "l": 1}}  # fmt: skip
    entry = {"ts": Timestamp(1, 1), "op": "u", "ns": f"{db_name}.a", "o": {"$v": 2, "diff": diff},
             "o2": {"_id": 1}}  # fmt: skip
    Replayer(client, lambda db, coll: (db, coll), ddl=True).replay(iter([entry]))
    assert client[db_name].a.find_one({"_id": 1}) == {
        "_id": 1, "keep": 5, "sub": {"x": 1, "y": 2}, "arr": [1], "new": 7
    }  # fmt: skip


def test_a_dump_window_holding_a_transaction_includes_it(
    client: MongoClient[Any], db_name: str
) -> None:
    """The window query used to keep only entries of the selected databases' namespaces,
    which left out transactions (``admin.$cmd``)."""
    client[db_name].a.insert_one({"_id": 0})
    ops = [{"op": "i", "ns": f"{db_name}.a", "o": {"_id": 1}},
           {"op": "i", "ns": "otherdb.x", "o": {"_id": 1}}]  # fmt: skip
    second = insert_entries(client, [_txn(0, ops, txn=1)], server_second(client))
    start, end = Timestamp(second, SYNTHETIC_INC), Timestamp(second, LAST_INC)
    window = [e for b in Oplog(client).window_batches(start, end, [db_name])
              for e in bson.decode_all(b)]  # fmt: skip
    assert [e["ns"] for e in window] == ["admin.$cmd"]
    stats = Replayer(client, lambda db, coll: (db, coll) if db == db_name else None).replay(
        iter(window)
    )
    assert sorted(d["_id"] for d in client[db_name].a.find()) == [0, 1]
    assert "x" not in client.otherdb.list_collection_names()  # filtered by database
    assert stats.transactions == 1


# -- MongoDB-shaped entries through the archiver and a restore to each point ---------------


def test_transactions_ddl_and_rename_restore_exactly_or_are_refused_by_name(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    db = client[db_name]
    db.a.insert_many([{"_id": i, "v": "a"} for i in range(3)])
    db.b.insert_many([{"_id": i, "v": "b"} for i in range(3)])
    mongo_site(site, server.uri, [db_name], PITR)
    [out] = site.json("backup")
    base_second = out["snapshot"]["extra"]["mongodb"]["oplog_end"]["t"]
    lsid = {"id": bson.Binary(b"t" * 16, 4)}

    def entry(i: int, op: str, ns: str, o: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {"ts": i, "op": op, "ns": ns, "o": o, **more}  # ts: set by insert_entries

    def txn(i: int, ops: list[dict[str, Any]], number: int, prev: int = 0, **flags: Any) -> dict:
        prev_op = {"ts": Timestamp(1 if prev else 0, prev)}  # only "is there one" is read
        o = {"applyOps": ops, **flags}
        return entry(i, "c", "admin.$cmd", o, lsid=lsid, txnNumber=number, prevOpTime=prev_op)

    a, b, c, d = (f"{db_name}.{n}" for n in "abcd")
    entries = [
        # 1: a committed transaction across two collections
        txn(
            1,
            [
                {"op": "i", "ns": a, "o": {"_id": 10}},
                {"op": "u", "ns": b, "o": {"_id": 0, "v": "txn"}, "o2": {"_id": 0}},
            ],
            1,
        ),
        # 2-3: a transaction in two entries, committed by the second
        txn(2, [{"op": "d", "ns": a, "o": {"_id": 1}}], 2, partialTxn=True),
        txn(3, [{"op": "i", "ns": b, "o": {"_id": 20}}], 2, prev=2, count=2),
        # 4: a transaction never committed (aborted: no commit entry)
        txn(4, [{"op": "i", "ns": a, "o": {"_id": 99}}], 3, partialTxn=True),
        # 5-8: DDL: create, an index, a document, rename
        entry(5, "c", f"{db_name}.$cmd", {"create": "c"}),
        entry(
            6,
            "c",
            f"{db_name}.$cmd",
            {"createIndexes": "c", "v": 2, "key": {"k": 1}, "name": "k_1"},
        ),
        entry(7, "i", c, {"_id": 1, "k": "c"}),
        entry(8, "c", f"{db_name}.$cmd", {"renameCollection": c, "to": d}),
        entry(9, "c", f"{db_name}.$cmd", {"drop": "b"}),
        # 10: a command no restore can replay exactly here
        entry(10, "c", f"{db_name}.$cmd", {"collMod": "a", "validator": {}}),
    ]
    s = insert_entries(client, entries, base_second)
    wait_settled(client, Timestamp(s + 1, 0))  # FerretDB's own entries of the insert, too
    site.run("oplog", "run", "--once")

    def restore_at(i: int, ok: bool = True) -> Any:
        name = f"{db_name}_at{i}"
        return name, site.run(
            "restore", "--at-op", f"{s}:{SYNTHETIC_INC + i}", "--to-uri", server.uri,
            "--ns-from", db_name, "--ns-to", name, ok=ok,
        )  # fmt: skip

    base: dict[str, dict[int, dict[str, Any]]] = {
            "a": {i: {"_id": i, "v": "a"} for i in range(3)},
            "b": {i: {"_id": i, "v": "b"} for i in range(3)}}  # fmt: skip
    at1 = {"a": {**base["a"], 10: {"_id": 10}}, "b": {**base["b"], 0: {"_id": 0, "v": "txn"}}}
    at3 = {"a": {k: v for k, v in at1["a"].items() if k != 1},
           "b": {**at1["b"], 20: {"_id": 20}}}  # fmt: skip
    expected = {
        0: base,
        1: at1,
        2: at1,  # the partial entry alone shows nothing
        3: at3,
        4: at3,  # never committed: left out
        7: {**at3, "c": {1: {"_id": 1, "k": "c"}}},
        8: {**at3, "d": {1: {"_id": 1, "k": "c"}}},
        9: {"a": at3["a"], "d": {1: {"_id": 1, "k": "c"}}},
    }
    for i, want in expected.items():
        name, proc = restore_at(i)
        assert docs(client, name) == want, (i, proc.stdout)
    assert (
        "k_1" in client[f"{db_name}_at8"].d.index_information()
    )  # the index came along the rename
    name, refused = restore_at(10, ok=False)
    assert refused.returncode == 1
    assert (
        f"oplog entry {s}:{SYNTHETIC_INC + 10} (c collMod on {db_name}.$cmd)" in refused.stderr
    ), refused.stderr


# -- the archiver under writes ---------------------------------------------------------


def slice_headers(site: Site) -> list[dict[str, Any]]:
    return [s["extra"]["pitr"] | {"id": s["id"]} for s in site.json("snapshots")
            if s["source"] == "db@oplog"]  # fmt: skip


def test_archiver_killed_at_ten_moments_resumes_without_gap_or_duplicate(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    writer = Writer(client, db_name, initial=20, seed=3)
    mongo_site(site, server.uri, [db_name], PITR + "max_entries = 4\n")
    site.run("backup")
    rng = random.Random(18)
    kills = [(rng.choice(["read", "sealing", "committed"]), rng.randint(1, 3)) for _ in range(10)]
    died = 0
    for step, count in kills:
        writer.write(10)  # about three slices of four entries for this run
        wait_settled(client, live_entries(client, db_name)[-1])
        site.env["EMBERKEEP_TEST_PITR_KILL"] = f"{step}:{count}"
        proc = popen(site, "oplog", "run", "--once", "-q")
        proc.wait(timeout=120)
        died += proc.returncode == -signal.SIGKILL
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read() if proc.stderr else ""
    site.env.pop("EMBERKEEP_TEST_PITR_KILL")
    site.run("oplog", "run", "--once")
    assert died >= 6, f"only {died} runs were killed at their point: {kills}"
    # every entry after the base's point is in exactly one slice, in order
    headers = sorted(slice_headers(site), key=lambda h: h["n"])
    assert [h["n"] for h in headers] == list(range(len(headers)))
    for before, after in itertools.pairwise(headers):
        assert before["end"] == after["start"]
    start = Timestamp(headers[0]["start"]["t"], headers[0]["start"]["i"])
    wanted = [ts for ts in live_entries(client, db_name) if ts > start]
    archived = sum(h["entries"] for h in headers)
    assert archived == len(wanted) == 100
    name = f"{db_name}_end"
    end = wanted[-1]
    site.run("restore", "--at-op", f"{end.time}:{end.inc}", "--to-uri", server.uri,
             "--ns-from", db_name, "--ns-to", name)  # fmt: skip
    assert {d["_id"]: d for d in client[name].live.find()} == writer.model
    # a point outside the window, and mistakes of the flags: refused, the window printed
    early = site.run("restore", "--at", "2020-01-01T00:00:00Z", "--to-uri", server.uri, ok=False)
    assert early.returncode == 2
    assert "is outside what the archived oplog of source db covers" in early.stderr
    assert f"({start.time}:{start.inc}) to" in early.stderr, early.stderr
    both = site.run("restore", "latest", "--at-op", "1:1", "--to-uri", server.uri, ok=False)
    assert both.returncode == 2 and "give no SNAPSHOT" in both.stderr
    bad = site.run("restore", "--at-op", "yesterday", "--to-uri", server.uri, ok=False)
    assert bad.returncode == 2 and "give an oplog timestamp as T:I" in bad.stderr
    # a slice taken out of the repository: the chain has a gap, refused by name
    middle = headers[len(headers) // 2]
    [gone] = [p for p in (site.repo / "snapshots").rglob(middle["id"])]
    gone.unlink()
    holed = site.run("restore", "--at-op", f"{end.time}:{end.inc}", "--to-uri", server.uri,
                     "--ns-from", db_name, "--ns-to", f"{db_name}_holed", ok=False)  # fmt: skip
    assert holed.returncode == 1
    assert f"follows #{middle['n'] - 1}: a gap in the chain" in holed.stderr, holed.stderr
    assert f"{db_name}_holed" not in client.list_database_names()  # refused before writing


def test_an_oplog_rolled_over_while_stopped_is_a_gap_and_a_new_chain_starts(
    site: Site, tmp_path: Path
) -> None:
    # FerretDB trims capped collections in the background: every 100 ms here
    trim = ("--test-capped-cleanup-interval=100ms", "--test-capped-cleanup-percentage=50")
    with MongoTestServer(tmp_path / "srv", oplog_bytes=64 << 10, extra_args=trim) as small:
        c = small.client()
        c.shop.a.insert_many([{"_id": i} for i in range(10)])
        mongo_site(site, small.uri, ["shop"], PITR)
        site.run("backup")
        c.shop.a.insert_one({"_id": "before"})
        wait_settled(c, live_point(c))
        site.run("oplog", "run", "--once")
        assert site.run("oplog", "status").returncode == 0
        last = live_point(c)
        while _oldest_ts(c) <= last:  # the archiver stopped
            c.shop.churn.insert_many([{"pad": "p" * 1000} for _ in range(20)])
        wait_settled(c, live_point(c))
        run = site.run("oplog", "run", "--once")
        assert "newer than the last one archived" in run.stderr, run.stderr
        assert "a new chain starts from a new base backup" in run.stderr
        status = site.run("oplog", "status", "--json", ok=False)
        assert status.returncode == 1
        report = json.loads(status.stdout)
        [gap] = report["gaps"]
        assert len(report["chains"]) == 2 and report["chains"][1]["base"] == gap["new_chain"]
        bases = [s for s in site.json("snapshots") if s["source"] == "db"]
        assert len(bases) == 2 and bases[-1]["id"] == gap["new_chain"]  # a new base was taken
        whole = site.run("status", "--json", ok=False)
        assert whole.returncode == 1
        [db] = json.loads(whole.stdout)["sources"]
        assert [g["after"] for g in db["pitr"]["gaps"]] == [gap["after"]] and db["pitr"][
            "lag_seconds"
        ] is not None
        assert any("the oplog archive has a gap" in b for b in json.loads(whole.stdout)["breaches"])
        assert "oplog status --source db" in site.run("runbook").stdout
        metrics = site.run("metrics").stdout
        assert 'emberkeep_pitr_gaps{source="db"} 1' in metrics
        assert 'emberkeep_pitr_chains{source="db"} 2' in metrics
        assert 'emberkeep_pitr_lag_seconds{source="db"}' in metrics
        failed = [e for e in site.json("log") if e["kind"] == "oplog"]
        assert failed and failed[0]["outcome"] == "failed"  # journaled: it alerts
        c.close()


def live_point(client: MongoClient[Any]) -> Timestamp:
    """The newest entry (the oplog is small here: reading it whole is cheap)."""
    return max(e["ts"] for e in client.local["oplog.rs"].find({}, {"ts": 1}))


WRITE_SECONDS = 15  # CI; bench/pitr.py runs the 3 minutes
OPS_PER_SECOND = 50


def test_restores_to_ten_random_points_equal_the_writers_model_there(
    site: Site, server: MongoTestServer, client: MongoClient[Any], db_name: str
) -> None:
    writer = Writer(client, db_name, initial=100, seed=11)
    mongo_site(site, server.uri, [db_name], PITR)
    [out] = site.json("backup")
    base = out["snapshot"]["extra"]["mongodb"]["oplog_end"]
    archiver = popen(site, "oplog", "run", "--json")
    try:
        for _ in range(WRITE_SECONDS * OPS_PER_SECOND):  # a count, not a deadline: a loaded
            writer.write(1)  # machine writes as many entries, only more slowly
            time.sleep(1 / OPS_PER_SECOND)  # pacing the writer, not waiting for a result
        entries = [
            ts for ts in live_entries(client, db_name) if ts > Timestamp(base["t"], base["i"])
        ]
        assert len(entries) == len(writer.log) > 10 * WRITE_SECONDS
        last = entries[-1]
        while True:  # until the running archiver has sealed the last write
            window = site.json("oplog", "status")["window"]
            end = [int(x) for x in window["to"].split(":")]
            if Timestamp(*end) >= last:
                break
            assert archiver.poll() is None, archiver.stderr.read() if archiver.stderr else ""
            time.sleep(0.5)
    finally:
        archiver.send_signal(signal.SIGINT)
        archiver.wait(timeout=300)  # it seals what it holds first; slow on a loaded machine
    assert archiver.returncode == 130
    rng = random.Random(2026)
    by_op = [rng.randrange(1, len(entries) + 1) for _ in range(5)]
    # whole seconds the archive covers to their end: the last write's second is covered
    # only up to that write until the archiver's next empty slice (README)
    seconds = [rng.randint(entries[0].time, last.time - 1) for _ in range(5)]
    points: list[tuple[list[str], int]] = []
    for k in by_op:  # inclusive: the state after the k-th write
        points.append((["--at-op", f"{entries[k - 1].time}:{entries[k - 1].inc}"], k))
    for second in seconds:  # the whole second: every write logged in it
        moment = datetime.fromtimestamp(second + 0.5, UTC).isoformat()
        points.append((["--at", moment], sum(1 for ts in entries if ts.time <= second)))
    for n, (flag, k) in enumerate(points):
        name = f"{db_name}_p{n}"
        done = site.json("restore", *flag, "--to-uri", server.uri, "--ns-from", db_name,
                         "--ns-to", name)  # fmt: skip
        got = {d["_id"]: d for d in client[name].live.find()}
        want = writer.state_after(k)
        assert got == want, (flag, k, done["point"])
        if flag[0] == "--at-op":
            assert done["point"]["last_applied"] == flag[1]
        client.drop_database(name)


def _oldest_ts(client: MongoClient[Any]) -> Any:
    """The oldest entry's ``ts`` still in the server's oplog."""
    first = client.local["oplog.rs"].find_one({}, {"ts": 1})
    assert first is not None, "the oplog is empty"
    return first["ts"]
