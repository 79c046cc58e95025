"""Service hooks: commands run before and after a job (the strategy stops the app with
``pm2 stop candle-backend`` before a database restore and starts it after).

Rules:
- A hook is a shell command line from the config, run with ``/bin/sh -c`` as cron would,
  in its own process group so a timeout kills it and everything it started.
- A failing (or timed-out) *before* hook aborts the job; its output is in the error.
- The *after* hook always runs, after success, failure or an aborted before hook, so a
  service stopped by the before hook is started again. Its failure is reported as a
  warning: the job's own outcome stands.
- The environment tells the hook what runs: ``EMBERKEEP_JOB`` (backup, restore),
  ``EMBERKEEP_SOURCE``, ``EMBERKEEP_HOOK`` (before, after), and for after hooks
  ``EMBERKEEP_OUTCOME`` (success, failure) and ``EMBERKEEP_ERROR``; more keys (snapshot,
  target) where the job knows them.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..config import SourceHooks
from ..durations import parse_duration
from ..errors import EmberkeepError

OUTPUT_TAIL = 2000  # characters of a hook's output kept in messages


class HookFailed(EmberkeepError):
    """A before hook failed or timed out: the job did not run."""


@dataclass(frozen=True)
class Hooks:
    before: str | None = None
    after: str | None = None
    timeout: float = 600.0


@dataclass
class HookRun:
    """What the hooks of one job did, for the job's result."""

    warnings: list[dict[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def run_hook(command: str, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run one hook; (exit status or None when it timed out and was killed, output)."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        start_new_session=True,
        text=True,
        errors="replace",
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output


def _describe(which: str, command: str, status: int | None, output: str, timeout: float) -> str:
    what = f"timed out after {timeout:g}s and was killed" if status is None else f"exited {status}"
    tail = output.strip()[-OUTPUT_TAIL:]
    return f"{which} hook `{command}` {what}" + (f"; its output:\n{tail}" if tail else "")


@contextmanager
def around(hooks: Hooks | None, job: str, source: str, **context: str) -> Iterator[HookRun]:
    """Run ``hooks.before``, then the body, then ``hooks.after`` whatever happened."""
    run = HookRun(
        env={"EMBERKEEP_JOB": job, "EMBERKEEP_SOURCE": source}
        | {f"EMBERKEEP_{key.upper()}": value for key, value in context.items()}
    )
    if hooks is None or not (hooks.before or hooks.after):
        yield run
        return
    error: BaseException | None = None
    try:
        if hooks.before:
            status, output = run_hook(
                hooks.before, {**run.env, "EMBERKEEP_HOOK": "before"}, hooks.timeout
            )
            if status != 0:
                message = _describe("before", hooks.before, status, output, hooks.timeout)
                raise HookFailed(f"source {source}: {job} not run: {message}")
        yield run
    except BaseException as exc:
        error = exc
        raise
    finally:
        if hooks.after:
            env = {
                **run.env,
                "EMBERKEEP_HOOK": "after",
                "EMBERKEEP_OUTCOME": "failure" if error else "success",
                "EMBERKEEP_ERROR": str(error) if error else "",
            }
            status, output = run_hook(hooks.after, env, hooks.timeout)
            if status != 0:
                message = _describe("after", hooks.after, status, output, hooks.timeout)
                run.warnings.append({"path": source, "message": message})
                if isinstance(error, EmberkeepError):  # the job failed too: say both
                    error.args = (f"{error}\nand then the {message}",)


def for_job(configured: SourceHooks | None, job: str) -> Hooks | None:
    """The hooks a source's config gives one job (``backup`` or ``restore``)."""
    if configured is None:
        return None
    return Hooks(
        before=getattr(configured, f"before_{job}"),
        after=getattr(configured, f"after_{job}"),
        timeout=parse_duration(configured.timeout).total_seconds(),
    )
