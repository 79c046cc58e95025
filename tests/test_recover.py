"""`emberkeep recover`: a whole site back on a "new host" from only a target URL, its
credentials and an identity; resumable, dry-run, point in time, clear errors; and the
generated runbook."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from conftest import Site
from pymongo import MongoClient
from servers import S3Server, SshServer
from servers_mongo import MongoTestServer, client_of, module_server

from emberkeep.demo import shopdb
from emberkeep.demo.run import _refs, tree_digest
from emberkeep.demo.sitegen import DemoSite, generate

DB = "recoverdb"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTestServer]:
    yield from module_server(tmp_path_factory, "mongo-recover", 16 << 20)


@pytest.fixture(scope="module")
def client(server: MongoTestServer) -> Iterator[MongoClient[Any]]:
    yield from client_of(server)


def build(
    site: Site, tmp_path: Path, server: MongoTestServer, client: MongoClient[Any], url: str,
    *, media_hook: str = "",
) -> DemoSite:  # fmt: skip
    """The shop (files, config files, git repository, database), backed up to ``url``."""
    demo = generate(tmp_path / "host", media_files=12)
    shopdb.generate(client, DB, size_mb=0.5, drop=True)
    env_local, server_env, nginx = demo.config_files
    sources = f"""
[[sources]]
name = "mongodb"
type = "mongodb"
uri = "{server.uri}"
databases = ["{DB}"]
objectives = {{ rto = "1h" }}

[[sources]]
name = "media"
type = "files"
paths = ["{demo.media}"]
objectives = {{ rto = "4h" }}
{media_hook}

[[sources]]
name = "config"
type = "files"
paths = ["{env_local}", "{server_env}", "{nginx}", "{demo.nginx_enabled}"]

[[sources]]
name = "code"
type = "git"
path = "{demo.app}"
"""
    site.write_config(extra_sources=sources, targets=f'[[targets]]\nname = "remote"\nurl = "{url}"')
    site.run("init")
    site.run("backup")
    return demo


def state_of(demo: DemoSite, client: MongoClient[Any]) -> dict[str, Any]:
    """What the recovery must bring back, exactly."""
    files = {str(p): tree_digest(p) for p in (demo.media, *demo.config_files, demo.nginx_enabled)}
    return {"files": files, "refs": _refs(demo.app), "db": state_of_db(client)}


def destroy(site: Site, demo: DemoSite, client: MongoClient[Any]) -> None:
    """The server is gone: site files, database, config, writer key, state dir."""
    shutil.rmtree(demo.root)
    client.drop_database(DB)
    site.config_path.unlink()
    shutil.rmtree(site.state_dir)


def recover(site: Site, url: str, *args: str, ok: bool | None = True) -> Any:
    return site.run("recover", "--from", url, "--identity", site.identities[0], *args, ok=ok)


def test_complete_server_failure_from_sftp(
    site: Site, tmp_path: Path, server: MongoTestServer, client: MongoClient[Any],
    sftp_server: SshServer,
) -> None:  # fmt: skip
    url = sftp_server.url(tmp_path / "remote-repo")
    demo = build(site, tmp_path, server, client, url)
    before = state_of(demo, client)
    config_text = site.config_path.read_text()
    destroy(site, demo, client)

    result = json.loads(recover(site, url, "--json").stdout)
    assert [s["source"] for s in result["steps"]] == ["config", "code", "media", "mongodb"]
    assert all(s["status"] == "restored" for s in result["steps"])
    assert result["steps"][3]["rto_ok"] is True and result["seconds"] > 0
    assert site.config_path.read_text() == config_text
    assert (site.state_dir / "writer.key").exists()
    assert state_of(demo, client) == before
    fsck = subprocess.run(["git", "-C", str(demo.app), "fsck", "--full"], capture_output=True)
    assert fsck.returncode == 0
    assert "| mongodb | mongodb |" in Path(result["report"]).read_text()
    # the recovered site is a working site again: its next backup works
    site.run("backup")


def test_complete_server_failure_from_s3(
    site: Site, tmp_path: Path, server: MongoTestServer, client: MongoClient[Any],
    s3_server: S3Server,
) -> None:  # fmt: skip
    url = s3_server.url(s3_server.make_bucket(), "shop")
    site.env.update(s3_server.env())
    demo = build(site, tmp_path, server, client, url)
    before = state_of(demo, client)
    destroy(site, demo, client)
    recover(site, url)
    assert state_of(demo, client) == before


def test_interrupted_recover_resumes_without_redoing_steps(
    site: Site, tmp_path: Path, server: MongoTestServer, client: MongoClient[Any]
) -> None:
    """The media step dies (its before-restore hook kills the recover, once)."""
    url = f"file://{tmp_path / 'repo'}"
    flag = tmp_path / "killed-once"
    hook = f'hooks = {{ before_restore = "test -e {flag} || {{ touch {flag}; kill -9 $PPID; }}" }}'
    demo = build(site, tmp_path, server, client, url, media_hook=hook)
    before = state_of(demo, client)
    destroy(site, demo, client)

    first = recover(site, url, "--yes", ok=False)  # --yes: run the restore hooks shown
    assert first.returncode != 0 and flag.exists()
    progress = json.loads((site.state_dir / "recover.json").read_text())
    assert set(progress["done"]) == {"config", "code"}

    second = recover(site, url, "--yes", "--json")
    steps = {s["source"]: s["status"] for s in json.loads(second.stdout)["steps"]}
    assert steps == {"config": "skipped", "code": "skipped", "media": "restored",
                     "mongodb": "restored"}  # fmt: skip
    assert state_of(demo, client) == before


def test_dry_run_changes_nothing_and_only_at_restores_the_database_as_of(
    site: Site, tmp_path: Path, server: MongoTestServer, client: MongoClient[Any]
) -> None:
    url = f"file://{tmp_path / 'repo'}"
    site.env["EMBERKEEP_NOW"] = "2026-05-01T02:00:00Z"
    demo = build(site, tmp_path, server, client, url)
    early = state_of(demo, client)["db"]
    client[DB].customers.delete_many({})
    site.env["EMBERKEEP_NOW"] = "2026-05-02T02:00:00Z"
    site.run("backup", "mongodb")
    del site.env["EMBERKEEP_NOW"]
    config_text = site.config_path.read_text()
    destroy(site, demo, client)

    plan = recover(site, url, "--dry-run", "--json")
    planned = json.loads(plan.stdout)
    assert planned["dry_run"] is True and len(planned["steps"]) == 4
    assert all(s["status"] == "planned" for s in planned["steps"])
    assert not site.config_path.exists() and not site.state_dir.exists()
    assert not demo.root.exists() and DB not in client.list_database_names()

    recover(site, url, "--only", "mongodb", "--at", "2026-05-01T12:00:00Z")
    assert state_of_db(client) == early  # the first backup's database, customers and all
    assert not demo.root.exists()  # nothing else was restored
    assert not site.config_path.exists()  # --only never writes the config
    assert config_text


def test_only_mongodb_at_leaves_the_live_config_byte_identical_and_is_journaled(
    site: Site, tmp_path: Path, server: MongoTestServer, client: MongoClient[Any]
) -> None:
    """The README's "database corruption" procedure on the running server: the config
    edited since the backup (a new comment, mode 0640) stays exactly as it is; the recover
    and the restores before it are in `log --kind recover` with where from, where to, how
    long and the outcome, and each recover keeps its own report."""
    url = f"file://{site.repo}"
    site.env["EMBERKEEP_NOW"] = "2026-05-01T02:00:00Z"
    demo = build(site, tmp_path, server, client, url)
    early = state_of(demo, client)["db"]
    client[DB].customers.delete_many({})
    site.env["EMBERKEEP_NOW"] = "2026-05-02T02:00:00Z"
    site.run("backup", "mongodb")
    site.config_path.write_text(site.config_path.read_text() + "# edited after the backup\n")
    site.config_path.chmod(0o640)
    live = site.config_path.read_bytes()
    stat_before = site.config_path.stat()
    out = tmp_path / "restored-media"
    site.run("restore", "latest", "--source", "media", "--to", out)

    site.env["EMBERKEEP_NOW"] = "2026-05-02T09:00:00Z"
    args = ("recover", "--from", url, "--identity", site.identities[0], "--only", "mongodb")
    result = json.loads(site.run(*args, "--at", "2026-05-01T12:00:00Z", "--json").stdout)
    assert result["config_written"] is False and result["only"] == ["mongodb"]
    assert site.config_path.read_bytes() == live
    assert site.config_path.stat().st_mode == stat_before.st_mode
    assert site.config_path.stat().st_ino == stat_before.st_ino  # not replaced either
    assert not list(tmp_path.glob("**/emberkeep.toml.before-recover-*"))
    assert state_of_db(client) == early
    site.env["EMBERKEEP_NOW"] = "2026-05-02T10:00:00Z"
    site.run(*args)  # the newest: a second recover, a second report

    rows = site.json("log", "--kind", "recover")
    assert [(r["kind"], r["source"], r["outcome"]) for r in rows] == [
        ("restore", "media", "ok"),
        ("recover", None, "ok"),
        ("recover", None, "ok"),
    ]
    restore, first, second = rows
    assert restore["details"]["to"] == str(out.resolve()) and restore["target"] == "remote"
    assert first["details"]["from"] == url and first["details"]["only"] == ["mongodb"]
    assert [s["source"] for s in first["details"]["steps"]] == ["mongodb"]
    assert first["details"]["steps"][0]["destination"] == server.uri
    assert first["details"]["config_written"] is False
    assert first["seconds"] is not None and first["started"] == "2026-05-02T09:00:00Z"
    assert first["details"]["steps"][0]["snapshot"] != second["details"]["steps"][0]["snapshot"]
    text = site.run("log", "--kind", "recover").stdout
    assert "recover -> remote: ok" in text and f"from {url}" in text
    assert "restore media -> remote: ok" in text and str(out.resolve()) in text
    assert len(list(site.state_dir.glob("recover-report-*.md"))) == 2
    assert site.config_path.read_bytes() == live

    bogus = site.run("log", "--kind", "bogus", ok=False)
    assert bogus.returncode == 2 and "recover" in bogus.stderr and "backup" in bogus.stderr


def state_of_db(client: MongoClient[Any]) -> dict[str, Any]:
    raw = client[DB].codec_options.with_options(document_class=RawBSONDocument)
    return {
        name: (
            sorted(d.raw for d in client[DB].get_collection(name, codec_options=raw).find()),
            sorted(str(sorted(i.items())) for i in client[DB][name].list_indexes()),
        )
        for name in client[DB].list_collection_names()
    }


def test_bad_inputs_fail_before_anything_is_touched(
    site: Site, tmp_path: Path, server: MongoTestServer, client: MongoClient[Any],
    s3_server: S3Server, sftp_server: SshServer,
) -> None:  # fmt: skip
    url = f"file://{tmp_path / 'repo'}"
    demo = build(site, tmp_path, server, client, url)
    destroy(site, demo, client)

    site.keygen("stranger.txt")
    wrong = site.run("recover", "--from", url, "--identity", site.identities[-1], ok=False)
    assert wrong.returncode == 1 and "identity" in wrong.stderr.lower()
    assert not site.config_path.exists() and not site.state_dir.exists()

    dead = sftp_server.url(tmp_path / "nothing", timeout=3).replace(f":{sftp_server.port}/", ":1/")
    unreachable = recover(site, dead, ok=False)
    assert unreachable.returncode == 1 and "127.0.0.1" in unreachable.stderr

    bucket = s3_server.make_bucket()
    no_credentials = recover(site, s3_server.url(bucket, "shop", timeout=5), ok=False)
    assert no_credentials.returncode == 1 and bucket in no_credentials.stderr
    assert not site.config_path.exists() and not site.state_dir.exists()


def test_runbook_covers_every_scenario(site: Site, tmp_path: Path) -> None:
    demo = generate(tmp_path / "host", media_files=3)
    site.write_config(
        [demo.media],
        extra_sources=(
            '[[sources]]\nname = "mongodb"\ntype = "mongodb"\nuri = "mongodb://db:27017"\n'
            f'[[sources]]\nname = "code"\ntype = "git"\npath = "{demo.app}"\n'
            f'[[sources]]\nname = "config"\ntype = "files"\npaths = ["{demo.config_files[0]}"]\n'
        ),
        extra='[runbook]\nroles = { operator = "Sam (on call)", keyholder = "Alex" }\n',
    )
    text = site.run("runbook").stdout
    for title in ("Database corruption (RTO 1 hour)", "Application code issues (RTO 30 minutes)",
                  "Configuration issues (RTO 15 minutes)", "Complete server failure (RTO 4 hours)",
                  "Disaster recovery (RTO 8 hours)"):  # fmt: skip
        assert f"## {title[:-1]}, the strategy's: set " in text  # none configured
    assert "every target is on the server itself" in text
    assert "restore latest --source mongodb --to-uri mongodb://db:27017 --drop" in text
    assert "restore latest --source config --to /" in text
    assert f"emberkeep recover --from file://{site.repo} --identity" in text
    assert "Sam (on call) runs the steps" in text and "kept offline by Alex" in text


def test_the_runbook_keeps_a_database_password_out_of_the_command_line(
    site: Site, tmp_path: Path
) -> None:
    site.write_config(
        [tmp_path],
        extra_sources=(
            '[[sources]]\nname = "mongodb"\ntype = "mongodb"\n'
            'uri = "mongodb://backup:Hunter2Secret@db:27017/?authSource=admin"\n'
        ),
    )
    text = site.run("runbook").stdout
    assert "Hunter2Secret" not in text
    assert "read -rs MONGO_URI; export MONGO_URI" in text
    assert "restore latest --source mongodb --to-uri env:MONGO_URI --drop" in text
    assert site.json("runbook") == {"format": "markdown", "text": text}


def test_a_recover_whose_restore_lost_a_view_fails_naming_it(
    site: Site, tmp_path: Path, documentdb: Any, documentdb_ferretdb: Any
) -> None:
    """The database moved onto FerretDB v2 (same data, another front end), which answers ok
    to a view and makes a plain collection of it: the recover restores everything else,
    names the view by source, exits 1, and does that source again on the next run."""
    db = "recover_view"
    client = documentdb.client()
    try:
        client.drop_database(db)
        client[db].orders.insert_many([{"_id": n, "paid": n % 2 == 0} for n in range(20)])
        client[db].create_collection("paid", viewOn="orders", pipeline=[{"$match": {"paid": True}}])
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "app.env").write_text("DB=documentdb\n")

        def write(uri: str) -> None:
            site.write_config(
                [conf], extra_sources=f'[[sources]]\nname = "db"\ntype = "mongodb"\n'
                f'uri = "{uri}"\ndatabases = ["{db}"]\n',
            )  # fmt: skip

        write(documentdb.uri)
        site.run("init")
        site.run("backup")
        write(documentdb_ferretdb.uri)  # the site now serves through FerretDB v2
        site.env["EMBERKEEP_NOW"] = "2099-01-01T00:00:00Z"  # stored after the first, surely
        site.run("backup", "files")  # stores the site config that names it
        del site.env["EMBERKEEP_NOW"]
        shutil.rmtree(conf)
        client.drop_database(db)
        site.config_path.unlink()
        shutil.rmtree(site.state_dir)

        url = f"file://{site.repo}"
        proc = recover(site, url, "--json", ok=False)
        assert proc.returncode == 1, proc.stderr
        steps = {s["source"]: s for s in json.loads(proc.stdout)["steps"]}
        assert steps["files"]["status"] == "restored" and steps["files"]["problems"] == []
        assert steps["db"]["status"] == "incomplete", steps["db"]
        [lost] = steps["db"]["problems"]
        assert lost["path"] == f"{db}.paid" and "view not kept" in lost["message"], lost
        assert (conf / "app.env").read_text() == "DB=documentdb\n"
        assert client[db].orders.count_documents({}) == 20  # the data is all there

        again = recover(site, url, ok=False)
        assert again.returncode == 1
        assert f"db: {db}.paid: view not kept" in again.stderr, again.stderr
        assert "files (files) -> /: already restored before" in again.stdout, again.stdout
        assert "recovered 1 of 2 sources" in again.stdout
    finally:
        client.drop_database(db)
        client.close()


STRATEGY_TARGETS = """
[[targets]]
name = "local"
url = "file://{repo}"

[[targets]]
name = "remote"
url = "sftp://backup-user@backup-server.example.com/backups/candle?key=/root/.ssh/backup"

[[targets]]
name = "cold"
url = "s3://candle-cold/shop?region=eu-west-1&storage_class=DEEP_ARCHIVE"
copies = "monthly"
"""


def test_the_runbook_takes_its_rtos_from_the_config_and_recovers_off_the_host(
    site: Site, tmp_path: Path
) -> None:
    """Server failure and disaster recover from the sftp copy, never the dead server's own
    disk; the Deep Archive copy comes last, with its age and a thaw longer than the RTO."""
    site.write_config(
        [tmp_path],
        source_extra='objectives = { rto = "45m" }',
        extra_sources=(
            '[[sources]]\nname = "mongodb"\ntype = "mongodb"\nuri = "mongodb://db:27017"\n'
            'objectives = { rto = "2h" }\n'
        ),
        targets=STRATEGY_TARGETS.format(repo=site.repo),
        extra='[objectives]\nserver_failure = "3h"\ndisaster = "6h"\n',
    )
    text = site.run("runbook").stdout
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[2:]}  # after "Before"
    assert set(sections) == {
        "Database corruption (RTO 2h)",
        "Application code issues (RTO 30 minutes, the strategy's: set objectives.rto on "
        "the source)",
        "Configuration issues (RTO 15 minutes, the strategy's: set objectives.rto on the source)",
        "Complete server failure (RTO 3h)",
        "Disaster recovery (RTO 6h)",
        "Key rotation",
        "A team member leaves",
    }
    sftp = "sftp://backup-user@backup-server.example.com/backups/candle?key=/root/.ssh/backup"
    for title in ("Complete server failure (RTO 3h)", "Disaster recovery (RTO 6h)"):
        body = sections[title]
        assert "- Recover from `remote`" in body
        first = next(line for line in body.splitlines() if line.startswith("emberkeep recover"))
        assert first.startswith(f"emberkeep recover --from '{sftp}'")
        assert "`local`" in body and "lost with the server" in body
        assert f"--from file://{site.repo}" not in body
        cold = next(line for line in body.splitlines() if "Last resort, `cold`" in line)
        assert "up to a month old" in cold and "DEEP_ARCHIVE" in cold
        assert "thaw of up to 12 hours" in cold
    assert "more than the RTO of 3h" in sections["Complete server failure (RTO 3h)"]
    assert "more than the RTO of 6h" in sections["Disaster recovery (RTO 6h)"]
    # a bulk thaw is slower still
    site.config_path.write_text(
        site.config_path.read_text().replace("DEEP_ARCHIVE", "DEEP_ARCHIVE&thaw_tier=Bulk")
    )
    assert "thaw of up to 48 hours (Bulk tier)" in site.run("runbook").stdout
    bad = site.config_path.read_text().replace('disaster = "6h"', 'disaster = "6 hourz"')
    site.config_path.write_text(bad)
    proc = site.run("runbook", ok=False)
    assert proc.returncode == 2 and "objectives.disaster" in proc.stderr


def test_recover_dry_run_says_how_old_the_snapshots_are(site: Site, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    site.write_config([tmp_path / "data"])
    site.run("init")
    site.env["EMBERKEEP_NOW"] = "2026-05-01T02:00:00Z"
    site.run("backup")
    site.env["EMBERKEEP_NOW"] = "2026-05-03T08:00:00Z"
    out = site.run("recover", "--from", f"file://{site.repo}", "--identity", site.identities[0],
                   "--dry-run", "--json")  # fmt: skip
    warnings = json.loads(out.stdout)["warnings"]
    assert any("up to 2d old" in w or "up to 54h old" in w for w in warnings), warnings
    assert not any("thaw" in w for w in warnings)


def test_the_runbook_has_the_key_rotation_and_leaver_procedures_for_this_site(
    site: Site, tmp_path: Path
) -> None:
    site.keygen()
    site.keygen("second.txt")
    site.write_config(
        [tmp_path],
        identity=False,
        targets=(
            f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
            f'[[targets]]\nname = "offsite"\nurl = "file://{tmp_path / "offsite"}"\n'
        ),
        extra='[runbook]\nroles = { operator = "Sam (on call)", keyholder = "Alex" }\n',
    )
    text = site.run("runbook").stdout
    rotation = text.split("## Key rotation\n")[1].split("\n## ")[0]
    ek = f"emberkeep -c {site.config_path}"
    assert "every target (`local`, `offsite`)" in rotation
    assert "No `[keys] rotate_every` is set" in rotation and "Who: Sam (on call)" in rotation
    assert f"{ek} keys rotate " in rotation and f"{ek} keys list" in rotation
    assert f"{ek} check --read-data --identity /path/to/identity.txt" in rotation
    leaves = text.split("## A team member leaves\n")[1].split("\n## ")[0]
    assert f"`{site.recipients[0]}`, `{site.recipients[1]}`" in leaves and "Who: Alex" in leaves
    assert f"{ek} keys remove RECIPIENT --update-config --identity /path/to/identity.txt" in leaves
    assert f"{ek} keys rotate --writer" in leaves and f"{ek} keys list" in leaves
    assert "take their storage credentials away" in leaves
    assert f"{ek} keys check --identity /path/to/identity.txt" in leaves
    assert "replicate --target NEW --re-encrypt" in leaves
    assert f"{ek} keys check --identity /path/to/identity.txt" in rotation

    config = site.config_path.read_text()
    site.config_path.write_text(config.replace("[keys]\n", '[keys]\nrotate_every = "180d"\n', 1))
    text = site.run("runbook").stdout
    assert '`[keys] rotate_every = "180d"`: `emberkeep status` warns' in text
