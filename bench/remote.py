"""Time emberkeep and restic against real SFTP and S3 servers on loopback.

Usage::

    .venv/bin/python bench/remote.py [--size-mb 256] [--repeat 1] [--work DIR] [--targets sftp,s3]
        [--sftp-client openssh|paramiko]

The servers are the ones the storage tests use (``tests/servers.py``): Debian's OpenSSH
``sshd`` with its built-in SFTP server, and versitygw (``scripts/setup --test`` builds it
into the tool cache) with its posix backend, each on a free 127.0.0.1 port with keys and
credentials generated for the run. Both tools write to the same servers:

* sftp: emberkeep ``sftp://USER@127.0.0.1:PORT/DIR?key=..&known_hosts=..&ssh=CLIENT``
  (``--sftp-client``: ``openssh``, the default, runs OpenSSH's client with an ssh config of
  the run's own like restic's below; ``paramiko``, the Python client);
  restic ``sftp:USER@127.0.0.1:/DIR`` with ``-o sftp.command='ssh -p PORT -i KEY ... -s sftp'``
  (OpenSSH's client);
* s3: emberkeep ``s3://BUCKET/emberkeep?endpoint=http://127.0.0.1:PORT&region=us-east-1``;
  restic ``s3:http://127.0.0.1:PORT/BUCKET/restic`` (path-style, region us-east-1); both get
  the server's keys from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.

Sequence: generate the dataset (``bench/dataset.py``) and read it once (page-cache warm-up,
source hashes); then per target, per tool: untimed setup (emberkeep ``keygen`` + config +
``init``; restic ``init --repository-version 2``), (a) first backup, (b) no-change backup,
(c) full restore of the latest snapshot into an empty local dir, verified file by file by
SHA-256 against the source (any difference aborts the run). With ``--repeat N`` this whole
sequence runs N rounds (fresh repositories each round, tools interleaved) and the table
shows the median of each number.

Each command is timed like ``bench/run.py`` does (wall time, CPU and peak RSS from
``os.wait4`` on the child). The servers' CPU time during each command is read from
``/proc`` (sshd: the per-connection processes it reaped; versitygw: its own). Results are
printed as a markdown table and written to ``<work>/results.json`` and ``results.md``.
See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/servers.py

import dataset  # sibling module; bench/ is not a package
import run as harness  # bench/run.py: Runner, tool classes, manifest/verify, table helpers
import servers  # tests/servers.py

MiB = harness.MiB
DEFAULT_WORK = Path("/tmp/emberkeep-bench-remote")
ALL_TARGETS = ("sftp", "s3")
SFTP_CLIENTS = ("openssh", "paramiko")  # emberkeep's ?ssh= for sftp
TOOLS = ("emberkeep", "restic")
STEPS = ("first", "nochange", "restore")
STEP_TITLES = harness.STEP_TITLES
CLK_TCK = os.sysconf("SC_CLK_TCK")
BenchError = harness.BenchError


# --------------------------------------------------------------------------- servers


class Servers:
    """The running sshd and versitygw, and how each tool reaches them."""

    def __init__(self, work: Path, targets: list[str], sftp_client: str = "openssh") -> None:
        self.work = work
        self.sftp_client = sftp_client
        self.ssh: servers.SshServer | None = None
        self.s3: servers.S3Server | None = None
        self.buckets: dict[str, str] = {}
        try:
            if "sftp" in targets:
                (work / "sftp-repos").mkdir()
                self.ssh = servers.start_sshd(work / "sshd")
            if "s3" in targets:
                self.s3 = servers.start_versitygw(work / "versitygw")
        except (servers.ServerError, OSError, ValueError) as exc:
            self.stop()
            raise BenchError(f"cannot start the test servers: {exc}") from exc

    def stop(self) -> None:
        for server in (self.ssh, self.s3):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()

    def describe(self) -> dict[str, str]:
        out = {}
        if self.ssh is not None:
            sshd = shutil.which("sshd") or "/usr/sbin/sshd"
            out["sftp"] = f"{sshd} on 127.0.0.1:{self.ssh.port} ({_openssh_version()})"
        if self.s3 is not None:
            version = harness._capture([str(servers.VERSITYGW_BIN), "--version"])
            version = " ".join(version.split())
            out["s3"] = f"{servers.VERSITYGW_BIN} on {self.s3.endpoint} ({version})"
        return out

    def bucket(self, slot: str) -> str:
        """A fresh bucket per tool and round, made up front (no tool is asked to make one)."""
        assert self.s3 is not None
        if slot not in self.buckets:
            try:
                self.buckets[slot] = self.s3.make_bucket(f"bench-{slot}")
            except Exception as exc:  # boto3 missing, or the server refused
                raise BenchError(f"cannot create an S3 bucket on versitygw: {exc}") from exc
        return self.buckets[slot]

    def sftp_dir(self, slot: str) -> Path:
        return self.work / "sftp-repos" / slot

    def repo_path(self, kind: str, slot: str) -> Path:
        """Where the repository lies on the server's disk (for its size)."""
        if kind == "sftp":
            return self.sftp_dir(slot)
        assert self.s3 is not None
        return self.s3.workdir / "data" / self.bucket(slot)

    def cpu_seconds(self, kind: str) -> float:
        """CPU the server has used, including finished children it reaped (sshd sessions)."""
        server = self.ssh if kind == "sftp" else self.s3
        assert server is not None
        if kind == "sftp":
            # A session's sshd processes end right after the client leaves; only reaped
            # children count in cutime/cstime, so give them a moment to finish.
            deadline = time.monotonic() + 10
            while servers._children(server.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # fields[0] is the state (stat field 3): utime, stime, cutime, cstime are 14..17.
        return sum(int(f) for f in fields[11:15]) / CLK_TCK


def _openssh_version() -> str:
    """``ssh -V`` (client and server come from the same Debian OpenSSH); it prints on stderr."""
    try:
        proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (proc.stderr or proc.stdout).strip()


# --------------------------------------------------------------------------- tools


class RemoteEmberkeep(harness.Emberkeep):
    """emberkeep with one sftp:// or s3:// target."""

    def __init__(
        self,
        work: Path,
        data_dir: Path,
        runner: harness.Runner,
        exe: harness.Executable,
        kind: str,
        rnd: int,
        srv: Servers,
    ) -> None:
        super().__init__(work, data_dir, runner, exe)
        tag, slot = f"{kind}-r{rnd}", f"emberkeep-r{rnd}"
        self.name = f"emberkeep-{tag}"  # log file names
        self.kind = kind
        self.state = work / f"ek-state-{tag}"
        self.identity = work / f"identity-{tag}.txt"
        self.config = work / f"emberkeep-{tag}.toml"
        if kind == "sftp":
            assert srv.ssh is not None
            options: dict[str, str] = {"ssh": srv.sftp_client}
            if srv.sftp_client == "openssh":
                # No ~/.ssh/config and no agent, as for restic below.
                config = work / "emberkeep-ssh_config"
                config.write_text("IdentityAgent none\n")
                options["ssh_config"] = str(config)
            self.url = srv.ssh.url(srv.sftp_dir(slot), **options)
        else:
            assert srv.s3 is not None
            self.url = srv.s3.url(srv.bucket(slot), "emberkeep")
            _use_s3(self.env, srv.s3)
        self.repo = srv.repo_path(kind, slot)

    def _config_toml(self, recipient: str) -> str:
        def q(value: str | Path) -> str:
            return json.dumps(str(value))  # a JSON string is a valid TOML basic string

        return (
            "[site]\n"
            f'name = "bench-{self.kind}"\n'
            f"state_dir = {q(self.state)}\n"
            "\n[keys]\n"
            f"recipients = [{q(recipient)}]\n"
            f"identity_file = {q(self.identity)}\n"
            "\n[[sources]]\n"
            'name = "data"\n'
            'type = "files"\n'
            f"paths = [{q(self.data_dir)}]\n"
            "\n[[targets]]\n"
            f'name = "{self.kind}"\n'
            f"url = {q(self.url)}\n"
        )


class RemoteRestic(harness.Restic):
    """restic with an sftp: or s3: repository on the same servers."""

    def __init__(
        self,
        work: Path,
        data_dir: Path,
        runner: harness.Runner,
        exe: harness.Executable,
        kind: str,
        rnd: int,
        srv: Servers,
    ) -> None:
        super().__init__(work, data_dir, runner, exe)
        tag, slot = f"{kind}-r{rnd}", f"restic-r{rnd}"
        self.name = f"restic-{tag}"
        self.kind = kind
        self.cache = work / f"restic-cache-{tag}"
        if kind == "sftp":
            ssh = srv.ssh
            assert ssh is not None
            # OpenSSH's client with the run's key and known_hosts only (no ~/.ssh/config,
            # no agent); restic starts it and speaks SFTP over its stdin/stdout.
            command = [
                "ssh",
                "-F",
                "/dev/null",
                "-p",
                str(ssh.port),
                "-i",
                str(ssh.key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                f"UserKnownHostsFile={ssh.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                f"{ssh.user}@127.0.0.1",
                "-s",
                "sftp",
            ]
            self.location = f"sftp:{ssh.user}@127.0.0.1:{srv.sftp_dir(slot)}"
            self.options = ["-o", f"sftp.command={shlex.join(command)}"]
        else:
            s3 = srv.s3
            assert s3 is not None
            self.location = f"s3:{s3.endpoint}/{srv.bucket(slot)}/restic"
            self.options = ["-o", "s3.bucket-lookup=path", "-o", "s3.region=us-east-1"]
            _use_s3(self.env, s3)
        self.repo = srv.repo_path(kind, slot)

    def _base(self) -> list[str]:
        return [
            *self.exe.argv,
            "--repo",
            self.location,
            *self.options,
            "--cache-dir",
            str(self.cache),
        ]


def _use_s3(env: dict[str, str], s3: servers.S3Server) -> None:
    """Only the test server's keys: no profile, session token or region from the caller."""
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION"):
        env.pop(var, None)
    env.update(s3.env())


# --------------------------------------------------------------------------- results


@dataclass
class RemoteResult(harness.ToolResult):
    server_cpu_s: dict[str, float] = field(default_factory=dict)


def build_metrics(nbytes: int) -> list[harness.Metric]:
    def step(name: str, attr: str, scale: float = 1.0):
        def get(r: harness.ToolResult) -> float | None:
            res = r.steps.get(name)
            return None if res is None else float(getattr(res, attr)) / scale

        return get

    def throughput(name: str):
        def get(r: harness.ToolResult) -> float | None:
            res = r.steps.get(name)
            return None if res is None or res.wall_s <= 0 else nbytes / MiB / res.wall_s

        return get

    def server_cpu(name: str):
        def get(r: harness.ToolResult) -> float | None:
            assert isinstance(r, RemoteResult)
            return r.server_cpu_s.get(name)

        return get

    M = harness.Metric
    return [
        M("first backup time", "s", "lower", step("first", "wall_s")),
        M("first backup throughput", "MiB/s", "higher", throughput("first"), "{:.1f}"),
        M("no-change backup time", "s", "lower", step("nochange", "wall_s")),
        M("restore time", "s", "lower", step("restore", "wall_s")),
        M("restore throughput", "MiB/s", "higher", throughput("restore"), "{:.1f}"),
        M("first backup client CPU", "s", "lower", step("first", "cpu_s")),
        M("first backup server CPU", "s", "lower", server_cpu("first")),
        M("restore client CPU", "s", "lower", step("restore", "cpu_s")),
        M("restore server CPU", "s", "lower", server_cpu("restore")),
        M(
            "repo size on the server",
            "MiB",
            "lower",
            lambda r: r.repo_bytes / MiB if r.steps else None,
            "{:.1f}",
        ),
        *(
            M(f"peak RSS {STEP_TITLES[s]}", "MiB", "lower", step(s, "maxrss_kib", 1024), "{:.0f}")
            for s in STEPS
        ),
    ]


def median_values(
    runs: list[RemoteResult], metrics: list[harness.Metric]
) -> dict[str, dict[str, Any]]:
    """Per metric: the median over the rounds, and every round's value."""
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        each = [m.get(r) for r in runs]
        known = [v for v in each if v is not None]
        out[m.label] = {"median": statistics.median(known) if known else None, "rounds": each}
    return out


def render_table(
    targets: list[str],
    tools: list[str],
    values: dict[str, dict[str, dict[str, dict[str, Any]]]],
    metrics: list[harness.Metric],
) -> tuple[str, dict[str, dict[str, float | None]]]:
    """One row per metric; per target a column per tool and the emberkeep/restic ratio.

    ``values[target][tool][metric label]["median"]`` is the number shown.
    """
    both = set(TOOLS) <= set(tools)
    header = ["step", "unit"]
    for t in targets:
        header += [f"{t} {tool}" for tool in tools]
        if both:
            header.append(f"{t} emberkeep/restic")
    header.append("better")
    rows = [header, ["---"] * 2 + ["---:"] * (len(header) - 3) + ["---"]]
    ratios: dict[str, dict[str, float | None]] = {}
    for m in metrics:
        row = [m.label, m.unit]
        for t in targets:
            got = {tool: values[t][tool][m.label]["median"] for tool in tools}
            row += ["—" if got[x] is None else m.fmt.format(got[x]) for x in tools]
            if both:
                r = harness.ratio(got["emberkeep"], got["restic"])
                ratios.setdefault(t, {})[m.label] = r
                row.append("—" if r is None else f"{r:.2f}")
        row.append(m.better)
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows), ratios


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, RemoteResult):
        return {**harness._jsonable(obj), "server_cpu_s": obj.server_cpu_s}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return harness._jsonable(obj)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark emberkeep against restic to SFTP and S3 servers on loopback."
    )
    parser.add_argument("--size-mb", type=float, default=256, help="dataset size in MiB (256)")
    parser.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help=f"work dir ({DEFAULT_WORK}); wiped at start"
    )
    parser.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help="comma-separated subset of: sftp,s3"
    )
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="comma-separated subset of: emberkeep,restic"
    )
    parser.add_argument(
        "--sftp-client",
        choices=SFTP_CLIENTS,
        default="openssh",
        help="emberkeep's SSH client for sftp (?ssh=): openssh (default) or paramiko",
    )
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (1)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds, each with fresh repositories; the table shows the median (1)",
    )
    parser.add_argument(
        "--keep-restores",
        action="store_true",
        help="keep restored trees (default: delete after verification)",
    )
    for name in TOOLS:
        parser.add_argument(f"--{name}", metavar="PATH", help=f"{name} executable")
    args = parser.parse_args(argv)

    def subset(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
        items = [x.strip() for x in value.split(",") if x.strip()]
        if not items or len(set(items)) != len(items) or not set(items) <= set(allowed):
            parser.error(f"{option} must be a comma-separated subset of {','.join(allowed)}")
        return [x for x in allowed if x in items]

    args.target_list = subset(args.targets, ALL_TARGETS, "--targets")
    args.tool_list = subset(args.tools, TOOLS, "--tools")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def run_one(
    tool: harness.Tool,
    res: RemoteResult,
    kind: str,
    rnd: int,
    srv: Servers,
    expected: dict[str, tuple[int, str]],
    work: Path,
    keep_restores: bool,
) -> None:
    """Setup, first backup, no-change backup, restore (verified) of one tool to one target."""
    label = f"{tool.name.split('-')[0]} -> {kind} (round {rnd})"
    log(f"{label}: setup")
    tool.setup()
    res.setup = dict(tool.commands)
    for step in STEPS:
        before = srv.cpu_seconds(kind)
        if step == "restore":
            target = work / f"restore-{tool.name}"
            target.mkdir()
            cmd = tool.restore(target)
        else:
            cmd = tool.backup(step)
        res.steps[step] = cmd
        res.server_cpu_s[step] = srv.cpu_seconds(kind) - before
        log(
            f"{label}: {STEP_TITLES[step]}: {cmd.wall_s:.2f}s, "
            f"CPU {cmd.cpu_s:.2f}s (server {res.server_cpu_s[step]:.2f}s), "
            f"peak RSS {cmd.maxrss_kib / 1024:.0f} MiB"
        )
        if step == "restore":
            harness.verify(expected, tool.restored_root(target), label)
            res.verified = True
            log(f"{label}: restore verified ({len(expected)} files identical)")
            if not keep_restores:
                shutil.rmtree(target)
    res.repo_bytes, res.repo_apparent_bytes = harness.disk_usage([tool.repo])
    res.cache_bytes = harness.disk_usage(tool.cache_dirs())[0]


def run_bench(args: argparse.Namespace, report: dict[str, Any]) -> str:
    targets: list[str] = args.target_list
    tools: list[str] = args.tool_list
    exes = {t: harness.find_exe(t, getattr(args, t)) for t in tools}
    work: Path = args.work.resolve()
    harness.prepare_work(work)
    report["work_prepared"] = True
    data_dir = work / "data"
    runner = harness.Runner(work / "logs")
    results: dict[str, dict[str, list[RemoteResult]]] = {k: {t: [] for t in tools} for k in targets}
    report["results"] = results

    log(f"generating {args.size_mb:g} MiB dataset in {data_dir}")
    stats = dataset.generate(data_dir, args.size_mb, seed=args.seed)
    report["dataset"] = asdict(stats)
    log(f"  {stats.files} files, {stats.total_bytes / MiB:.1f} MiB in {stats.seconds:.1f}s")
    log("warm-up read of the dataset (page cache) + source hashes")
    expected = harness.manifest(data_dir)

    log("starting the servers (tests/servers.py)")
    srv = Servers(work, targets, args.sftp_client)
    try:
        report["servers"] = srv.describe()
        for kind, text in report["servers"].items():
            print(f"{kind} server: {text}")
        classes: dict[str, type[RemoteEmberkeep | RemoteRestic]] = {
            "emberkeep": RemoteEmberkeep,
            "restic": RemoteRestic,
        }
        versions = {
            t: harness.TOOL_CLASSES[t](work, data_dir, runner, exes[t]).version() for t in tools
        }
        report["versions"] = versions
        for t in tools:
            print(f"{t}: {exes[t]}\n    {versions[t]}")
        print(flush=True)

        # Rounds interleave the tools, so a burst of load from elsewhere on the machine
        # hits one round of each rather than all rounds of one tool.
        for rnd in range(1, args.repeat + 1):
            for kind in targets:
                for t in tools:
                    tool = classes[t](work, data_dir, runner, exes[t], kind, rnd, srv)
                    res = RemoteResult()
                    results[kind][t].append(res)
                    urls = report.setdefault("urls", {}).setdefault(kind, {})
                    urls[t] = (
                        tool.url
                        if isinstance(tool, RemoteEmberkeep)
                        else shlex.join(tool._base()[1:])
                    )
                    run_one(tool, res, kind, rnd, srv, expected, work, args.keep_restores)
    finally:
        srv.stop()

    metrics = build_metrics(stats.total_bytes)
    values = {k: {t: median_values(results[k][t], metrics) for t in tools} for k in targets}
    table, ratios = render_table(targets, tools, values, metrics)
    report["ratios"] = ratios
    report["metrics"] = {
        m.label: {
            "unit": m.unit,
            "better": m.better,
            **{k: {t: values[k][t][m.label] for t in tools} for k in targets},
        }
        for m in metrics
    }
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(sys.orig_argv) if argv is None else shlex.join(["remote.py", *argv])
    work: Path = args.work.resolve()
    report = harness.start_report(
        command,
        {
            "size_mb": args.size_mb,
            "work": str(work),
            "targets": args.target_list,
            "tools": args.tool_list,
            "seed": args.seed,
            "repeat": args.repeat,
            "sftp_client": args.sftp_client,
        },
    )

    def caption() -> str:
        data = report["dataset"]
        rounds = (
            "single run"
            if args.repeat == 1
            else f"median of {args.repeat} rounds (every round in results.json)"
        )
        return (
            f"dataset: {data['total_bytes'] / MiB:.1f} MiB in {data['files']} files; "
            f"servers on 127.0.0.1; emberkeep's sftp client {args.sftp_client}; {rounds}; "
            "ratio = emberkeep / restic"
        )

    return harness.run_reported(work, report, lambda: run_bench(args, report), caption, _jsonable)


if __name__ == "__main__":
    sys.exit(main())
