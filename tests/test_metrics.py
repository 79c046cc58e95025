"""Prometheus metrics (README, "Monitoring"): `emberkeep metrics`, and `emberkeep run` serving
/metrics on loopback and writing a node_exporter textfile; all parsed with
prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Site
from prometheus_client.parser import text_string_to_metric_families

from emberkeep.demo.mongoserver import free_port
from emberkeep.monitor.metrics import Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """{(name, sorted labels): value} of every sample; each family a gauge with HELP."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation, family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def make_site(site: Site, tmp_path: Path, extra: str = "") -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}.txt").write_text(f"{i}\n" * 100)
    site.write_config(
        [data],
        source_extra='schedule = "0 2 * * *"\nobjectives = { rpo = "24h", rto = "1h" }',
        targets=(
            f'[[targets]]\nname = "local"\nurl = "file://{site.repo}"\n'
            f'[[targets]]\nname = "mirror"\nurl = "file://{tmp_path / "mirror"}"\n'
        ),
        extra=extra,
    )
    site.run("init")
    return data


def test_metrics_match_status_and_the_journal(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path)
    site.env["EMBERKEEP_NOW"] = "2026-03-01T02:00:00Z"
    [backup] = site.json("backup")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T03:00:00Z"
    site.run("check", "--target", "local")
    report = site.json("status")
    samples = parse(site.run("metrics").stdout)

    snap_time = ts("2026-03-01T02:00:00Z")
    assert value(samples, "emberkeep_source_last_backup_timestamp_seconds", source="files") == (
        snap_time
    )
    assert value(samples, "emberkeep_source_backup_age_seconds", source="files") == 3600
    assert value(samples, "emberkeep_source_rpo_seconds", source="files") == 86400
    assert value(samples, "emberkeep_source_rto_seconds", source="files") == 3600
    for state, expected in (("ok", 1), ("late", 0), ("breached", 0)):
        assert value(samples, "emberkeep_source_rpo_state", source="files", state=state) == expected
    assert value(samples, "emberkeep_source_rto_state", source="files", state="untested") == 1
    assert value(samples, "emberkeep_source_next_run_timestamp_seconds", source="files") == ts(
        "2026-03-02T02:00:00Z"
    )
    summary = backup["snapshot"]["summary"]
    files = {"source": "files", "target": "local"}
    assert value(samples, "emberkeep_last_backup_bytes", **files) == summary["bytes"]
    assert value(samples, "emberkeep_last_backup_stored_bytes", **files) == summary["bytes_stored"]
    assert value(samples, "emberkeep_last_backup_files", **files) == 3

    backup_job = {"job": "backup", **files}
    assert value(samples, "emberkeep_job_last_success_timestamp_seconds", **backup_job) == snap_time
    assert value(samples, "emberkeep_job_last_ok", **backup_job) == 1
    assert value(samples, "emberkeep_job_last_duration_seconds", **backup_job) >= 0
    copy = {"job": "replicate", "source": "files", "target": "mirror"}
    assert value(samples, "emberkeep_job_last_ok", **copy) == 1
    check = {"job": "check", "source": "", "target": "local"}
    assert value(samples, "emberkeep_job_last_run_timestamp_seconds", **check) == ts(
        "2026-03-01T03:00:00Z"
    )

    for target in report["targets"]:
        name = target["name"]
        assert value(samples, "emberkeep_target_up", target=name) == 1
        assert value(samples, "emberkeep_target_snapshots", target=name) == 1
        assert value(samples, "emberkeep_snapshots", source="files", target=name) == 1
        assert (
            value(samples, "emberkeep_target_repository_bytes", target=name)
            == (target["repository_bytes"])
        )
        assert value(samples, "emberkeep_target_free_bytes", target=name) > 0
        assert value(samples, "emberkeep_target_last_copy_timestamp_seconds", target=name) == (
            snap_time
        )
        assert value(samples, "emberkeep_target_low_space", target=name) == 0
    assert value(samples, "emberkeep_target_replication_lag_seconds", target="mirror") == 0
    assert value(samples, "emberkeep_status", state="warning") == 1  # the RTO is untested
    assert value(samples, "emberkeep_breaches") == 0
    assert value(samples, "emberkeep_warnings") == len(report["warnings"]) == 1

    # --json: the same samples, as data
    as_json = site.json("metrics")
    from_json = {
        (name, tuple(sorted(sample["labels"].items()))): sample["value"]
        for name, family in as_json.items()
        for sample in family["samples"]
    }
    moving = {key for key in samples if key[0] == "emberkeep_target_free_bytes"}  # disk in use
    assert moving and {k: v for k, v in from_json.items() if k not in moving} == {
        k: v for k, v in samples.items() if k not in moving
    }
    assert from_json.keys() == samples.keys()
    assert all(family["help"] for family in as_json.values())

    site.env["EMBERKEEP_NOW"] = "2026-03-02T03:00:00Z"  # a day and an hour later: breached
    samples = parse(site.run("metrics").stdout)  # metrics never exit 1 nor alert
    assert value(samples, "emberkeep_source_rpo_state", source="files", state="breached") == 1
    assert value(samples, "emberkeep_status", state="breach") == 1
    assert value(samples, "emberkeep_breaches") == 1


def test_run_writes_the_textfile_after_each_batch(site: Site, tmp_path: Path) -> None:
    textfile = tmp_path / "collector" / "emberkeep.prom"
    make_site(site, tmp_path, extra=f'[monitor]\nmetrics_textfile = "{textfile}"\n')
    site.env["EMBERKEEP_NOW"] = "2026-03-01T00:00:00Z"
    site.run("run", "--until", "2026-03-03T03:00:00Z")
    assert textfile.stat().st_mode & 0o777 == 0o644
    samples = parse(textfile.read_text())
    assert value(samples, "emberkeep_target_snapshots", target="local") == 3
    assert value(samples, "emberkeep_source_last_backup_timestamp_seconds", source="files") == ts(
        "2026-03-03T02:00:00Z"
    )
    assert value(samples, "emberkeep_status_timestamp_seconds") == ts("2026-03-03T02:00:00Z")
    assert not [p for p in textfile.parent.iterdir() if p.name.startswith(".")]  # no temp left

    other = tmp_path / "flag.prom"  # --metrics-textfile wins over the config
    site.env["EMBERKEEP_NOW"] = "2026-03-04T03:00:00Z"
    site.run("run", "--once", "--metrics-textfile", other)
    assert value(parse(other.read_text()), "emberkeep_target_snapshots", target="local") == 4


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", ""


def test_run_serves_metrics_on_loopback(site: Site, tmp_path: Path) -> None:
    make_site(site, tmp_path)
    site.env["EMBERKEEP_NOW"] = "2026-03-01T02:00:00Z"
    site.run("backup")
    port = free_port()
    cmd = [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), "run", "--json"]
    env = {**os.environ, "EMBERKEEP_NOW": "2026-03-01T03:00:00Z"}  # next run: tomorrow
    proc = subprocess.Popen(
        [*cmd, "--metrics-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline, answer = time.monotonic() + 20, None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = fetch(f"http://127.0.0.1:{port}/metrics")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert answer is not None, "the metrics server never answered"
        status, content_type, body = answer
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        samples = parse(body)
        assert value(samples, "emberkeep_target_snapshots", target="local") == 1
        assert value(samples, "emberkeep_source_backup_age_seconds", source="files") >= 3600
        assert fetch(f"http://127.0.0.1:{port}/")[0] == 404

        second = subprocess.run(
            [*cmd, "--metrics-port", str(port)], capture_output=True, text=True, env=env
        )
        assert second.returncode == 2 and f"127.0.0.1:{port}" in second.stdout  # --json
        third = subprocess.run(
            [*cmd, "--metrics-port", "70000"], capture_output=True, text=True, env=env
        )
        assert third.returncode == 2 and "1 to 65535" in third.stdout
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    with pytest.raises(urllib.error.URLError):
        fetch(f"http://127.0.0.1:{port}/metrics")


def test_label_values_and_help_are_escaped() -> None:
    metrics = Metrics()
    metrics.add("x_total_bytes", 'help with "quotes" \\ and\nnewline', 1.5, name='a"b\\c\nd')
    metrics.add("x_total_bytes", "ignored: one family, one help", 2, name="plain")
    metrics.add("x_none", "a family with no value is left out", None, name="n")
    text = metrics.text()
    [family] = list(text_string_to_metric_families(text))
    assert family.documentation == 'help with "quotes" \\ and\nnewline'
    assert [(s.labels["name"], s.value) for s in family.samples] == [
        ('a"b\\c\nd', 1.5),
        ("plain", 2.0),
    ]
    assert "x_none" not in text
    assert json.dumps(text)  # plain text
