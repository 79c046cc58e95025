"""Service hooks (README; runner/hooks.py): before failure aborts, after always runs,
timeouts kill."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import Site

from emberkeep.errors import EmberkeepError
from emberkeep.runner.hooks import HookFailed, Hooks, around


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()]


def _log(path: Path) -> str:
    return f'echo "$EMBERKEEP_HOOK $EMBERKEEP_JOB $EMBERKEEP_SOURCE $EMBERKEEP_OUTCOME" >> {path}'


def test_before_and_after_run_around_a_successful_job(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ran = []
    with around(Hooks(before=_log(log), after=_log(log)), "backup", "media") as run:
        ran.append("job")
    assert ran == ["job"]
    assert _lines(log) == ["before backup media", "after backup media success"]
    assert run.warnings == []


def test_a_failing_before_hook_aborts_the_job_and_shows_its_output(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ran = []
    hooks = Hooks(before="echo pm2 says no; exit 3", after=_log(log))
    with pytest.raises(HookFailed) as failed, around(hooks, "restore", "mongodb"):
        ran.append("job")
    assert ran == []
    message = str(failed.value)
    assert "exited 3" in message and "pm2 says no" in message and "restore not run" in message
    # the after hook still ran, told of the failure, so a stopped service is started again
    assert _lines(log) == ["after restore mongodb failure"]


def test_the_after_hook_runs_when_the_job_fails(tmp_path: Path) -> None:
    log = tmp_path / "log"
    err = tmp_path / "err"
    hooks = Hooks(after=f'{_log(log)}; echo "$EMBERKEEP_ERROR" > {err}')
    with pytest.raises(EmberkeepError, match="disk full"), around(hooks, "backup", "media"):
        raise EmberkeepError("disk full")
    assert _lines(log) == ["after backup media failure"]
    assert err.read_text().strip() == "disk full"


def test_a_failing_after_hook_is_a_warning_after_success_and_named_after_failure(
    tmp_path: Path,
) -> None:
    hooks = Hooks(after="echo cannot start; exit 1")
    with around(hooks, "backup", "media") as run:
        pass
    assert len(run.warnings) == 1 and "cannot start" in run.warnings[0]["message"]
    with pytest.raises(EmberkeepError) as failed, around(hooks, "backup", "media"):
        raise EmberkeepError("the backup failed")
    assert "the backup failed" in str(failed.value) and "after hook" in str(failed.value)


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # The timeout must let the shell start its child and write the pid even on a loaded
    # machine (the kill races the hook by design); 3 s is ample, and far below the child's 60.
    hooks = Hooks(before=f"sleep 60 & echo $! > {pid_file}; wait", timeout=3)
    started = time.monotonic()
    timed_out = r"timed out after 3s and was killed"
    with pytest.raises(HookFailed, match=timed_out), around(hooks, "backup", "media"):
        pytest.fail("the job must not run")
    assert time.monotonic() - started < 40  # killed at the timeout, not after the child's 60 s
    assert pid_file.exists(), "the hook was killed before it started its child"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 30  # a poll: it returns once the child is gone
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the hook's child survived the timeout"


def test_context_reaches_the_hook_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    hooks = Hooks(before=f'echo "$EMBERKEEP_TARGET $EMBERKEEP_SNAPSHOT" > {out}')
    with around(hooks, "restore", "media", target="local", snapshot="abc123"):
        pass
    assert out.read_text().strip() == "local abc123"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


# -- through the CLI: the hooks of a source's config around backup and restore ----------


def test_cli_runs_a_sources_hooks_around_backup_and_restore(site: Site, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("candles\n")
    log = tmp_path / "log"
    gate = tmp_path / "app-may-stop"
    seen = tmp_path / "env-seen"
    hooks = (
        "hooks = { "
        f"before_backup = 'test -e {gate} || {{ echo pm2 refused; exit 4; }}', "
        f"after_backup = '{_log(log)}', "
        f"before_restore = '{_log(log)}; env > {seen}', "
        f"after_restore = 'echo \"$EMBERKEEP_SNAPSHOT $EMBERKEEP_OUTCOME\" >> {log}', "
        "timeout = '30s', env = ['APP_ENV'] }"
    )
    site.write_config(paths=[data], source_extra=hooks)
    site.env.update(AWS_SECRET_ACCESS_KEY="aws-secret-value", DB_PASSWORD="db-secret-value")
    site.env["APP_ENV"] = "staging"
    site.run("init")

    failed = site.run("backup", ok=False)
    assert failed.returncode == 1 and "pm2 refused" in failed.stderr
    assert site.snapshots() == []  # the before hook failed: no backup was taken
    assert _lines(log) == ["after backup files failure"]

    gate.touch()
    snapshot = site.json("backup")[0]["snapshot"]
    assert _lines(log)[-1] == "after backup files success"

    site.run("restore", "latest", "--to", tmp_path / "out")
    assert _lines(log)[-2:] == ["before restore files", f"{snapshot['id']} success"]
    env = seen.read_text()
    assert "APP_ENV=staging" in env.splitlines()  # listed under hooks.env
    assert "secret-value" not in env and "AWS_SECRET_ACCESS_KEY" not in env, env


# -- what a hook sees of emberkeep's environment ------------------------------------------


def test_a_hook_sees_a_minimal_environment_and_the_names_it_asks_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-secret",
        "AWS_SESSION_TOKEN": "session-token-secret",
        "MONGO_PASSWORD": "mongo-secret",
        "GITHUB_TOKEN": "ghp-secret",
    }
    for name, value in {**secrets, "APP_ENV": "production", "LC_TIME": "C", "TZ": "UTC"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env"
    hooks = Hooks(before=f"env > {out}", env=("APP_ENV", "NOT_SET_ANYWHERE"))
    with around(hooks, "backup", "media", target="remote"):
        pass
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    for name, value in secrets.items():
        assert name not in seen and value not in out.read_text(), name
    assert seen["APP_ENV"] == "production"  # listed in hooks.env
    assert "NOT_SET_ANYWHERE" not in seen
    assert (seen["LC_TIME"], seen["TZ"]) == ("C", "UTC")
    assert seen["PATH"] == os.environ["PATH"] and seen["HOME"] == os.environ["HOME"]
    assert (seen["EMBERKEEP_JOB"], seen["EMBERKEEP_TARGET"]) == ("backup", "remote")
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "APP_ENV", "PWD", "SHLVL", "_"}
    unexpected = {n for n in seen if n not in allowed and not n.startswith(("LC_", "EMBERKEEP_"))}
    assert not unexpected, unexpected  # PWD, SHLVL and _ are the shell's own


def test_a_nul_in_what_a_hook_is_told_is_shown_escaped_not_a_crash(tmp_path: Path) -> None:
    err = tmp_path / "err"
    hooks = Hooks(after=f'printf "%s" "$EMBERKEEP_ERROR" > {err}')
    with pytest.raises(EmberkeepError, match="cannot read"), around(hooks, "restore", "media"):
        raise EmberkeepError("cannot read a\0b")  # a hostile file name, say
    assert err.read_text() == "cannot read a\\0b"
