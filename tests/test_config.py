"""The config contract: a bad config exits 2 naming the file, the field and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyrage
import pytest
from conftest import Site

from emberkeep import config
from emberkeep.errors import ConfigError

RECIPIENT = "age1p20dzap49j00296yar2hsz32vv2jg4pznt9dsug89q7l4lrnnfms9755wt"  # any valid one


def emberkeep(*args: str | os.PathLike[str], cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "emberkeep", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def config_text(
    root: Path,
    *,
    site: str = "",
    keys: str = "",
    source: str = "",
    sources: str = "",
    target: str = "",
    targets: str = "",
    tail: str = "",
) -> str:
    """A valid config, with extra lines spliced into its tables."""
    return f"""
[site]
name = "test-site"
state_dir = "{root / "state"}"
{site}

[keys]
recipients = ["{RECIPIENT}"]
{keys}

[[sources]]
name = "files"
type = "files"
paths = ["{root / "src"}"]
{source}
{sources}

[[targets]]
name = "local"
url = "file://{root / "repo"}"
{target}
{targets}
{tail}
"""


# (what is wrong, the lines that make it wrong, the field named, words of the fix)
BAD_CONFIGS: list[tuple[str, dict[str, str], str, list[str]]] = [
    ("unknown key", {"site": "nmae = 'x'"}, "site.nmae", ["unknown key", "spelling"]),
    (
        "unknown key in a source",
        {"source": "excludes = ['*.tmp']"},
        "sources[1] (files).excludes",
        ["unknown key"],
    ),
    (
        "unknown key in a target",
        {"target": "copy = 'all'"},
        "targets[1] (local).copy",
        ["unknown key"],
    ),
    (
        "wrong type: a string for a list",
        {"source": "exclude = '*.tmp'"},
        "sources[1] (files).exclude",
        ["list", "'*.tmp'"],
    ),
    (
        "wrong type: a string for a count",
        {"source": "retention = { daily = 'ten' }"},
        "sources[1] (files).retention.daily",
        ["integer", "'ten'"],
    ),
    (
        "wrong type: a number for a duration",
        {"tail": "[prune]\ngrace = 5"},
        "prune.grace",
        ["string"],
    ),
    (
        "bad cron expression",
        {"source": "schedule = '0 25 * * *'"},
        "sources[1] (files).schedule",
        ["cron", "out of range", "hour 0-23", "'0 2 * * *'"],
    ),
    (
        "cron with six fields",
        {"source": "schedule = '0 0 2 * * *'"},
        "sources[1] (files).schedule",
        ["cron", "has 6 fields where cron has five fields"],
    ),
    (
        "prune at the same minute as a backup",
        {"source": "schedule = '0 2 * * *'", "tail": "[prune]\nschedule = '0 2 * * *'"},
        "prune.schedule",
        ["same minute", "sources[1] (files).schedule", "2026-01-01 02:00 UTC", "move one"],
    ),
    (
        "bad duration",
        {"source": "objectives = { rpo = '24 hours', rto = '1h' }"},
        "sources[1] (files).objectives.rpo",
        ["duration", "'24h'"],
    ),
    (
        "bad retention age",
        {"source": "retention = { within = '7days' }"},
        "sources[1] (files).retention.within",
        ["duration", "'7d'"],
    ),
    ("bad prune grace", {"tail": "[prune]\ngrace = 'soon'"}, "prune.grace", ["duration"]),
    (
        "negative retention count",
        {"source": "retention = { daily = -1 }"},
        "sources[1] (files).retention.daily",
        ["greater than or equal to 0"],
    ),
    (
        "duplicate source names",
        {"sources": "[[sources]]\nname = 'files'\ntype = 'git'\npath = '/srv/code'"},
        "sources",
        ["'files'", "its own name"],
    ),
    (
        "duplicate target names",
        {"targets": "[[targets]]\nname = 'local'\nurl = 'file:///srv/other'"},
        "targets",
        ["'local'", "its own name"],
    ),
    (
        "unknown source type",
        {"sources": "[[sources]]\nname = 'db'\ntype = 'postgres'"},
        "sources[2] (db)",
        ["'files', 'mongodb' or 'git'"],
    ),
    (
        "unknown target scheme",
        {"targets": "[[targets]]\nname = 'far'\nurl = 'ftp://host/backups'"},
        "targets[2] (far).url",
        ["file:///", "sftp://", "s3://"],
    ),
    (
        "bad copies value",
        {"target": "copies = 'daily'"},
        "targets[1] (local).copies",
        ["'all', 'weekly' or 'monthly'"],
    ),
    (
        "relative source path",
        {"sources": "[[sources]]\nname = 'rel'\ntype = 'files'\npaths = ['media']"},
        "sources[2] (rel).paths",
        ["relative", "absolute"],
    ),
    (
        "a missing required field",
        {"sources": "[[sources]]\nname = 'code'\ntype = 'git'"},
        "sources[2] (code).path",
        ["required", "add it"],
    ),
    (
        "an endless timeout in a target URL",
        {"targets": "[[targets]]\nname = 'far'\nurl = 'sftp://u@host/srv/b?timeout=inf'"},
        "targets[2] (far).url",
        ["timeout='inf'", "from 1 to 3600"],
    ),
    (
        "a NUL in a source path",
        {"sources": "[[sources]]\nname = 'nul'\ntype = 'files'\npaths = [\"/srv/a\\u0000b\"]"},
        "sources[2] (nul).paths",
        ["NUL character"],
    ),
    (
        "target credentials asked for by a hook",
        {"source": "hooks = { after_backup = 'true', env = ['APP_ENV', 'AWS_SECRET_ACCESS_KEY'] }"},
        "sources[1] (files).hooks.env",
        ["AWS_SECRET_ACCESS_KEY", "never passed to hooks"],
    ),
    (
        "a key whose name looks like terminal markup",
        {"site": '"colour[red]" = "blue"'},
        "site.colour[red]",
        ["unknown key"],
    ),
    (
        "a key whose name holds a closing markup tag",
        {"site": '"x[/]" = 1'},
        "site.x[/]",
        ["unknown key"],
    ),
]


@pytest.mark.parametrize(
    ("what", "lines", "field", "hints"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_a_bad_config_exits_2_naming_file_field_and_fix(
    tmp_path: Path, what: str, lines: dict[str, str], field: str, hints: list[str]
) -> None:
    path = tmp_path / "emberkeep.toml"
    path.write_text(config_text(tmp_path, **lines))
    tomllib.loads(path.read_text())  # the test's own TOML is valid: the config is what is bad
    proc = emberkeep("-c", path, "snapshots", cwd=tmp_path)
    assert proc.returncode == 2, (what, proc.stderr, proc.stdout)
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr
    assert field in proc.stderr, proc.stderr
    for hint in hints:
        assert hint in proc.stderr, (hint, proc.stderr)
    assert proc.stdout == ""


SECRET = "S3cretPW"
IDENTITY = str(pyrage.x25519.Identity.generate())  # an age secret key, made for the test

# (what is wrong, the lines that make it wrong, the field named, words of the fix, the secret)
SECRET_CONFIGS: list[tuple[str, dict[str, str], str, list[str], str]] = [
    (
        "an identity pasted as the identity file",
        {"keys": f"identity_file = '{IDENTITY}'"},
        "keys.identity_file",
        ["identity (secret key)", "path"],
        IDENTITY,
    ),
    (
        "a misspelt key holding a URI with a password",
        {
            "sources": "[[sources]]\nname = 'db'\ntype = 'mongodb'\n"
            f"ur = 'mongodb://admin:{SECRET}@db:27017/shop'"
        },
        "sources[2] (db).ur",
        ["unknown key"],
        SECRET,
    ),
    (
        "a misspelt key holding a bare password",
        {"site": f"pasword = '{SECRET}'"},
        "site.pasword",
        ["unknown key"],
        SECRET,
    ),
    (
        "a misspelt key in the email table",
        {"tail": f"[notify.email]\nur = 'smtp://u:{SECRET}@mail'\nto = ['a@b.c']\nfrom = 'x@b.c'"},
        "notify.email.ur",
        ["unknown key"],
        SECRET,
    ),
    (
        "an SMTP URL where the email table goes",
        {"tail": f"[notify]\nemail = 'smtp://u:{SECRET}@mail'"},
        "notify.email",
        ["table"],
        SECRET,
    ),
    (
        "a webhook string instead of a list",
        {"tail": f"[notify]\nwebhooks = 'https://hooks.example.com/services/T0/B0/{SECRET}'"},
        "notify.webhooks",
        ["list"],
        SECRET,
    ),
    (
        "a webhook that is not an http URL",
        {"tail": f"[notify]\nwebhooks = ['hooks.example.com/services/T0/B0/{SECRET}']"},
        "notify.webhooks[1]",
        ["http://", "https://"],
        SECRET,
    ),
    (
        "a target URL with a password and an unsupported scheme",
        {"targets": f"[[targets]]\nname = 'far'\nurl = 'ftp://u:{SECRET}@host/x'"},
        "targets[2] (far).url",
        ["sftp://", "s3://"],
        SECRET,
    ),
    (
        "a target URL whose password holds a slash",
        {"targets": f"[[targets]]\nname = 'far'\nurl = 'ftp://u:{SECRET}/x@host/x'"},
        "targets[2] (far).url",
        ["sftp://", "s3://"],
        SECRET,
    ),
    (
        "a target URL with a password but no scheme",
        {"targets": f"[[targets]]\nname = 'far'\nurl = 'u:{SECRET}@host/x'"},
        "targets[2] (far).url",
        ["sftp://", "s3://"],
        SECRET,
    ),
    (
        "an SMTP address with a password but no scheme where the email table goes",
        {"tail": f"[notify]\nemail = 'u:{SECRET}@mail'"},
        "notify.email",
        ["table"],
        SECRET,
    ),
    (
        "a hook command where the hooks table goes",
        {"source": f"hooks = 'PGPASSWORD={SECRET} pg_dump shop'"},
        "sources[1] (files).hooks",
        ["table"],
        SECRET,
    ),
    (
        "an SMTP URL with a password and a bad port",
        {
            "tail": f"[notify.email]\nurl = 'smtp://u:{SECRET}@mail:port'\n"
            "to = ['a@b.c']\nfrom = 'x@b.c'"
        },
        "notify.email.url",
        ["port"],
        SECRET,
    ),
]


def assert_hides(path: Path, field: str, hints: list[str], secret: str) -> None:
    """The CLI refuses the config at ``path`` naming ``field``, without showing ``secret``."""
    tomllib.loads(path.read_text())  # the test's own TOML is valid: the config is what is bad
    for extra in ([], ["--json"]):
        proc = emberkeep("-c", path, "snapshots", *extra, cwd=path.parent)
        assert proc.returncode == 2, (proc.stderr, proc.stdout)
        shown = proc.stderr + proc.stdout
        assert "Traceback" not in shown
        assert field in shown, shown
        for hint in hints:
            assert hint in shown, (hint, shown)
        for form in (secret, secret.lower()):
            assert form not in shown, shown


@pytest.mark.parametrize(
    ("what", "lines", "field", "hints", "secret"),
    SECRET_CONFIGS,
    ids=[c[0] for c in SECRET_CONFIGS],
)
def test_a_config_error_never_shows_a_secret(
    tmp_path: Path, what: str, lines: dict[str, str], field: str, hints: list[str], secret: str
) -> None:
    path = tmp_path / "emberkeep.toml"
    path.write_text(config_text(tmp_path, **lines))
    assert_hides(path, field, hints, secret)


def test_an_identity_listed_as_a_recipient_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "emberkeep.toml"
    listed = f'["{RECIPIENT}", "{IDENTITY}"]'
    path.write_text(config_text(tmp_path).replace(f'["{RECIPIENT}"]', listed))
    hints = ["identity (secret key)", "age1", "offline"]
    assert_hides(path, "keys.recipients", hints, IDENTITY)


def test_an_identity_given_as_the_identity_option_is_not_shown(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    proc = site.run("--identity", IDENTITY, "restore", "latest", "--to", tmp_path / "out", ok=False)
    assert "--identity" in proc.stderr
    assert IDENTITY not in proc.stderr + proc.stdout


def test_a_bad_recipient_names_the_field_and_keygen(tmp_path: Path) -> None:
    path = tmp_path / "emberkeep.toml"
    path.write_text(config_text(tmp_path).replace(RECIPIENT, "age1notarecipient"))
    proc = emberkeep("-c", path, "snapshots", cwd=tmp_path)
    assert proc.returncode == 2
    assert str(path) in proc.stderr
    assert "keys.recipients" in proc.stderr
    assert "keygen" in proc.stderr
    assert "checksum or length" in proc.stderr  # it starts with age1: the rest is wrong


def test_a_state_dir_that_cannot_be_made_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "emberkeep.toml"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    state = blocker / "state"
    text = config_text(tmp_path)
    assert "state_dir = " in text
    path.write_text(
        "\n".join(
            f'state_dir = "{state}"' if line.startswith("state_dir = ") else line
            for line in text.splitlines()
        )
    )
    proc = emberkeep("-c", path, "status", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot create the state dir {state}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_toml_syntax_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "emberkeep.toml"
    path.write_text(config_text(tmp_path) + "\n[[sources]\nname = \n")
    proc = emberkeep("-c", path, "snapshots", cwd=tmp_path)
    assert proc.returncode == 2
    assert str(path) in proc.stderr
    assert "TOML" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.toml"
    proc = emberkeep("-c", missing, "snapshots", cwd=tmp_path)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "not found" in proc.stderr
    assert "-c" in proc.stderr
    assert "Traceback" not in proc.stderr

    # --json: the error is data on stdout too
    proc = emberkeep("-c", missing, "snapshots", "--json", cwd=tmp_path)
    assert proc.returncode == 2
    error = json.loads(proc.stdout)
    assert error["exit_code"] == 2
    assert str(missing) in error["error"]


def test_no_config_anywhere_exits_2(tmp_path: Path) -> None:
    assert not Path("/etc/emberkeep/emberkeep.toml").exists()  # the host's own fallback
    proc = emberkeep("snapshots", cwd=tmp_path)
    assert proc.returncode == 2
    assert "emberkeep.toml" in proc.stderr
    assert "-c" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_config_is_emberkeep_toml_in_the_current_directory(tmp_path: Path) -> None:
    assert not Path("/etc/emberkeep/emberkeep.toml").exists()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    text = config_text(tmp_path).replace(f'"{tmp_path / "state"}"', '"state"')  # relative
    (tmp_path / "emberkeep.toml").write_text(text)
    other = tmp_path / "elsewhere"
    other.mkdir()

    assert emberkeep("init", cwd=tmp_path).returncode == 0
    # relative paths in the file are taken relative to the file, not to the cwd
    assert (tmp_path / "state" / "writer.key").is_file()
    proc = emberkeep("snapshots", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    assert emberkeep("backup", cwd=tmp_path).returncode == 0
    proc = emberkeep("-c", "../emberkeep.toml", "snapshots", "--json", cwd=other)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1
    assert not (other / "state").exists()

    # the option works after the command name too
    proc = emberkeep("snapshots", "-c", tmp_path / "emberkeep.toml", "--json", cwd=other)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1


def test_snapshots_json_is_oldest_first_with_the_contract_keys(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    site.write_config(paths=[src])
    site.run("init")
    assert site.snapshots() == []

    # taken out of time order: the listing is still by time
    times = ["2026-03-01T02:00:00Z", "2026-02-27T02:00:00Z", "2026-03-02T02:00:00Z"]
    for n, when in enumerate(times):
        site.env["EMBERKEEP_NOW"] = when
        site.run("backup", "--tag", f"run{n}", "--tag", "nightly")
    site.env.pop("EMBERKEEP_NOW")
    rows = site.snapshots()
    assert [r["time"] for r in rows] == sorted(times)
    for row in rows:
        assert {"id", "time", "source", "target", "tags"} <= set(row)
        assert row["source"] == "files"
        assert row["target"] == "local"
        assert isinstance(row["id"], str) and len(row["id"]) >= 12
    assert [sorted(r["tags"]) for r in rows] == [
        ["nightly", "run1"],
        ["nightly", "run0"],
        ["nightly", "run2"],
    ]
    assert len({r["id"] for r in rows}) == 3
    assert site.json("snapshots", "--source", "files") == rows
    assert site.json("snapshots", "--target", "local") == rows
    assert site.json("snapshots", "--source", "other") == []


def test_emberkeep_now_sets_the_snapshot_time(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    site.write_config(paths=[src])
    site.run("init")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T02:00:00Z"
    backup = site.json("backup")[0]["snapshot"]
    assert backup["time"] == "2026-03-01T02:00:00Z"
    assert [r["time"] for r in site.snapshots()] == ["2026-03-01T02:00:00Z"]

    # another zone is the same instant
    site.env["EMBERKEEP_NOW"] = "2026-03-05T03:30:00+01:00"
    site.run("backup")
    assert site.snapshots()[-1]["time"] == "2026-03-05T02:30:00Z"

    # a malformed time is a usage error that names the variable
    site.env["EMBERKEEP_NOW"] = "yesterday"
    proc = site.run("backup", ok=False)
    assert proc.returncode == 2
    assert "EMBERKEEP_NOW" in proc.stderr
    assert "2026-03-01T02:00:00Z" in proc.stderr  # the example of the form


# -- config.parse, directly ---------------------------------------------------------------


def base(tmp_path: Path) -> dict[str, Any]:
    return tomllib.loads(config_text(tmp_path))


def parse_error(raw: dict[str, Any], path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(raw, path)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert str(path) in message
    return message


@pytest.mark.parametrize("value", ["90s", "15m", "24h", "7d", "2w", "1h30m", "1d 12h"])
def test_durations_that_parse(tmp_path: Path, value: str) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["objectives"] = {"rpo": value, "rto": value}
    raw["sources"][0]["retention"] = {"within": value}
    raw["prune"] = {"grace": value}
    parsed = config.parse(raw, tmp_path / "c.toml")
    objectives = parsed.sources[0].objectives
    assert objectives is not None and objectives.rpo_delta is not None
    assert objectives.rpo_delta.total_seconds() > 0


@pytest.mark.parametrize("value", ["", "24", "h", "24 hours", "1.5h", "-1h", "7days", "1y"])
def test_durations_that_do_not(tmp_path: Path, value: str) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["objectives"] = {"rto": value}
    message = parse_error(raw, tmp_path / "c.toml")
    assert "sources[1] (files).objectives.rto" in message
    assert "duration" in message


def test_duration_values() -> None:
    from emberkeep.durations import parse_duration

    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("7d").total_seconds() == 7 * 86400
    assert parse_duration("2w").total_seconds() == 14 * 86400
    assert parse_duration("90s").total_seconds() == 90


@pytest.mark.parametrize(
    "value", ["0 2 * * *", "*/15 * * * 1-5", "30 2 1 * *", "0 3 * * 0", "@daily", "@hourly"]
)
def test_schedules_that_parse(tmp_path: Path, value: str) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["schedule"] = value
    raw["check"] = {"schedule": value}
    parsed = config.parse(raw, tmp_path / "c.toml")
    assert parsed.sources[0].schedule == value
    raw = base(tmp_path)  # prune alone: at a backup's own minutes it would clash with it
    raw["prune"] = {"schedule": value}
    assert config.parse(raw, tmp_path / "c.toml").prune.schedule == value


@pytest.mark.parametrize(
    "value",
    ["0 25 * * *", "60 * * * *", "* * * *", "0 0 2 * * *", "@fortnightly", "daily", "0 0 32 * *"],
)
def test_schedules_that_do_not(tmp_path: Path, value: str) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["schedule"] = value
    message = parse_error(raw, tmp_path / "c.toml")
    assert "sources[1] (files).schedule" in message
    assert "cron" in message


# prune takes the exclusive lease on every target: not in the same minute as a backup or check
@pytest.mark.parametrize(
    ("backup", "check", "prune", "field", "first"),
    [
        ("0 2 * * *", None, "0 2 * * *", "sources[1] (files).schedule", "2026-01-01 02:00"),
        ("*/5 * * * *", None, "@hourly", "sources[1] (files).schedule", "2026-01-01 00:00"),
        ("0 3 * * 0", None, "0 3 1 * *", "sources[1] (files).schedule", "2026-02-01 03:00"),
        ("0 2 * * *", "@weekly", "@daily", "check.schedule", "2026-01-04 00:00"),
        ("0 2 * * *", "0 5 * * 0", "0 5 1 11 *", "check.schedule", "2026-11-01 05:00"),
    ],
)
def test_prune_in_the_same_minute_as_a_backup_or_check_is_a_config_error(
    tmp_path: Path, backup: str, check: str | None, prune: str, field: str, first: str
) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["schedule"] = backup
    raw["prune"] = {"schedule": prune}
    if check:
        raw["check"] = {"schedule": check}
    message = parse_error(raw, tmp_path / "c.toml")
    assert message.count("prune.schedule: fires at the same minute as") == 1, message
    assert f"as {field} " in message
    assert f"first at {first} UTC" in message
    assert "prune locks every target" in message and "move one of them" in message
    assert f"(got {prune!r})" in message


def test_prune_in_the_same_minute_as_replicate_is_a_config_error(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["replicate"] = {"schedule": "15 */6 * * *"}
    raw["prune"] = {"schedule": "15 12 * * *"}
    message = parse_error(raw, tmp_path / "c.toml")
    assert "prune.schedule: fires at the same minute as replicate.schedule" in message
    assert "first at 2026-01-01 12:15 UTC" in message
    raw["prune"] = {"schedule": "45 12 * * *"}
    assert config.parse(raw, tmp_path / "c.toml").prune.schedule == "45 12 * * *"


def test_prune_clashing_with_several_schedules_names_each(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["schedule"] = "*/15 * * * *"
    code = {"name": "code", "type": "git", "path": "/srv/code", "schedule": "0 * * * *"}
    raw["sources"] += [code, {"name": "db", "type": "mongodb", "schedule": "30 1 * * *"}]
    raw["prune"] = {"schedule": "0 4 * * *"}
    message = parse_error(raw, tmp_path / "c.toml")
    at_4 = "first at 2026-01-01 04:00 UTC"
    assert f"as sources[1] (files).schedule ('*/15 * * * *'; {at_4})" in message
    assert f"as sources[2] (code).schedule ('0 * * * *'; {at_4})" in message
    assert "(db)" not in message


@pytest.mark.parametrize(
    ("backups", "check", "prune"),
    [
        (["0 2 * * *", "0 2 * * *"], "@weekly", "0 4 * * *"),  # backups may share a minute
        (["30 2 * * *", "0 3 * * 0"], "0 5 * * 0", "@daily"),  # the scheduler test's site
        (["*/5 * * * *"], None, "2 4 * * *"),  # minutes that never meet
        (["0 */2 * * *"], None, "0 1-23/2 * * *"),  # hours that never meet
        (["0 3 * * 1"], "0 3 * * 3", "0 3 * * 0"),  # weekdays that never meet
        (["0 3 * * 1#2"], None, "0 3 15 * *"),  # the second Monday is never the 15th
    ],
)
def test_prune_offset_from_backups_and_check_passes(
    tmp_path: Path, backups: list[str], check: str | None, prune: str
) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["schedule"] = backups[0]
    for n, schedule in enumerate(backups[1:]):
        raw["sources"].append(
            {"name": f"more{n}", "type": "git", "path": "/srv/code", "schedule": schedule}
        )
    raw["prune"] = {"schedule": prune}
    if check:
        raw["check"] = {"schedule": check}
    parsed = config.parse(raw, tmp_path / "c.toml")
    assert parsed.prune.schedule == prune


def test_an_invalid_schedule_is_not_compared(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["schedule"] = "0 2 * * *"
    raw["prune"] = {"schedule": "0 2 * * * *"}
    message = parse_error(raw, tmp_path / "c.toml")
    assert "prune.schedule: '0 2 * * * *' is not a cron schedule" in message
    assert "same minute" not in message


@pytest.mark.parametrize("field", ["hourly", "daily", "weekly", "monthly", "yearly"])
def test_negative_retention_counts(tmp_path: Path, field: str) -> None:
    raw = base(tmp_path)
    raw["sources"][0]["retention"] = {field: -3}
    message = parse_error(raw, tmp_path / "c.toml")
    assert f"sources[1] (files).retention.{field}" in message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/backups",
        "/var/backups/site",
        "http://example.com/backups",
        "file:relative/path",
        "file://var/backups/site",  # two slashes: 'var' would be a host, not a directory
    ],
)
def test_unknown_or_malformed_target_urls(tmp_path: Path, url: str) -> None:
    raw = base(tmp_path)
    raw["targets"][0]["url"] = url
    message = parse_error(raw, tmp_path / "c.toml")
    assert "targets[1] (local).url" in message
    assert "file:///" in message


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sftp://u@host/b?timeout=1e309", "timeout='1e309'"),
        ("sftp://u@host/b?timeout=nan", "timeout='nan'"),
        ("sftp://u@host/b?timeout=-1", "timeout='-1'"),
        ("s3://bucket/p?timeout=inf", "timeout='inf'"),
        ("s3://bucket/p?thaw_poll=inf", "thaw_poll='inf'"),
        ("s3://bucket/p?thaw_timeout=99999999999999d", "thaw_timeout='99999999999999d'"),
        ("s3://bucket/p?lock_days=nan", "lock_days='nan'"),
        ("sftp://u:pw@host/b", "no password"),
    ],
)
def test_remote_url_options_are_checked_when_the_config_loads(
    tmp_path: Path, url: str, words: str
) -> None:
    raw = base(tmp_path)
    raw["targets"][0]["url"] = url
    message = parse_error(raw, tmp_path / "c.toml")
    assert "targets[1] (local).url" in message and words in message, message
    assert "target local:" not in message  # the field names it once


def test_a_duration_too_long_for_any_clock_is_a_config_error(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["prune"] = {"grace": "99999999999999d"}
    assert "too long" in parse_error(raw, tmp_path / "c.toml")


def test_duplicate_source_names(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["sources"].append({"name": "files", "type": "git", "path": "/srv/code"})
    message = parse_error(raw, tmp_path / "c.toml")
    assert "two sources are named 'files'" in message


def test_duplicate_target_names(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["targets"].append({"name": "local", "url": "s3://bucket/prefix"})
    message = parse_error(raw, tmp_path / "c.toml")
    assert "two targets are named 'local'" in message


def test_a_config_needs_a_target_and_a_recipient(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["targets"] = []
    assert "targets" in parse_error(raw, tmp_path / "c.toml")
    raw = base(tmp_path)
    raw["keys"]["recipients"] = []
    assert "keys.recipients" in parse_error(raw, tmp_path / "c.toml")
    raw = base(tmp_path)
    raw["keys"]["recipients"] = [RECIPIENT, RECIPIENT]
    assert "twice" in parse_error(raw, tmp_path / "c.toml")


def test_the_design_example_config_parses(site: Site, tmp_path: Path) -> None:
    _, alice = site.keygen("alice.txt")
    _, bob = site.keygen("bob.txt")
    text = f"""
[site]
name = "candle-ecommerce"
state_dir = "/var/lib/emberkeep"          # caches, journal, writer key by default

[keys]
recipients = ["{alice}", "{bob}"]           # who can read backups
identity_file = "/etc/emberkeep/identity.txt"   # optional: this host may read

[[sources]]
name = "mongodb"
type = "mongodb"
uri = "mongodb://localhost:27017"
databases = ["candle-ecommerce"]          # default: every non-system database
schedule = "0 2 * * *"
retention = {{ daily = 14, weekly = 13, monthly = 12 }}
objectives = {{ rpo = "24h", rto = "1h" }}

[[sources]]
name = "media"
type = "files"
paths = ["/var/www/candle-ecommerce/public/media"]
exclude = ["*.tmp"]
schedule = "30 2 * * *"
retention = {{ daily = 30 }}

[[sources]]
name = "config"
type = "files"
paths = ["/var/www/candle-ecommerce/.env.local", "/etc/nginx/sites-available/candle-ecommerce"]
schedule = "0 3 * * 0"
retention = {{ weekly = 26 }}

[[sources]]
name = "code"
type = "git"
path = "/var/www/candle-ecommerce"

[[targets]]
name = "local"
url = "file:///var/backups/candle-ecommerce"

[[targets]]
name = "remote"
url = "sftp://backup-user@backup-server.example.com/backups/candle-ecommerce"

[[targets]]
name = "cold"
url = "s3://bucket/candle?endpoint=https://s3.example.com&storage_class=DEEP_ARCHIVE"
copies = "monthly"                        # all | weekly | monthly

[notify]
email = {{ url = "smtp://localhost:25", from = "backup@example.com", to = ["admin@example.com"] }}
webhooks = ["https://hooks.example.com/emberkeep"]
"""
    path = tmp_path / "design.toml"
    path.write_text(text)
    parsed = config.load(str(path))
    assert parsed.site.name == "candle-ecommerce"
    assert parsed.site.state_dir == Path("/var/lib/emberkeep")
    assert parsed.keys.recipients == [alice, bob]
    assert parsed.keys.identity_file == Path("/etc/emberkeep/identity.txt")
    assert [(s.name, s.type) for s in parsed.sources] == [
        ("mongodb", "mongodb"),
        ("media", "files"),
        ("config", "files"),
        ("code", "git"),
    ]
    mongo, media, conf, code = (parsed.source(n) for n in ("mongodb", "media", "config", "code"))
    assert isinstance(mongo, config.MongoSource) and mongo.databases == ["candle-ecommerce"]
    assert mongo.retention is not None and mongo.objectives is not None
    assert mongo.retention.daily == 14 and mongo.retention.monthly == 12
    assert mongo.objectives.rpo_delta == timedelta(days=1)
    assert mongo.objectives.rto_delta == timedelta(hours=1)
    assert isinstance(media, config.FilesSource) and media.exclude == ["*.tmp"]
    assert isinstance(conf, config.FilesSource) and len(conf.paths) == 2
    assert isinstance(code, config.GitSource) and code.path == Path("/var/www/candle-ecommerce")
    assert [(t.name, t.copies) for t in parsed.targets] == [
        ("local", "all"),
        ("remote", "all"),
        ("cold", "monthly"),
    ]
    assert parsed.target(None).name == "local"
    assert parsed.notify is not None and parsed.notify.email is not None
    assert parsed.notify.email.to == ["admin@example.com"]
    assert parsed.notify.webhooks == ["https://hooks.example.com/emberkeep"]

    # and the CLI accepts it: an unknown source name is the only complaint
    proc = emberkeep("-c", path, "backup", "nosuch", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no source named 'nosuch'" in proc.stderr
    assert "mongodb, media, config, code" in proc.stderr


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    raw = base(tmp_path)
    raw["site"]["state_dir"] = "state-here"
    raw["keys"]["identity_file"] = "keys/id.txt"
    parsed = config.parse(raw, tmp_path / "conf" / "c.toml")
    assert parsed.site.state_dir == (tmp_path / "conf" / "state-here").resolve()
    assert parsed.keys.identity_file == (tmp_path / "conf" / "keys" / "id.txt").resolve()


def test_a_bad_scheduled_check_subset_is_a_config_error(tmp_path: Path) -> None:
    raw = tomllib.loads(
        f"""
[site]
name = "x"
[keys]
recipients = ["{RECIPIENT}"]
[[targets]]
name = "local"
url = "file:///var/backups/x"
[check]
read_data_subset = "150%"
"""
    )
    with pytest.raises(ConfigError) as error:
        config.parse(raw, tmp_path / "c.toml")
    assert "check.read_data_subset" in str(error.value) and "150%" in str(error.value)
