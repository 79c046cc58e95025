"""Alerts (README, "Monitoring"): email over a real SMTP server (aiosmtpd on loopback, with
STARTTLS and AUTH), webhooks to a real local HTTP server; rate limits, "resolved" messages,
and a notifier that fails never failing the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Site
from notify_servers import (
    PASSWORD,
    USER,
    SmtpServer,
    WebhookReceiver,
    notify_toml,
    smtp_server,
    smtp_tls_server,
    webhook,
)

from emberkeep.config import Email
from emberkeep.demo.mongoserver import free_port
from emberkeep.monitor.notify import Alert, EmailChannel, NotifyError

__all__ = ["smtp_server", "smtp_tls_server", "webhook"]  # fixtures


def backup_at(site: Site, when: str, ok: bool = True) -> str:
    site.env["EMBERKEEP_NOW"] = when
    return site.run("backup", ok=ok).stderr


def test_a_failed_backup_alerts_once_then_again_after_the_rate_limit_then_resolved(
    site: Site, tmp_path: Path, smtp_server: SmtpServer, webhook: WebhookReceiver
) -> None:
    data = tmp_path / "data"  # missing: the backup fails
    site.write_config(
        [data], extra=notify_toml(smtp=smtp_server.url(), webhooks=[webhook.url], rate_limit="6h")
    )
    site.run("init")
    stderr = backup_at(site, "2026-03-01T02:00:00Z", ok=False)
    assert str(data) in stderr

    [mail] = smtp_server.take()
    assert mail.subject == (
        "[emberkeep test-site] FAILED: backup of source files into target local failed"
    )
    assert mail.sender == "backup@example.com"
    assert mail.recipients == ["admin@example.com", "ops@example.com"]
    assert str(data) in mail.body  # the error
    assert "source: files" in mail.body and "target: local" in mail.body
    assert "time: 2026-03-01T02:00:00Z" in mail.body
    [post] = webhook.take()
    assert post["_content_type"] == "application/json"
    assert post["text"].startswith("[test-site] FAILED: backup of source files into target local")
    assert str(data) in post["text"]  # Slack shows `text`
    event = post["emberkeep"]
    assert (event["kind"], event["status"], event["job"]) == ("failure", "firing", "backup")
    assert (event["source"], event["target"]) == ("files", "local")
    assert str(data) in event["detail"]

    backup_at(site, "2026-03-01T03:00:00Z", ok=False)  # within the rate limit: nothing
    assert smtp_server.take() == [] and webhook.take() == []

    backup_at(site, "2026-03-01T08:30:00Z", ok=False)  # 6h30 after the last message: a reminder
    [mail] = smtp_server.take()
    assert "FAILED" in mail.subject and "1 repeats held back" in mail.body
    assert webhook.take()[0]["emberkeep"]["held_back"] == 1

    data.mkdir()
    (data / "a.txt").write_text("a\n")
    backup_at(site, "2026-03-01T09:00:00Z")  # recovered: one resolved message per channel
    [mail] = smtp_server.take()
    assert mail.subject == (
        "[emberkeep test-site] RESOLVED: backup of source files into target local succeeded again"
    )
    [post] = webhook.take()
    assert post["emberkeep"]["status"] == "resolved" and post["text"].startswith(
        "[test-site] RESOLVED"
    )
    backup_at(site, "2026-03-01T10:00:00Z")  # still fine: nothing more
    assert smtp_server.take() == [] and webhook.take() == []

    sent = [e for e in site.json("log", "--kind", "notify") if e["outcome"] == "ok"]
    assert len(sent) == 6  # 3 messages x 2 channels, each journaled
    assert {e["details"]["channel"] for e in sent} == {
        f"email smtp://127.0.0.1:{smtp_server.port}",
        f"webhook http://127.0.0.1:{webhook.port}/…",
    }
    assert all("T0SECRET" not in json.dumps(e) for e in sent)  # a webhook URL's path is secret


def test_a_dead_notifier_never_fails_the_backup_and_the_journal_shows_it(
    site: Site, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    dead_smtp, dead_http = free_port(), free_port()  # nothing listens on either
    smtp = f"smtp://{USER.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{dead_smtp}?starttls=true"
    hook = f"http://127.0.0.1:{dead_http}/hooks/T0SECRET"
    site.write_config(
        [data],
        source_extra='schedule = "0 2 * * *"',
        extra=notify_toml(smtp=smtp, webhooks=[hook], on_success=True),
    )
    site.run("init")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T02:00:00Z"
    proc = site.run("backup")  # exit 0: the snapshot is committed, whatever the notifiers do
    assert "could not send the OK alert by email smtp://alerts%40example.com:***@" in proc.stderr
    assert f"webhook http://127.0.0.1:{dead_http}/…" in proc.stderr
    assert len(site.snapshots()) == 1

    site.env["EMBERKEEP_NOW"] = "2026-03-01T12:00:00Z"  # the scheduler too: the job is ok
    run = site.run("run", "--until", "2026-03-02T03:00:00Z", "--json")
    ends = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(e["job"], e["outcome"]) for e in ends if e["event"] == "end"] == [
        ("backup:files", "ok")
    ]

    log = site.json("log")
    assert [(e["kind"], e["outcome"]) for e in log if e["kind"] == "backup"] == [
        ("backup", "ok")
    ] * 2
    failed = [e for e in log if e["kind"] == "notify"]
    assert len(failed) == 4 and all(e["outcome"] == "failed" for e in failed)
    channels = sorted(e["details"]["channel"] for e in failed[:2])
    assert channels[0].startswith(f"email smtp://alerts%40example.com:***@127.0.0.1:{dead_smtp}")
    assert channels[1] == f"webhook http://127.0.0.1:{dead_http}/…"
    assert all("refused" in e["error"].lower() for e in failed), [e["error"] for e in failed]
    assert all(e["details"]["alert"] == "success" for e in failed)
    text = site.run("log", "--kind", "notify").stdout
    assert "notify files -> local: failed" in text
    everything = proc.stderr + run.stderr + json.dumps(log) + text
    assert PASSWORD not in everything and "T0SECRET" not in everything


def test_starttls_and_auth_against_a_real_server_and_the_password_stays_secret(
    site: Site, tmp_path: Path, smtp_tls_server: SmtpServer
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    site.write_config(
        [data], extra=notify_toml(smtp=smtp_tls_server.url(auth=True), on_success=True)
    )
    site.run("init")
    site.env["EMBERKEEP_NOW"] = "2026-03-01T02:00:00Z"
    ok = site.run("backup")
    [mail] = smtp_tls_server.take()
    assert mail.tls and mail.auth == USER  # STARTTLS first, then AUTH
    assert mail.subject.startswith("[emberkeep test-site] OK: backup of source files into target")
    assert "1 files" in mail.body

    wrong = smtp_tls_server.url(auth=True, password="not-the-Pa55word")
    site.write_config([data], extra=notify_toml(smtp=wrong, on_success=True))
    bad = site.run("backup")  # the backup is fine; the mail is refused
    assert smtp_tls_server.take() == []
    [entry] = [e for e in site.json("log", "--kind", "notify") if e["outcome"] == "failed"]
    assert "535" in entry["error"] and "***" in entry["details"]["channel"]
    assert "535" in bad.stderr
    shown = ok.stderr + bad.stderr + json.dumps(site.json("log"))
    assert PASSWORD not in shown and "not-the-Pa55word" not in shown


def test_a_webhook_answering_an_error_is_journaled(
    site: Site, tmp_path: Path, webhook: WebhookReceiver
) -> None:
    webhook.status = 500
    site.write_config([tmp_path / "missing"], extra=notify_toml(webhooks=[webhook.url]))
    site.run("init")
    proc = site.run("backup", ok=False)
    assert len(webhook.take()) == 1  # it arrived; the receiver answered 500
    [entry] = site.json("log", "--kind", "notify")
    assert entry["outcome"] == "failed" and "HTTP 500" in entry["error"]
    assert "T0SECRET" not in proc.stderr + json.dumps(entry)


def test_a_password_is_never_sent_in_clear_to_another_host() -> None:
    email = Email(url="smtp://u:pw@192.0.2.1:25", to=["a@example.com"], from_="b@example.com")
    channel = EmailChannel(email, timeout=1)
    assert channel.label == "email smtp://u:***@192.0.2.1:25"
    with pytest.raises(NotifyError, match=r"starttls=true"):
        channel.send(Alert("failure", "x"), "site")


BAD_NOTIFY = [
    ("email = { url = 'http://mail', from = 'a@b', to = ['c@d'] }", "notify.email.url", "smtp://"),
    (
        "email = { url = 'smtp://u:hunter22@mail?starttls=yes', from = 'a@b', to = ['c@d'] }",
        "notify.email.url",
        "starttls=true",
    ),
    (
        "email = { url = 'smtp://mail?tls=1', from = 'a@b', to = ['c@d'] }",
        "notify.email.url",
        "unknown option 'tls'",
    ),
    ("email = { url = 'smtp://mail', from = 'a@b', to = ['admin'] }", "notify.email.to", "email"),
    ("email = { url = 'smtp://mail', from = 'a@b', to = [] }", "notify.email.to", "at least one"),
    ("webhooks = ['ftp://hooks.example.com/T0SECRET']", "notify.webhooks[1]", "https://"),
    ("rate_limit = 'hourly'", "notify.rate_limit", "duration"),
    ("timeout = 5", "notify.timeout", "string"),
    ("on_success = 'yes'", "notify.on_success", "true or false"),
]


@pytest.mark.parametrize(("line", "field", "hint"), BAD_NOTIFY, ids=[b[1] for b in BAD_NOTIFY])
def test_a_bad_notify_table_exits_2_naming_the_field(
    site: Site, tmp_path: Path, line: str, field: str, hint: str
) -> None:
    site.write_config([tmp_path], extra=f"[notify]\n{line}\n")
    proc = site.run("snapshots", ok=False)
    assert proc.returncode == 2
    assert str(site.config_path) in proc.stderr and field in proc.stderr, proc.stderr
    assert hint in proc.stderr, proc.stderr
    assert "hunter22" not in proc.stderr and "T0SECRET" not in proc.stderr
