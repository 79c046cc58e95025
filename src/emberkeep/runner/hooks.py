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
- Nothing else of emberkeep's environment reaches a hook but ``PATH``, ``HOME``, ``USER``,
  ``LOGNAME``, ``LANG``, ``LC_*``, ``TZ`` and the names the source lists in ``hooks.env``:
  emberkeep runs with the targets' credentials (``AWS_*``) and often database passwords in
  its environment, and a hook is someone else's program (README, service hooks).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..config import SourceHooks
from ..errors import EmberkeepError

OUTPUT_TAIL = 2000  # characters of a hook's output kept in messages
PASSED_ON = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ"})  # and LC_*
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HookFailed(EmberkeepError):
    """A before hook failed or timed out: the job did not run."""


@dataclass(frozen=True)
class Hooks:
    before: str | None = None
    after: str | None = None
    timeout: float = 600.0
    env: tuple[str, ...] = ()  # more names passed on from emberkeep's environment


@dataclass
class HookRun:
    """What the hooks of one job did, for the job's result."""

    warnings: list[dict[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def hook_environment(context: dict[str, str], names: tuple[str, ...] = ()) -> dict[str, str]:
    """What a hook sees (module docstring): a few of emberkeep's variables, the ``names``
    the source asks for, then ``context`` (the ``EMBERKEEP_*`` values). A NUL, which no
    environment can hold (a hostile file name in an error), is written ``\\0``."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ON or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env |= {name: os.environ[name] for name in names if name in os.environ}
    env |= context
    return {k: v.replace("\0", "\\0") for k, v in env.items()}


def run_hook(
    command: str, env: dict[str, str], timeout: float, names: tuple[str, ...] = ()
) -> tuple[int | None, str]:
    """Run one hook; (exit status or None when it timed out and was killed, output).

    ``env`` is the job's context, ``names`` what else the source passes on
    (``hook_environment``). Raises OSError or ValueError when it cannot be started."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=hook_environment(env, names),
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


def _attempt(which: str, command: str, env: dict[str, str], hooks: Hooks) -> str | None:
    """Run a hook; None when it succeeded, else what went wrong, for an error or warning."""
    try:
        status, output = run_hook(command, env, hooks.timeout, hooks.env)
    except (OSError, ValueError) as exc:
        return f"{which} hook `{command}` could not be started ({exc})"
    if status == 0:
        return None
    if status is None:
        what = f"timed out after {hooks.timeout:g}s and was killed"
    else:
        what = f"exited {status}"
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
            env = {**run.env, "EMBERKEEP_HOOK": "before"}
            message = _attempt("before", hooks.before, env, hooks)
            if message is not None:
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
            message = _attempt("after", hooks.after, env, hooks)
            if message is not None:
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
        timeout=configured.timeout.seconds,
        env=tuple(configured.env),
    )
