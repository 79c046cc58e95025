"""The operator's month: the strategy's config run for a simulated March 2026
(``EMBERKEEP_NOW`` + ``run --until``) on a write-only backup host, with a separate verifier
host (a second state dir and config, holding the identity) running the monthly drills and
the weekly read-data checks; a snapshot tagged before an upgrade; the night of 1 April with
the local disk unmounted; then the database-corruption recovery, the restoration log and
the runbook.

Targets: local (file://, the backup server's own disk), remote (sftp, the real sshd of the
tests), cold (s3 on versitygw, monthly copies of the database only). The database is
FerretDB (the session's test server)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Site
from notify_servers import WebhookReceiver, notify_toml, webhook  # noqa: F401
from servers import S3Server, SshServer

DB = "candle_month"
WEEKS = ["2026-03-08T12:00:00Z", "2026-03-15T12:00:00Z", "2026-03-22T12:00:00Z",
         "2026-03-29T12:00:00Z", "2026-03-31T12:00:00Z"]  # fmt: skip
UNMOUNTED_NIGHT = ("2026-03-31T23:30:00Z", "2026-04-01T01:00:00Z")  # 1 April, local time
END = "2026-04-01T12:00:00Z"


def _run(
    site: Site, state: Path, config: Path, now: str, *args: str | Path, ok: bool | None = True
):
    site.env["EMBERKEEP_NOW"] = now
    proc = site.run("-c", config, *args, ok=ok)
    del site.env["EMBERKEEP_NOW"]
    return proc


@pytest.mark.slow
def test_a_month_of_the_strategy_with_a_verifier_host(
    site: Site,
    tmp_path: Path,
    mongo_server: Any,
    mongo_client: Any,
    sftp_server: SshServer,
    s3_server: S3Server,
    webhook: WebhookReceiver,  # noqa: F811
) -> None:
    mongo_client.drop_database(DB)
    mongo_client[DB].products.insert_many([{"sku": i, "name": f"candle {i}"} for i in range(200)])
    media = tmp_path / "media"
    media.mkdir()
    for i in range(20):
        (media / f"p{i}.png").write_bytes(os.urandom(2000))
    identity, recipient = site.keygen()
    local = tmp_path / "local-disk"
    remote = sftp_server.url(tmp_path / "remote-repo")
    site.env.update(s3_server.env())
    cold = s3_server.url(s3_server.make_bucket(), "cold")
    sources = f"""
[[sources]]
name = "mongodb"
type = "mongodb"
uri = "{mongo_server.uri}"
databases = ["{DB}"]
schedule = "0 2 * * *"
retention = {{ daily = 7, weekly = 4, monthly = 12, keep_tags = ["before-upgrade"] }}
objectives = {{ rpo = "26h", rto = "1h" }}

[[sources]]
name = "media"
type = "files"
paths = ["{media}"]
schedule = "30 2 * * *"
retention = {{ daily = 7, weekly = 4, monthly = 12 }}
objectives = {{ rpo = "26h", rto = "4h" }}
"""
    targets = f"""
[[targets]]
name = "local"
url = "file://{local}"

[[targets]]
name = "remote"
url = "{remote}"

[[targets]]
name = "cold"
url = "{cold}"
copies = "monthly"
sources = ["mongodb"]
"""
    backup_host = site.root / "emberkeep.toml"
    backup_host.write_text(
        f'[site]\nname = "candle"\nstate_dir = "{site.root / "state"}"\n'
        'timezone = "Europe/Berlin"\n'
        f'[keys]\nrecipients = ["{recipient}"]\n'
        + sources + targets
        + '[prune]\nschedule = "0 4 * * *"\n[replicate]\nschedule = "0 6 * * *"\n'
        + '[objectives]\nserver_failure = "4h"\ndisaster = "8h"\n'
        + notify_toml(webhooks=[webhook.url])
    )  # fmt: skip
    verifier_state = tmp_path / "verifier-state"
    verifier = tmp_path / "verifier.toml"
    verifier.write_text(
        f'[site]\nname = "candle"\nstate_dir = "{verifier_state}"\n'
        'timezone = "Europe/Berlin"\n'
        f'[keys]\nrecipients = ["{recipient}"]\nidentity_file = "{identity}"\n'
        + sources.replace('schedule = "0 2 * * *"\n', "").replace('schedule = "30 2 * * *"\n', "")
        + targets.split("[[targets]]", 2)[0] + "[[targets]]" + targets.split("[[targets]]", 2)[2]
        + '[check]\nschedule = "0 5 * * 0"\nread_data_subset = "25%"\n'
        + '[drill]\nschedule = "0 6 1 * *"\ntarget = "remote"\n'
        + notify_toml(webhooks=[webhook.url])
    )  # fmt: skip
    assert "file://" not in verifier.read_text()  # the verifier has no way to the local disk
    state = site.root / "state"

    _run(site, state, backup_host, "2026-02-28T12:00:00Z", "init")
    previous = "2026-02-28T12:00:00Z"
    for end in WEEKS:
        _run(site, state, backup_host, previous, "run", "--until", end)
        _run(site, state, verifier, previous, "run", "--until", end)
        if end == WEEKS[0]:  # before the shop's upgrade
            _run(site, state, backup_host, "2026-03-09T10:00:00Z", "backup", "mongodb",
                 "--tag", "before-upgrade")  # fmt: skip
        previous = end
    _run(site, state, backup_host, previous, "run", "--until", UNMOUNTED_NIGHT[0])
    local.rename(tmp_path / "unmounted")
    local.mkdir()
    night_run = _run(
        site, state, backup_host, UNMOUNTED_NIGHT[0], "run", "--until", UNMOUNTED_NIGHT[1],
        ok=None,
    )  # fmt: skip
    assert night_run.returncode == 1  # the jobs failed: local is reported, not silently lost
    assert night_run.stdout.count("is committed in remote") == 2
    local.rmdir()
    (tmp_path / "unmounted").rename(local)
    _run(site, state, backup_host, UNMOUNTED_NIGHT[1], "run", "--until", END)
    _run(site, state, verifier, previous, "run", "--until", END)

    def log(config: Path, kind: str) -> list[dict[str, Any]]:
        return json.loads(_run(site, state, config, END, "log", "--kind", kind, "--json").stdout)

    # the verifier: both monthly drills of both sources, and every weekly check, passed
    drills = log(verifier, "drill")
    assert sorted((d["started"][:10], d["source"], d["outcome"]) for d in drills) == [
        ("2026-03-01", "media", "ok"), ("2026-03-01", "mongodb", "ok"),
        ("2026-04-01", "media", "ok"), ("2026-04-01", "mongodb", "ok"),
    ]  # fmt: skip
    assert all(d["details"]["rto_ok"] for d in drills)
    checks = log(verifier, "check")
    sundays = ["2026-03-01", "2026-03-08", "2026-03-15", "2026-03-22", "2026-03-29"]
    assert sorted({c["started"][:10] for c in checks}) == sundays
    assert all(c["outcome"] == "ok" for c in checks) and {c["target"] for c in checks} == {
        "remote", "cold"}  # fmt: skip

    # no false "breached" alert on either host (the one true failure: the unmounted night)
    posts = webhook.take()
    assert not [p for p in posts if p["emberkeep"]["kind"] == "rto"], posts
    assert not [p for p in posts if p["emberkeep"]["kind"] == "rpo"], posts
    status = json.loads(_run(site, state, backup_host, END, "status", "--json", ok=None).stdout)
    assert not status["breaches"], status["breaches"]

    def held(target: str, config: Path = backup_host) -> list[dict[str, Any]]:
        out = _run(site, state, config, END, "snapshots", "--target", target, "--json")
        return json.loads(out.stdout)

    # the tagged snapshot survived every nightly prune
    assert [s["time"] for s in held("local") if "before-upgrade" in s["tags"]] == [
        "2026-03-09T10:00:00Z"
    ]
    # the unmounted night reached remote and cold, and replicate filled local in after
    night = [s for s in held("remote") if s["time"].startswith("2026-04-01T00")]
    assert {s["source"] for s in night} == {"mongodb", "media"}
    assert {s["id"] for s in night} <= {s["id"] for s in held("local")}
    cold_held = held("cold")
    assert {s["source"] for s in cold_held} == {"mongodb"}  # cold holds only the database
    # the night of 1 April (backed up to remote) sent cold March's last database snapshot:
    # the same monthly snapshot local and remote keep for March
    [march] = [s["id"] for s in cold_held]
    assert [s["time"] for s in cold_held] == ["2026-03-31T00:00:00Z"]  # 2:00 in Berlin
    for name in ("local", "remote"):
        out = _run(site, state, backup_host, END, "prune", "--dry-run", "--target", name,
                   "--json").stdout  # fmt: skip
        [decision] = [d for d in json.loads(out)[name]["snapshots"] if d["id"] == march]
        assert decision["action"] == "keep" and "monthly" in decision["reason"], decision

    # database corruption: recover --only mongodb --at T; the live config stays as it is
    mongo_client[DB].products.delete_many({})
    live = backup_host.read_bytes()
    _run(site, state, backup_host, END, "recover", "--from", remote, "--identity", identity,
         "--only", "mongodb", "--at", "2026-03-20T12:00:00Z", "-c", backup_host)  # fmt: skip
    assert backup_host.read_bytes() == live
    assert mongo_client[DB].products.count_documents({}) == 200
    restoration = log(backup_host, "recover")
    assert [(r["kind"], r["details"]["from"]) for r in restoration] == [("recover", remote)]

    # the runbook for this config: the sftp copy for server failure and disaster
    runbook = _run(site, state, backup_host, END, "runbook").stdout
    for title in ("Complete server failure (RTO 4h)", "Disaster recovery (RTO 8h)"):
        body = runbook.split(f"## {title}")[1].split("\n## ")[0]
        assert "- Recover from `remote`" in body and "lost with the server" in body
        assert "Last resort, `cold`" in body and "up to a month old" in body
    assert "## Database corruption (RTO 1h)" in runbook
