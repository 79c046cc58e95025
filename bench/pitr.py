"""The oplog archiver's lag under a steady writer, and 10 random points restored and checked.

Usage::

    PYTHONPATH=src .venv/bin/python bench/pitr.py [--seconds 180] [--rate 50] [--slice 5s]
                                                  [--seed 2026] [--work DIR]

A FerretDB 1.24 (SQLite, with its oplog) is started in the work dir; a site is made with one
mongodb source with ``[sources.pitr]``; a base backup is taken; then ``emberkeep oplog run
--json`` runs while one writer (``emberkeep.demo.oplogwriter.Writer``, the one
``tests/test_pitr.py`` uses) inserts, updates (``$set``, ``$unset``) and deletes at
``--rate`` operations a second for ``--seconds``. Every write's wall time is logged, and
every slice the archiver prints is timed as it arrives.

The lag is measured as the issue defines it, the newest entry on the server to the newest
archived one, sampled every 0.25 s over the run: at a sample time ``t``, the wall time of
the newest write before ``t`` minus that of the newest write some slice printed before ``t``
held (0 when every write is archived). It prints the lag's p50, p95 and max, and how long
each write waited for its slice (p50, p95).

Then 10 points are drawn (``--seed``, printed) in the archived window, as the test draws
them: 5 by ``(T, I)`` (``restore --at-op``, inclusive) and 5 by wall time (``restore --at``
in the middle of a whole second the archive covers). Each write is paired with its oplog
``(T, I)`` by reading the collection's entries back (one writer: the k-th entry is the k-th
write), so the model is known at every point. Each point is restored into its own scratch
database and compared with the writer's model there, document by document; a table
(point, how chosen, writes, documents, equal, restore seconds) and the JSON result are
printed. Exit 1 if any point differs (that database is kept to look at).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emberkeep.demo.oplogwriter import Writer

ROOT = Path(__file__).resolve().parent.parent
DB = "pitrbench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=50.0, help="writes a second")
    parser.add_argument("--slice", default="5s", help="[sources.pitr] slice")
    parser.add_argument("--work", type=Path, default=Path("/tmp/emberkeep-pitr-bench"))
    parser.add_argument("--seed", type=int, default=2026, help="seed of the restored points")
    args = parser.parse_args(argv)

    from bson import Timestamp

    from emberkeep.demo.mongoserver import MongoServer
    from emberkeep.demo.oplogwriter import Writer, live_entries

    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    with MongoServer(args.work / "server", oplog_bytes=256 << 20) as server:
        client = server.client()
        site = _Site(args.work / "site", server.uri, args.slice)
        writer = Writer(client, DB, initial=500, seed=1)
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
        writes: list[float] = []  # monotonic time of each write, in order
        started = time.monotonic()
        deadline = started + args.seconds
        while (now := time.monotonic()) < deadline:
            writer.write(1)
            writes.append(time.monotonic())
            time.sleep(max(0.0, started + len(writes) / args.rate - time.monotonic()))
        point = Timestamp(base["t"], base["i"])
        stamps = [ts for ts in live_entries(client, DB) if ts > point]
        assert len(stamps) == len(writes) == len(writer.log), (len(stamps), len(writes))
        while not slices or slices[-1][1] < stamps[-1]:
            time.sleep(0.25)  # the archiver finishing the last slice (measured, not raced)
            if archiver.poll() is not None:
                raise SystemExit(
                    f"the archiver stopped: {archiver.stderr.read() if archiver.stderr else ''}"
                )
        archiver.send_signal(signal.SIGINT)
        archiver.wait(timeout=60)
        lags, waits = _lags(writes, stamps, slices, started, now)
        print(f"points drawn with --seed {args.seed}", file=sys.stderr)
        rows = []
        for n, (flag, how, k) in enumerate(_points(stamps, random.Random(args.seed))):
            rows.append(_restore_and_compare(site, client, server.uri, n, flag, how, k, writer))
            print(_row(rows[-1]), file=sys.stderr, flush=True)
        print(_table(rows))
        equal = all(r["equal"] for r in rows)
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
            "seed": args.seed,
            "points": rows,
            "points_equal": f"{sum(r['equal'] for r in rows)}/{len(rows)}",
        }
        print(json.dumps(result, indent=2))
        client.close()
        return 0 if equal else 1


def _points(stamps: list[Any], rng: random.Random) -> list[tuple[list[str], str, int]]:
    """Five points by ``(T, I)`` and five by wall time, as ``tests/test_pitr.py`` draws them.

    Each is ``(restore flags, how chosen, k)``: the restore must equal the writer's model
    after its first ``k`` writes. By ``(T, I)`` the point is inclusive, the state after the
    k-th write. By wall time, a whole second the archive covers to its end (the last write's
    second is covered only up to that write until the archiver's next empty slice, README),
    restored at its middle: every write logged in that second is in.
    """
    last = stamps[-1]
    by_op = [rng.randrange(1, len(stamps) + 1) for _ in range(5)]
    seconds = [rng.randint(stamps[0].time, last.time - 1) for _ in range(5)]
    points: list[tuple[list[str], str, int]] = []
    for k in by_op:
        points.append((["--at-op", f"{stamps[k - 1].time}:{stamps[k - 1].inc}"], "(T, I)", k))
    for second in seconds:
        moment = datetime.fromtimestamp(second + 0.5, UTC).isoformat()
        k = sum(1 for ts in stamps if ts.time <= second)
        points.append((["--at", moment], "wall time", k))
    return points


def _restore_and_compare(
    site: _Site, client: Any, uri: str, n: int, flag: list[str], how: str, k: int, writer: Writer
) -> dict[str, Any]:
    """Restore one point into its own scratch database and compare it with the model there."""
    name = f"{DB}_p{n}"
    t0 = time.monotonic()
    done = site.json("restore", *flag, "--to-uri", uri, "--ns-from", DB, "--ns-to", name)
    took = time.monotonic() - t0
    got = {d["_id"]: d for d in client[name].live.find()}
    want = writer.state_after(k)
    same = got == want
    if flag[0] == "--at-op":  # the restore stopped at exactly the asked entry
        same = same and done["point"]["last_applied"] == flag[1]
    if same:
        client.drop_database(name)  # kept when it differs, to look at
    return {"point": flag[1], "chosen_by": how, "writes": k, "documents": len(got),
            "expected_documents": len(want), "equal": same,
            "restore_seconds": round(took, 2)}  # fmt: skip


_HEAD = ("point", "how chosen", "writes", "documents", "equal", "restore s")


def _row(r: dict[str, Any]) -> str:
    cells = (r["point"], r["chosen_by"], r["writes"], r["documents"],
             "yes" if r["equal"] else "NO", f"{r['restore_seconds']:.2f}")  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(_HEAD) + " |\n|" + " --- |" * len(_HEAD)
    return "\n".join([head, *(_row(r) for r in rows)])


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
