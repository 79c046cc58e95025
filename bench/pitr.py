"""The oplog archiver's lag under a steady writer, and a restore to the end checked.

Usage::

    PYTHONPATH=src .venv/bin/python bench/pitr.py [--seconds 180] [--rate 50] [--slice 10s]
                                                  [--work DIR]

A FerretDB 1.24 (SQLite, with its oplog) is started in the work dir; a site is made with one
mongodb source with ``[sources.pitr]``; a base backup is taken; then ``emberkeep oplog run
--json`` runs while one writer inserts, updates (``$set``, ``$unset``) and deletes at
``--rate`` operations a second for ``--seconds``. Every write's wall time is logged, and
every slice the archiver prints is timed as it arrives.

The lag is measured as the issue defines it, the newest entry on the server to the newest
archived one, sampled every 0.25 s over the run: at a sample time ``t``, the wall time of
the newest write before ``t`` minus that of the newest write some slice printed before ``t``
held (0 when every write is archived). It prints the lag's p50, p95 and max, and how long
each write waited for its slice (p50, p95). Then the source is restored to the last write
(``--at-op``) and compared with the writer's model, document by document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DB = "pitrbench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=50.0, help="writes a second")
    parser.add_argument("--slice", default="5s", help="[sources.pitr] slice")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emberkeep-pitr-bench"))
    args = parser.parse_args(argv)

    from bson import Timestamp

    from emberkeep.demo.mongoserver import MongoServer

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    with MongoServer(args.work / "server", oplog_bytes=256 << 20) as server:
        client = server.client()
        site = _Site(args.work / "site", server.uri, args.slice)
        coll = client[DB].live
        model: dict[int, dict[str, Any]] = {i: {"_id": i, "v": 0} for i in range(500)}
        coll.insert_many([dict(d) for d in model.values()])
        base = site.json("backup")[0]["snapshot"]["extra"]["mongodb"]["oplog_end"]
        archiver = site.popen("oplog", "run", "--json")
        slices: list[tuple[float, Timestamp]] = []  # (monotonic arrival, end)

        def read_slices() -> None:
            assert archiver.stdout is not None
            for line in archiver.stdout:
                end = json.loads(line)["end"]
                slices.append((time.monotonic(), Timestamp(end["t"], end["i"])))

        reader = threading.Thread(target=read_slices, daemon=True)
        reader.start()
        rng = random.Random(1)
        writes: list[float] = []  # monotonic time of each write, in order
        next_id = len(model)
        started = time.monotonic()
        deadline = started + args.seconds
        while (now := time.monotonic()) < deadline:
            kind = rng.choice("iuxd") if len(model) > 50 else "i"
            key = rng.choice(list(model)) if kind != "i" else next_id
            if kind == "i":
                model[key] = {"_id": key, "v": len(writes) + 1, "tag": "new"}
                coll.insert_one(dict(model[key]))
                next_id += 1
            elif kind == "u":
                model[key] = model[key] | {"v": len(writes) + 1}
                coll.update_one({"_id": key}, {"$set": {"v": len(writes) + 1}})
            elif kind == "x":
                # $set too: an update that changes nothing is not logged
                model[key] = {k: v for k, v in model[key].items() if k != "tag"} | {
                    "v": len(writes) + 1
                }
                coll.update_one(
                    {"_id": key}, {"$set": {"v": len(writes) + 1}, "$unset": {"tag": 1}}
                )
            else:
                del model[key]
                coll.delete_one({"_id": key})
            writes.append(time.monotonic())
            time.sleep(max(0.0, started + len(writes) / args.rate - time.monotonic()))
        oplog = client.local["oplog.rs"]
        point = Timestamp(base["t"], base["i"])
        stamps = [
            e["ts"] for e in oplog.find({"ns": f"{DB}.live", "ts": {"$gt": point}}, {"ts": 1})
        ]
        assert len(stamps) == len(writes), (len(stamps), len(writes))
        while not slices or slices[-1][1] < stamps[-1]:
            time.sleep(0.25)  # the archiver finishing the last slice (measured, not raced)
            if archiver.poll() is not None:
                raise SystemExit(
                    f"the archiver stopped: {archiver.stderr.read() if archiver.stderr else ''}"
                )
        archiver.send_signal(signal.SIGINT)
        archiver.wait(timeout=60)
        lags, waits = _lags(writes, stamps, slices, started, now)
        last = stamps[-1]
        restored = f"{DB}_restored"
        site.json("restore", "--at-op", f"{last.time}:{last.inc}", "--to-uri", server.uri,
                  "--ns-from", DB, "--ns-to", restored)  # fmt: skip
        got = {d["_id"]: d for d in client[restored].live.find()}
        same = got == model
        result = {
            "seconds": args.seconds,
            "writes": len(writes),
            "rate": round(len(writes) / (now - started), 1),
            "slice": args.slice,
            "slices": len(slices),
            "lag_p50_seconds": round(_pct(lags, 50), 2),
            "lag_p95_seconds": round(_pct(lags, 95), 2),
            "lag_max_seconds": round(max(lags), 2),
            "write_wait_p50_seconds": round(_pct(waits, 50), 2),
            "write_wait_p95_seconds": round(_pct(waits, 95), 2),
            "restore_to_last_write_equal": same,
        }
        print(json.dumps(result, indent=2))
        client.close()
        return 0 if same else 1


def _lags(
    writes: list[float], stamps: list[Any], slices: list[tuple[float, Any]], t0: float, t1: float
) -> tuple[list[float], list[float]]:
    """Samples of the lag every 0.25 s, and each write's wait for its slice (docstring)."""
    archived_at = []  # per write: when the first slice holding it arrived
    s = 0
    for ts in stamps:
        while s < len(slices) and slices[s][1] < ts:
            s += 1
        archived_at.append(slices[s][0])
    lags = []
    t = t0 + 0.25
    while t < t1:
        newest = bisect_right(writes, t) - 1  # the newest write before t
        archived = min(bisect_right(archived_at, t) - 1, newest)  # slices arrive in order
        lag = (
            0.0
            if archived == newest
            else writes[newest] - (writes[archived] if archived >= 0 else t0)
        )
        lags.append(max(lag, 0.0))
        t += 0.25
    waits = [a - w for a, w in zip(archived_at, writes, strict=True)]
    return lags, waits


def _pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


class _Site:
    """A throwaway site: an identity, a config with the source, a local target."""

    def __init__(self, root: Path, uri: str, slice_: str) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.config = root / "emberkeep.toml"
        identity = root / "identity.txt"
        recipient = self._run("keygen", "-o", str(identity), config=False).strip()
        self.config.write_text(
            f'[site]\nname = "pitr-bench"\nstate_dir = "{root / "state"}"\n'
            f'[keys]\nrecipients = ["{recipient}"]\nidentity_file = "{identity}"\n'
            f'[[sources]]\nname = "db"\ntype = "mongodb"\nuri = "{uri}"\ndatabases = ["{DB}"]\n'
            f'[sources.objectives]\nrpo = "1m"\n'
            f'[sources.pitr]\nenabled = true\nslice = "{slice_}"\nmax_lag = "1m"\n'
            f'[[targets]]\nname = "local"\nurl = "file://{root / "repo"}"\n'
        )
        self._run("init")

    def _argv(self, *args: str, config: bool = True) -> list[str]:
        head = [sys.executable, "-m", "emberkeep"]
        return [*head, *(["-c", str(self.config)] if config else []), *args]

    def _run(self, *args: str, config: bool = True) -> str:
        done = subprocess.run(self._argv(*args, config=config), capture_output=True, text=True,
                              env=_env())  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"emberkeep {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self._run(*args, "--json"))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self._argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


if __name__ == "__main__":
    sys.exit(main())
