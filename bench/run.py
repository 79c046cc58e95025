"""Time emberkeep, restic and borg side by side on the same synthetic dataset.

Usage::

    python bench/run.py [--dataset standard|mixed|thumbnails] [--size-mb 1024] [--files N]
        [--repeat N] [--work DIR] [--tools emberkeep,restic,borg]

Sequence of one round (every tool sees the same bytes, in the same page-cache state):

1. generate the dataset (``bench/dataset.py``), read it once (warm-up, and source hashes);
2. per tool: untimed setup (key/repo init); then each step as a pair (every tool, one after
   the other, the load average read before and after): (a) first backup, (b) no-change backup;
3. mutate ~1 % of the files once, read the tree again;
4. (c) backup after the change, per tool; repository size on disk is measured here;
5. (d) full restore of the latest snapshot into an empty dir, per tool, verified by hash.

``--repeat N`` runs N rounds, each on a freshly generated dataset with fresh repositories;
the table shows each number's median and each ratio's median and range over the rounds.

Every command's wall time, CPU time and peak RSS come from ``os.wait4`` on that child.
Results are printed as a markdown table with emberkeep/peer ratio columns and written to
``<work>/results.json`` (and ``<work>/results.md``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataset  # sibling module; bench/ is not a package

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = Path("/tmp/emberkeep-bench")
WORK_MARKER = ".emberkeep-bench"
ALL_TOOLS = ("emberkeep", "restic", "borg")
PEERS = ("restic", "borg")
PASSWORD = "bench-password-not-secret"
STEPS = ("first", "nochange", "change", "restore")
STEP_TITLES = {
    "first": "first backup",
    "nochange": "no-change backup",
    "change": "1% change backup",
    "restore": "restore",
}
TAIL_LINES = 40


class BenchError(RuntimeError):
    """A fatal benchmark problem; the message is printed and the run aborts."""


# --------------------------------------------------------------------------- commands


@dataclass
class CmdResult:
    """One finished child process and what it cost."""

    argv: list[str]
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    returncode: int
    stdout_log: str
    stderr_log: str

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


class Runner:
    """Runs commands with stdout/stderr logged to files and rusage taken from wait4."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def run(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> CmdResult:
        out_log = self.log_dir / f"{name}.stdout.log"
        err_log = self.log_dir / f"{name}.stderr.log"
        # Flush earlier writeback (e.g. the previous tool's repository) so it is not billed
        # to this command. Not part of the timed region.
        os.sync()
        with open(out_log, "wb") as out, open(err_log, "wb") as err:
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd
                )
            except OSError as exc:
                raise BenchError(f"[{name}] cannot start {shlex.join(argv)}: {exc}") from exc
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        result = CmdResult(
            argv=argv,
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            maxrss_kib=usage.ru_maxrss,  # KiB on Linux
            returncode=proc.returncode,
            stdout_log=str(out_log),
            stderr_log=str(err_log),
        )
        if result.returncode != 0:
            raise BenchError(
                f"[{name}] command failed with exit code {result.returncode}:\n"
                f"  $ {shlex.join(argv)}\n"
                f"  cwd: {cwd or os.getcwd()}\n"
                f"--- stderr tail ({err_log}) ---\n{_tail(err_log)}\n"
                f"--- stdout tail ({out_log}) ---\n{_tail(out_log, 10)}"
            )
        return result


def _capture(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a quick untimed command and return its stdout (stderr on failure)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return f"unavailable (exit {proc.returncode}: {err[-1] if err else ''})"
    return proc.stdout.strip()


# --------------------------------------------------------------------------- tools


@dataclass
class Executable:
    """How to start a tool: argv prefix plus extra environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{extra} {shlex.join(self.argv)}".strip()


class Tool(ABC):
    """One backup program driven through its CLI against a repository in the work dir."""

    name: str

    def __init__(self, work: Path, data_dir: Path, runner: Runner, exe: Executable) -> None:
        self.work = work
        self.data_dir = data_dir
        self.runner = runner
        self.exe = exe
        self.repo = work / f"{self.name}-repo"
        self.env = {**os.environ, **exe.env}
        self.backups = 0
        self.commands: dict[str, CmdResult] = {}

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def setup(self) -> None:
        """Untimed: create keys and the repository."""

    @abstractmethod
    def backup_argv(self) -> list[str]: ...

    @abstractmethod
    def restore_argv(self, target: Path) -> tuple[list[str], Path | None]:
        """Command (and cwd) restoring the latest snapshot under ``target``."""

    @abstractmethod
    def cache_dirs(self) -> list[Path]:
        """Client-side cache/state outside the repository."""

    def restored_root(self, target: Path) -> Path:
        """Where the dataset ends up inside ``target`` (absolute path, re-rooted)."""
        return target / self.data_dir.relative_to(self.data_dir.anchor)

    def run(self, step: str, argv: list[str], cwd: Path | None = None) -> CmdResult:
        result = self.runner.run(f"{self.name}-{step}", argv, env=self.env, cwd=cwd)
        self.commands[step] = result
        return result

    def backup(self, step: str) -> CmdResult:
        self.backups += 1
        return self.run(step, self.backup_argv())

    def restore(self, target: Path) -> CmdResult:
        argv, cwd = self.restore_argv(target)
        return self.run("restore", argv, cwd=cwd)


class Restic(Tool):
    name = "restic"

    def __init__(self, work: Path, data_dir: Path, runner: Runner, exe: Executable) -> None:
        super().__init__(work, data_dir, runner, exe)
        self.cache = work / "restic-cache"
        self.env["RESTIC_PASSWORD"] = PASSWORD
        self.env.pop("RESTIC_REPOSITORY", None)
        self.env.pop("RESTIC_PASSWORD_FILE", None)
        self.env.pop("RESTIC_PASSWORD_COMMAND", None)

    def _base(self) -> list[str]:
        return [*self.exe.argv, "--repo", str(self.repo), "--cache-dir", str(self.cache)]

    def version(self) -> str:
        return _capture([*self.exe.argv, "version"], self.env)

    def setup(self) -> None:
        # Repository format v2 is what enables compression in restic >= 0.14.
        self.run("init", [*self._base(), "init", "--repository-version", "2"])

    def backup_argv(self) -> list[str]:
        return [*self._base(), "backup", "--compression", "auto", str(self.data_dir)]

    def restore_argv(self, target: Path) -> tuple[list[str], Path | None]:
        return [*self._base(), "restore", "latest", "--target", str(target)], None

    def cache_dirs(self) -> list[Path]:
        return [self.cache]


class Borg(Tool):
    name = "borg"

    def __init__(self, work: Path, data_dir: Path, runner: Runner, exe: Executable) -> None:
        super().__init__(work, data_dir, runner, exe)
        self.base_dir = work / "borg-home"
        self.env.update(
            BORG_PASSPHRASE=PASSWORD,
            BORG_BASE_DIR=str(self.base_dir),
            BORG_DISPLAY_PASSPHRASE="no",
        )
        for var in ("BORG_REPO", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD", "BORG_KEY_FILE"):
            self.env.pop(var, None)

    def version(self) -> str:
        return _capture([*self.exe.argv, "--version"], self.env)

    def setup(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.run("init", [*self.exe.argv, "init", "--encryption=repokey-blake2", str(self.repo)])

    def backup_argv(self) -> list[str]:
        archive = f"{self.repo}::bench-{self.backups}"
        return [*self.exe.argv, "create", "--compression", "zstd,3", archive, str(self.data_dir)]

    def restore_argv(self, target: Path) -> tuple[list[str], Path | None]:
        # borg stores the path without its leading slash and extracts relative to cwd.
        return [*self.exe.argv, "extract", f"{self.repo}::bench-{self.backups}"], target

    def cache_dirs(self) -> list[Path]:
        return [self.base_dir]


class Emberkeep(Tool):
    name = "emberkeep"

    def __init__(self, work: Path, data_dir: Path, runner: Runner, exe: Executable) -> None:
        super().__init__(work, data_dir, runner, exe)
        self.repo = work / "ek-repo"
        self.state = work / "ek-state"
        # An installed emberkeep has its bytecode (pip compiles at install); a shell that
        # sets PYTHONDONTWRITEBYTECODE would make every timed run compile ~250 modules
        # again (about 1 s, measured with cProfile), which restic and borg never pay.
        self.env["PYTHONDONTWRITEBYTECODE"] = ""
        self.identity = work / "identity.txt"
        self.config = work / "emberkeep.toml"

    def version(self) -> str:
        version = _capture([*self.exe.argv, "--version"], self.env)
        rev = _capture(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
        return f"{version} (checkout {ROOT} at {rev})"

    def setup(self) -> None:
        python = ROOT / ".venv" / "bin" / "python"
        if python.is_file():  # the bytecode an install would have, before anything is timed
            subprocess.run([str(python), "-m", "compileall", "-q", str(ROOT / "src")],
                           env=self.env, check=False, capture_output=True)  # fmt: skip
        keygen = self.run("keygen", [*self.exe.argv, "keygen", "-o", str(self.identity)])
        lines = [ln.strip() for ln in Path(keygen.stdout_log).read_text().splitlines()]
        lines = [ln for ln in lines if ln]
        recipient = lines[-1] if lines else ""
        if not recipient.startswith("age1"):
            raise BenchError(
                f"[emberkeep-keygen] expected the recipient 'age1...' as the last line of "
                f"stdout, got {recipient!r} (see {keygen.stdout_log})"
            )
        self.config.write_text(self._config_toml(recipient))
        self.run("init", [*self.exe.argv, "-c", str(self.config), "init"])

    def _config_toml(self, recipient: str) -> str:
        def q(value: str | Path) -> str:
            return json.dumps(str(value))  # a JSON string is a valid TOML basic string

        return (
            "[site]\n"
            'name = "bench"\n'
            f"state_dir = {q(self.state)}\n"
            "\n[keys]\n"
            f"recipients = [{q(recipient)}]\n"
            f"identity_file = {q(self.identity)}\n"
            "\n[[sources]]\n"
            'name = "data"\n'
            'type = "files"\n'
            f"paths = [{q(self.data_dir)}]\n"
            "\n[[targets]]\n"
            'name = "local"\n'
            f"url = {q('file://' + str(self.repo))}\n"
        )

    def backup_argv(self) -> list[str]:
        return [*self.exe.argv, "-c", str(self.config), "backup"]

    def restore_argv(self, target: Path) -> tuple[list[str], Path | None]:
        return [
            *self.exe.argv,
            "-c",
            str(self.config),
            "restore",
            "latest",
            "--to",
            str(target),
        ], None

    def cache_dirs(self) -> list[Path]:
        return [self.state]


TOOL_CLASSES: dict[str, type[Tool]] = {"emberkeep": Emberkeep, "restic": Restic, "borg": Borg}


# --------------------------------------------------------------------------- files


def manifest(root: Path) -> dict[str, tuple[int, str]]:
    """relative path -> (size, sha256) of every regular file; reads every byte."""
    out: dict[str, tuple[int, str]] = {}
    for rel in dataset.list_files(root):
        path = root / rel
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        out[str(rel)] = (path.stat().st_size, digest)
    return out


def verify(expected: dict[str, tuple[int, str]], restored: Path, tool: str) -> None:
    if not restored.is_dir():
        found = (
            sorted(str(p) for p in restored.parent.glob("*")) if restored.parent.is_dir() else []
        )
        raise BenchError(
            f"[{tool}] RESTORE VERIFICATION FAILED: expected the dataset at {restored}, "
            f"which does not exist. Siblings there: {found[:10]}"
        )
    got = manifest(restored)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differ = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or differ:
        lines = [f"[{tool}] RESTORE VERIFICATION FAILED under {restored}:"]
        for label, items in (("missing", missing), ("unexpected", extra), ("differ", differ)):
            if items:
                lines.append(f"  {len(items)} {label}: {', '.join(items[:10])}")
        raise BenchError("\n".join(lines))


def disk_usage(paths: Iterable[Path]) -> tuple[int, int]:
    """(allocated bytes like ``du``, apparent bytes) of everything under ``paths``."""
    seen: set[tuple[int, int]] = set()
    allocated = apparent = 0
    for top in paths:
        if not top.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                allocated += st.st_blocks * 512
                apparent += st.st_size
    return allocated, apparent


def prepare_work(work: Path) -> None:
    """Create a fresh work dir; only ever wipe one that this script created."""
    if work.exists():
        if not work.is_dir():
            raise BenchError(f"--work {work} exists and is not a directory")
        if any(work.iterdir()) and not (work / WORK_MARKER).exists():
            raise BenchError(
                f"--work {work} is not empty and was not created by this benchmark "
                f"(no {WORK_MARKER} marker); refusing to delete it"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text("created by bench/run.py; deleted on the next run\n")


# --------------------------------------------------------------------------- report


@dataclass
class ToolResult:
    steps: dict[str, CmdResult] = field(default_factory=dict)
    setup: dict[str, CmdResult] = field(default_factory=dict)
    repo_bytes: int = 0
    repo_apparent_bytes: int = 0
    cache_bytes: int = 0
    verified: bool = False


@dataclass
class Metric:
    label: str
    unit: str
    better: str  # "lower" or "higher"
    get: Callable[[ToolResult], float | None]
    fmt: str = "{:.2f}"


def _step_value(step: str, attr: str) -> Callable[[ToolResult], float | None]:
    def get(r: ToolResult) -> float | None:
        res = r.steps.get(step)
        return None if res is None else float(getattr(res, attr))

    return get


def build_metrics(first_bytes: int, final_bytes: int) -> list[Metric]:
    def throughput(step: str, nbytes: int) -> Callable[[ToolResult], float | None]:
        def get(r: ToolResult) -> float | None:
            res = r.steps.get(step)
            return None if res is None or res.wall_s <= 0 else nbytes / MiB / res.wall_s

        return get

    def rss(step: str) -> Callable[[ToolResult], float | None]:
        def get(r: ToolResult) -> float | None:
            res = r.steps.get(step)
            return None if res is None else res.maxrss_kib / 1024

        return get

    metrics = [
        Metric(f"{STEP_TITLES[s]} time", "s", "lower", _step_value(s, "wall_s")) for s in STEPS
    ]
    metrics.insert(
        1,
        Metric(
            "first backup throughput", "MiB/s", "higher", throughput("first", first_bytes), "{:.1f}"
        ),
    )
    metrics.append(
        Metric(
            "restore throughput", "MiB/s", "higher", throughput("restore", final_bytes), "{:.1f}"
        )
    )
    metrics += [
        Metric(f"{STEP_TITLES[s]} CPU (user+sys)", "s", "lower", _step_value(s, "cpu_s"))
        for s in ("first", "restore")
    ]
    metrics.append(
        Metric(
            "repo size after 1% change",
            "MiB",
            "lower",
            lambda r: r.repo_bytes / MiB if r.steps else None,
            "{:.1f}",
        )
    )
    metrics.append(
        Metric(
            "client cache/state size",
            "MiB",
            "lower",
            lambda r: r.cache_bytes / MiB if r.steps else None,
            "{:.1f}",
        )
    )
    metrics += [
        Metric(f"peak RSS {STEP_TITLES[s]}", "MiB", "lower", rss(s), "{:.0f}") for s in STEPS
    ]
    return metrics


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def render_table(
    tools: list[str], rounds: list[dict[str, ToolResult]], metrics: list[Metric]
) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    """One row per metric: each tool's median over the rounds, and per peer the median of
    the rounds' ratios (each round's tools ran as pairs), with their range when there are
    several rounds. Also returns, per pair and metric, the median and every round's ratio."""
    peers = [p for p in PEERS if p in tools] if "emberkeep" in tools else []
    header = ["step", "unit", *tools, *(f"emberkeep/{p}" for p in peers), "better"]
    rows = [header, ["---"] * 2 + ["---:"] * (len(header) - 3) + ["---"]]
    ratios: dict[str, dict[str, dict[str, Any]]] = {}
    for m in metrics:
        values = {t: median(m.get(r[t]) for r in rounds) for t in tools}
        row = [m.label, m.unit]
        row += ["—" if values[t] is None else m.fmt.format(values[t]) for t in tools]
        for p in peers:
            each = [ratio(m.get(r["emberkeep"]), m.get(r[p])) for r in rounds]
            mid = median(each)
            known = [x for x in each if x is not None]
            ratios.setdefault(f"emberkeep/{p}", {})[m.label] = {"median": mid, "rounds": each}
            cell = "—" if mid is None else f"{mid:.2f}"
            if len(rounds) > 1 and known:
                cell += f" ({min(known):.2f}..{max(known):.2f})"
            row.append(cell)
        row.append(m.better)
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows), ratios


def _load_text(load: tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def render_load(loads: list[dict[str, dict[str, list[float]]]]) -> str:
    """The machine's load average (1, 5, 15 min) before and after each pair, per round."""
    rows = [
        ["round", "pair", "load before (1 5 15 min)", "load after"],
        ["---:", "---", "---", "---"],
    ]
    for n, load in enumerate(loads, 1):
        for step, seen in load.items():
            title = STEP_TITLES[step]
            rows.append([str(n), title, _load_text(seen["before"]), _load_text(seen["after"])])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


# --------------------------------------------------------------------------- main


def _is_exe(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_exe(name: str, override: str | None) -> Executable:
    if override:
        if not _is_exe(Path(override)):
            raise BenchError(f"--{name} {override} is not an executable file")
        return Executable([override])
    if name == "emberkeep":
        venv = ROOT / ".venv" / "bin"
        if _is_exe(venv / "emberkeep"):
            return Executable([str(venv / "emberkeep")])
        found = shutil.which(name)
        if found:
            return Executable([found])
        # Not installed (yet): run the console-script entry point from the source tree.
        if (ROOT / "src" / "emberkeep" / "cli" / "__init__.py").is_file():
            python = venv / "python" if _is_exe(venv / "python") else Path(sys.executable)
            src = str(ROOT / "src")
            pythonpath = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
            entry = "import sys; from emberkeep.cli import main; sys.exit(main())"
            return Executable([str(python), "-c", entry], {"PYTHONPATH": pythonpath})
        raise BenchError(
            f"emberkeep executable not found: no {venv / 'emberkeep'}, none on PATH, and no "
            f"{ROOT / 'src/emberkeep/cli/__init__.py'} to run from source (install with "
            "`.venv/bin/pip install -e .`, or pass --emberkeep PATH)"
        )
    found = shutil.which(name)
    if not found:
        raise BenchError(
            f"{name} executable not found (run `bash bench/setup.sh`, or pass --{name} PATH)"
        )
    return Executable([found])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark emberkeep against restic and borg on one synthetic dataset."
    )
    parser.add_argument(
        "--dataset",
        choices=dataset.KINDS,
        default="standard",
        help="standard (a shop's mix), mixed (one file of 1 MiB random/text runs), "
        "thumbnails (many small files)",
    )
    parser.add_argument(
        "--size-mb",
        type=float,
        help=f"dataset size in MiB (standard 1024, mixed {dataset.MIXED_DEFAULT_MB})",
    )
    parser.add_argument(
        "--files",
        type=int,
        help=f"thumbnails: how many files ({dataset.THUMB_DEFAULT_FILES:,}; fewer for quick runs)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds, each with a fresh dataset and repositories; medians and ranges (1)",
    )
    parser.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help=f"work dir ({DEFAULT_WORK}); wiped at start"
    )
    parser.add_argument(
        "--tools",
        default=",".join(ALL_TOOLS),
        help="comma-separated subset of: " + ",".join(ALL_TOOLS),
    )
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (1)")
    parser.add_argument(
        "--keep-restores",
        action="store_true",
        help="keep restored trees (default: delete after verification)",
    )
    for name in ALL_TOOLS:
        parser.add_argument(f"--{name}", metavar="PATH", help=f"{name} executable")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in ALL_TOOLS]
    if unknown or not tools or len(set(tools)) != len(tools):
        parser.error(f"--tools must be a comma-separated subset of {','.join(ALL_TOOLS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.dataset == "thumbnails" and args.size_mb is not None:
        parser.error("--size-mb does not apply to --dataset thumbnails (use --files N)")
    if args.dataset != "thumbnails" and args.files is not None:
        parser.error("--files applies to --dataset thumbnails only")
    if args.files is not None and args.files < 1:
        parser.error("--files must be at least 1")
    args.tool_list = tools
    return args


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


@dataclass
class Round:
    """One round: every tool's results, and the load average around each pair."""

    results: dict[str, ToolResult]
    load: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    mutation: dict[str, Any] = field(default_factory=dict)
    final_bytes: int = 0


def run_pair(
    step: str, tools: list[str], rnd: Round, each: Callable[[str], CmdResult]
) -> dict[str, CmdResult]:
    """Run ``step`` for every tool one after the other, noting the load before and after."""
    before = os.getloadavg()
    done = {t: each(t) for t in tools}
    after = os.getloadavg()
    rnd.load[step] = {"before": list(before), "after": list(after)}
    log(f"load average around the {STEP_TITLES[step]} pair: {_load_text(before)} -> "
        f"{_load_text(after)}")  # fmt: skip
    return done


def round_dir(work: Path, number: int, repeat: int) -> Path:
    """Where a round's repositories, caches and logs go: the work dir itself for one round."""
    return work if repeat == 1 else work / f"round-{number}"


def run_round(
    args: argparse.Namespace, number: int, exes: dict[str, Executable], work: Path
) -> Round:
    tools: list[str] = args.tool_list
    base = round_dir(work, number, args.repeat)
    base.mkdir(exist_ok=True)
    data_dir = work / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    runner = Runner(base / "logs")
    objs: dict[str, Tool] = {t: TOOL_CLASSES[t](base, data_dir, runner, exes[t]) for t in tools}
    rnd = Round({t: ToolResult() for t in tools})
    if args.repeat > 1:
        log(f"round {number} of {args.repeat}")

    log(f"generating the {args.dataset} dataset in {data_dir}")
    stats = dataset.generate_kind(
        args.dataset, data_dir, size_mb=args.size_mb, files=args.files, seed=args.seed
    )
    rnd.dataset = asdict(stats)
    log(f"  {stats.files} files, {stats.total_bytes / MiB:.1f} MiB in {stats.seconds:.1f}s")
    log("warm-up read of the dataset (page cache) + source hashes")
    manifest(data_dir)

    for t in tools:
        log(f"{t}: setup")
        objs[t].setup()
        rnd.results[t].setup = dict(objs[t].commands)

    def backup(step: str) -> Callable[[str], CmdResult]:
        def each(t: str) -> CmdResult:
            res = objs[t].backup(step)
            rnd.results[t].steps[step] = res
            rss = res.maxrss_kib / 1024
            log(f"{t}: {STEP_TITLES[step]}: {res.wall_s:.2f}s, peak RSS {rss:.0f} MiB")
            if step == "change":
                result = rnd.results[t]
                result.repo_bytes, result.repo_apparent_bytes = disk_usage([objs[t].repo])
                result.cache_bytes = disk_usage(objs[t].cache_dirs())[0]
                log(f"{t}: repo {result.repo_bytes / MiB:.1f} MiB")
            return res

        return each

    for step in ("first", "nochange"):
        run_pair(step, tools, rnd, backup(step))

    log("mutating ~1% of the files")
    mstats = dataset.mutate(data_dir, fraction=0.01, seed=args.seed + 1)
    rnd.mutation = asdict(mstats)
    log(f"  changed {mstats.files_changed}, added {mstats.files_added} files")
    log("warm-up read of the mutated dataset + source hashes")
    expected = manifest(data_dir)
    rnd.final_bytes = sum(size for size, _ in expected.values())

    run_pair("change", tools, rnd, backup("change"))

    def restore(t: str) -> CmdResult:
        target = base / f"restore-{t}"
        target.mkdir()
        res = objs[t].restore(target)
        rnd.results[t].steps["restore"] = res
        log(f"{t}: restore: {res.wall_s:.2f}s; verifying")
        verify(expected, objs[t].restored_root(target), t)
        rnd.results[t].verified = True
        log(f"{t}: restore verified ({len(expected)} files identical)")
        if not args.keep_restores:
            shutil.rmtree(target)
        return res

    run_pair("restore", tools, rnd, restore)
    if number < args.repeat:  # what was measured is in the results; the disk is needed again
        for t in tools:
            for path in [objs[t].repo, *objs[t].cache_dirs()]:
                shutil.rmtree(path, ignore_errors=True)
    return rnd


def run_bench(args: argparse.Namespace, report: dict[str, Any]) -> str:
    tools: list[str] = args.tool_list
    exes = {t: find_exe(t, getattr(args, t)) for t in tools}
    work: Path = args.work.resolve()
    prepare_work(work)
    report["work_prepared"] = True  # from here on results.json belongs to this run
    rounds: list[Round] = []
    report["rounds"] = rounds

    logs = Runner(round_dir(work, 1, args.repeat) / "logs")
    versions = {t: TOOL_CLASSES[t](work, work / "data", logs, exes[t]).version() for t in tools}
    report["versions"] = versions
    for t in tools:
        print(f"{t}: {exes[t]}\n    {versions[t]}")
    print(flush=True)

    for number in range(1, args.repeat + 1):
        rounds.append(run_round(args, number, exes, work))

    first = rounds[0]
    report["dataset"], report["mutation"] = first.dataset, first.mutation
    report["final_bytes"] = first.final_bytes
    metrics = build_metrics(first.dataset["total_bytes"], first.final_bytes)
    table, ratios = render_table(tools, [r.results for r in rounds], metrics)
    report["ratios"] = ratios
    report["metrics"] = {
        m.label: {
            "unit": m.unit,
            "better": m.better,
            **{t: median(m.get(r.results[t]) for r in rounds) for t in tools},
            "rounds": {t: [m.get(r.results[t]) for r in rounds] for t in tools},
        }
        for m in metrics
    }
    loads = render_load([r.load for r in rounds])
    return f"{table}\n\nload average around each pair (the machine is shared):\n\n{loads}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, ToolResult):
        return {
            "steps": {k: {**asdict(v), "cpu_s": v.cpu_s} for k, v in obj.steps.items()},
            "setup": {k: asdict(v) for k, v in obj.setup.items()},
            "repo_bytes": obj.repo_bytes,
            "repo_apparent_bytes": obj.repo_apparent_bytes,
            "cache_bytes": obj.cache_bytes,
            "verified": obj.verified,
        }
    if isinstance(obj, Round):
        return {**_jsonable(asdict(obj)), "results": _jsonable(obj.results)}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def start_report(command: str, args: dict[str, Any]) -> dict[str, Any]:
    """Print the run's header (command, date, machine, load) and return the report's start."""
    print(f"command: {command}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
    print(
        f"machine: {platform.node()} {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    # Other work on the machine shows in the numbers (2 cores are shared with any servers).
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return {
        "command": command,
        "cwd": os.getcwd(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "args": args,
        "loadavg_at_start": os.getloadavg(),
    }


def run_reported(
    work: Path,
    report: dict[str, Any],
    bench: Callable[[], str],
    caption: Callable[[], str],
    jsonable: Callable[[Any], Any],
) -> int:
    """Run ``bench`` (which returns the results table) and report it; the exit status.

    The table goes to stdout after ``caption()`` and to ``work/results.md``; the report (with
    the error, if any) to ``work/results.json`` whenever the work dir was prepared, so a
    failed or interrupted run keeps what it measured."""
    command = report["command"]
    status = 0
    try:
        table = bench()
    except BenchError as exc:
        sys.stdout.flush()
        print(f"\nBENCHMARK FAILED\n{exc}", file=sys.stderr)
        report["error"] = str(exc)
        status = 1
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("\ninterrupted", file=sys.stderr)
        report["error"] = "interrupted"
        status = 130
    except BaseException as exc:  # a bug in the harness: keep the partial results, re-raise
        report["error"] = f"{type(exc).__name__}: {exc}"
        raise
    else:
        print(f"\n{caption()}\n")
        print(table)
        (work / "results.md").write_text(f"command: `{command}`\n\n{table}\n")
    finally:
        report["loadavg_at_end"] = os.getloadavg()
        print("load average at end: " + " ".join(f"{x:.2f}" for x in report["loadavg_at_end"]))
        if report.get("work_prepared") and (work / WORK_MARKER).is_file():
            out = work / "results.json"
            out.write_text(json.dumps(jsonable(report), indent=2) + "\n")
            print(f"\nresults: {out}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(sys.orig_argv) if argv is None else shlex.join(["run.py", *argv])
    work: Path = args.work.resolve()
    report = start_report(
        command,
        {
            "dataset": args.dataset,
            "size_mb": args.size_mb,
            "files": args.files,
            "repeat": args.repeat,
            "work": str(work),
            "tools": args.tool_list,
            "seed": args.seed,
        },
    )

    def caption() -> str:
        data = report["dataset"]
        runs = (
            "a single run"
            if args.repeat == 1
            else f"the median of {args.repeat} rounds; each ratio is the median of the rounds' "
            "ratios (their range in brackets)"
        )
        return (
            f"dataset: {args.dataset}, {data['total_bytes'] / MiB:.1f} MiB in {data['files']} "
            f"files (+ the 1% mutation); times are wall-clock seconds, {runs}; "
            "ratio = emberkeep / peer"
        )

    return run_reported(work, report, lambda: run_bench(args, report), caption, _jsonable)


if __name__ == "__main__":
    sys.exit(main())
