"""`emberkeep config sample` and `config check`: the sample is the strategy, and it validates."""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta

from conftest import ROOT, Site

from emberkeep import config, config_doc


def test_the_sample_with_recipients_filled_in_validates_and_is_the_strategy(site: Site) -> None:
    _, alice = site.keygen("alice.txt")
    _, bob = site.keygen("bob.txt")
    proc = site.run("config", "sample", "--recipient", alice, "--recipient", bob)
    site.config_path.write_text(proc.stdout)
    checked = json.loads(site.run("config", "check", "--json").stdout)
    assert checked["ok"] is True
    assert checked["sources"] == ["mongodb", "config", "media", "code"]

    parsed = config.load(str(site.config_path))
    assert parsed.keys.recipients == [alice, bob]
    mongo, conf, media, code = parsed.sources
    assert isinstance(mongo, config.MongoSource) and mongo.retention and mongo.objectives
    # daily 14 days, weekly 3 months, monthly a year; RTO 1 h; the RPO moved from the
    # strategy's 24 h to 1 minute by the oplog archiver
    assert (mongo.retention.daily, mongo.retention.weekly, mongo.retention.monthly) == (14, 13, 12)
    assert (mongo.objectives.rpo_delta, mongo.objectives.rto_delta) == (
        timedelta(minutes=1),
        timedelta(hours=1),
    )
    assert mongo.pitr is not None and mongo.pitr.enabled and mongo.pitr.slice_seconds == 5
    assert isinstance(conf, config.FilesSource) and conf.retention
    assert conf.retention.weekly == 26  # six months of weekly configuration backups
    assert any("nginx" in str(p) for p in conf.paths)
    assert isinstance(media, config.FilesSource) and media.retention
    assert media.retention.daily == 30
    assert isinstance(code, config.GitSource)
    assert all(s.schedule for s in parsed.sources)
    assert [(t.name, t.url.split(":")[0], t.copies) for t in parsed.targets] == [
        ("local", "file", "all"),
        ("remote", "sftp", "all"),
        ("cold", "s3", "monthly"),
    ]
    assert parsed.drill.schedule and parsed.check.schedule and parsed.prune.schedule
    assert parsed.notify is not None and parsed.notify.email is not None
    assert parsed.notify.webhooks


def test_the_sample_without_recipients_parses_but_check_refuses_only_the_placeholder(
    site: Site,
) -> None:
    """A sample that validated with a made-up key would encrypt to nobody on this site."""
    text = site.run("config", "sample").stdout
    tomllib.loads(text)  # it is TOML
    site.config_path.write_text(text)
    proc = site.run("config", "check", ok=False)
    assert proc.returncode == 2
    problems = [line.strip() for line in proc.stderr.splitlines() if ": " in line.strip()]
    assert [p.split(":")[0] for p in problems if p.startswith(("keys", "sources", "targets"))] == [
        "keys.recipients"
    ], proc.stderr
    assert "is not an age recipient" in proc.stderr


def test_config_check_names_the_problem_and_exits_2(site: Site) -> None:
    _, alice = site.keygen()
    text = site.run("config", "sample", "--recipient", alice).stdout
    site.config_path.write_text(text.replace('schedule = "0 2 * * *"', 'schedule = "0 25 * * *"'))
    proc = site.run("config", "check", ok=False)
    assert proc.returncode == 2
    assert "schedule" in proc.stderr
    assert "0 25 * * *" in proc.stderr
    site.config_path.unlink()
    proc = site.run("config", "check", ok=False)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_the_committed_config_reference_is_what_config_doc_generates(site: Site) -> None:
    """docs/config.md is generated from the schema; after changing config.py, regenerate it:
    `emberkeep config doc > docs/config.md`."""
    generated = site.run("config", "doc").stdout
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == generated, "docs/config.md is stale: run `emberkeep config doc`"
    for struct in (config.MongoSource, config.Email, config.Monitor):
        for name in struct.__struct_encode_fields__:
            assert f"| `{name}` |" in generated, f"{struct.__name__}.{name} undocumented"


def test_every_key_in_the_config_reference_says_what_it_is_for() -> None:
    """Each row of docs/config.md has an "about": a comment beside the field in
    config/schema.py (or alone on the line above it), or its ``Meta(description=...)``."""
    section, undescribed = "", []
    for line in config_doc.render().splitlines():
        if line.startswith("## "):
            section = line.removeprefix("## ")
        elif line.startswith("| `"):
            key, about = line.split(" | ")[0].removeprefix("| "), line.rsplit("|", 2)[1]
            if not about.strip():
                undescribed.append(f"{section} {key}")
    assert not undescribed, f"no description in config/schema.py for: {undescribed}"


def test_a_field_without_a_comment_takes_none_from_the_field_above() -> None:
    source = (
        "class A:\n"
        "    a: int = 0  # about a\n"
        "    b: int = 0\n"
        "    # about c\n"
        "    c: int = 0\n"
        "    # two lines above d\n"
        "    # are not d's\n"
        "    d: int = 0\n"
    )
    assert config_doc.field_notes(source) == {("A", "a"): "about a", ("A", "c"): "about c"}
