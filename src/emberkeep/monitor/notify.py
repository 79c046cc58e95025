"""Alerts: email over SMTP and webhooks (a JSON POST), rate-limited, with a "resolved".

Kinds: ``failure`` (a job failed), ``rpo`` (a source's last good backup is older than its
RPO), ``rto`` (a drill's restore took longer than the RTO), ``anomaly`` (monitor/anomalies),
``low_space``, and ``success`` (after each good backup, only with ``[notify] on_success``).

Each problem is keyed by (kind, job, source, target); its state lies in the journal's
``alerts`` table. Raising a problem that is not active sends it and makes it active;
raising it again while active sends nothing until ``[notify] rate_limit`` (default 6h) has
passed since the last message, then a reminder (with how many repeats were held back).
Resolving an active problem sends one "resolved" message; resolving one that is not active
sends nothing. Successes are not rate-limited: each is news.

Channels: ``[notify] email = { url, from, to }`` with
``smtp://[user:password@]host[:port][?starttls=true][&cafile=PATH]`` (``smtps://`` for TLS
from the first byte; ``cafile`` trusts a private CA); a password is only ever sent over TLS,
or to a loopback server. ``[notify] webhooks``: each gets ``{"text": ..., "emberkeep":
{...}}``, ``text`` as a Slack incoming webhook wants it. Every attempt, sent or failed, is
journaled (kind ``notify``, the channel in ``details``); a failing channel never fails the
job that raised the alert. Messages and the journal name a channel without its secrets:
``smtp://user:***@host:port``, ``https://hooks.example.com/…`` (a webhook URL's path often
is the secret).
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from ipaddress import ip_address
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from .. import __version__, clock
from ..config import Email, Notify
from ..journal import Entry, Journal
from ..redact import redact_url

# Long subjects on one line (998 is RFC 5322's limit): the default folding starts some on
# the next line, which mail clients then show with a leading space.
SMTP_POLICY = SMTP.clone(max_line_length=998)
KINDS = {
    "failure": "FAILED",
    "rpo": "RPO BREACHED",
    "rto": "RTO BREACHED",
    "anomaly": "ANOMALY",
    "low_space": "LOW SPACE",
    "success": "OK",
}


@dataclass
class Alert:
    kind: str  # one of KINDS
    summary: str  # one line, e.g. "backup of source db into target local failed"
    detail: str = ""  # the error, the numbers
    job: str | None = None
    source: str | None = None
    target: str | None = None
    resolved: bool = False
    held_back: int = 0  # repeats not sent since the last message (in a reminder)
    data: dict[str, Any] = field(default_factory=dict)  # more for the webhook payload

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.job or "", self.source or "", self.target or "")

    def label(self) -> str:
        return "RESOLVED" if self.resolved else KINDS[self.kind]

    def subject(self, site: str) -> str:
        return f"[emberkeep {site}] {self.label()}: {self.summary}"

    def body(self, site: str) -> str:
        lines = [f"{self.label()}: {self.summary}", ""]
        if self.detail:
            lines += [self.detail, ""]
        if self.held_back:
            lines += [f"(still going on; {self.held_back} repeats held back since the last)", ""]
        context = [
            ("site", site),
            ("job", self.job),
            ("source", self.source),
            ("target", self.target),
            ("time", clock.iso(clock.now())),
        ]
        lines += [f"{name}: {value}" for name, value in context if value]
        return "\n".join(lines) + "\n"

    def payload(self, site: str) -> dict[str, Any]:
        text = f"[{site}] {self.label()}: {self.summary}"
        if self.detail:
            text += f"\n{self.detail}"
        return {
            "text": text,
            "emberkeep": {
                "site": site,
                "kind": self.kind,
                "status": "resolved" if self.resolved else "firing",
                "job": self.job,
                "source": self.source,
                "target": self.target,
                "summary": self.summary,
                "detail": self.detail,
                "held_back": self.held_back,
                "time": clock.iso(clock.now()),
                **self.data,
            },
        }


# -- channels ------------------------------------------------------------------------------


class EmailChannel:
    def __init__(self, email: Email, timeout: float) -> None:
        self.email = email
        self.timeout = timeout
        self.label = f"email {redact_url(email.url)}"

    def secrets(self) -> list[str]:
        password = urlparse(self.email.url).password
        return [p for p in {password, unquote(password or "")} if p]

    def send(self, alert: Alert, site: str) -> None:
        url = urlparse(self.email.url)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        implicit_tls = url.scheme == "smtps"
        starttls = query.get("starttls", "false").lower() in ("true", "1")
        context = ssl.create_default_context(cafile=query.get("cafile"))
        host = url.hostname or "localhost"
        port = url.port or (465 if implicit_tls else 25)
        if url.username and not (implicit_tls or starttls) and not _loopback(host):
            raise NotifyError(
                "refusing to send the SMTP password unencrypted: add ?starttls=true to the "
                "URL, or use smtps://"
            )
        message = EmailMessage(policy=SMTP_POLICY)
        message["Subject"] = alert.subject(site)
        message["From"] = self.email.from_
        message["To"] = ", ".join(self.email.to)
        message["Date"] = formatdate(clock.now().timestamp())
        message["Message-ID"] = make_msgid(domain="emberkeep")
        message.set_content(alert.body(site))
        smtp: smtplib.SMTP
        if implicit_tls:
            smtp = smtplib.SMTP_SSL(host, port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=self.timeout)
        with smtp:
            if starttls:
                smtp.starttls(context=context)
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)


class WebhookChannel:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        parsed = urlparse(url)
        self.label = f"webhook {parsed.scheme}://{parsed.hostname}" + (
            f":{parsed.port}/…" if parsed.port else "/…"
        )

    def secrets(self) -> list[str]:
        parsed = urlparse(self.url)
        return [s for s in (self.url, parsed.path, parsed.query, parsed.password) if s]

    def send(self, alert: Alert, site: str) -> None:
        body = json.dumps(alert.payload(site)).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"emberkeep/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise NotifyError(f"the receiver answered HTTP {exc.code} {exc.reason}") from exc


Channel = EmailChannel | WebhookChannel


class NotifyError(Exception):
    """A channel refused or failed to deliver (the message says why, with no secret)."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def channels_of(notify: Notify | None) -> list[Channel]:
    if notify is None:
        return []
    timeout = notify.timeout.seconds or 10.0
    found: list[Channel] = []
    if notify.email is not None:
        found.append(EmailChannel(notify.email, timeout))
    found += [WebhookChannel(url, timeout) for url in notify.webhooks]
    return found


# -- the notifier --------------------------------------------------------------------------


class Notifier:
    """Raises and resolves alerts through every channel, rate-limited (module docstring)."""

    def __init__(
        self,
        site_name: str,
        notify: Notify | None,
        journal: Journal,
        *,
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.site_name = site_name
        self.notify = notify
        self.journal = journal
        self.channels = channels_of(notify)
        self.rate_limit = notify.rate_limit.delta if notify else None
        self.warn = warn

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def raise_(self, alert: Alert) -> bool:
        """Send ``alert`` unless the same problem was sent within the rate limit."""
        if not self.enabled:
            return False
        now = clock.now()
        state = self.journal.alert_state(alert.key)
        if state is not None and state["active"]:
            last = state["last_sent"] or state["since"]
            assert self.rate_limit is not None
            if now - last < self.rate_limit:
                self.journal.set_alert_state(
                    alert.key, **{**state, "suppressed": state["suppressed"] + 1}
                )
                return False
            alert.held_back = state["suppressed"]
            since = state["since"]
            sent = state["sent"] + 1
        else:
            since, sent = now, 1
        self.journal.set_alert_state(
            alert.key,
            active=True,
            since=since,
            last_sent=now,
            sent=sent,
            suppressed=0,
            message=alert.summary,
        )
        self._send(alert)
        return True

    def resolve(self, alert: Alert) -> bool:
        """Send a "resolved" for ``alert``'s problem if it is active; then it is not."""
        if not self.enabled:
            return False
        state = self.journal.alert_state(alert.key)
        if state is None or not state["active"]:
            return False
        self.journal.set_alert_state(alert.key, **{**state, "active": False, "suppressed": 0})
        alert.resolved = True
        self._send(alert)
        return True

    def success(self, alert: Alert) -> bool:
        """A success message (``on_success`` only); never rate-limited."""
        if not (self.enabled and self.notify and self.notify.on_success):
            return False
        self._send(alert)
        return True

    def _send(self, alert: Alert) -> None:
        for channel in self.channels:
            error = None
            try:
                channel.send(alert, self.site_name)
            except Exception as exc:  # a notifier failing never fails the job
                error = _scrub(_describe(exc), channel.secrets())
            entry = Entry(
                kind="notify",
                source=alert.source,
                target=alert.target,
                outcome="failed" if error else "ok",
                error=f"{channel.label}: {error}" if error else None,
                details={
                    "channel": channel.label,
                    "alert": alert.kind,
                    "job": alert.job,
                    "resolved": alert.resolved,
                    "summary": alert.summary,
                },
            )
            self.journal.add(entry)
            if error:
                self.warn(
                    f"could not send the {alert.label()} alert by {channel.label}: {error} "
                    "(journaled; the job itself is not affected)"
                )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NotifyError):
        return str(exc)
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach the receiver: {exc.reason}"
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error  # bytes from the server; str where smtplib made it up
        message = error.decode(errors="replace") if isinstance(error, bytes) else error
        return f"the SMTP server answered {exc.smtp_code} {message}".strip()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, "***")
    return text
