"""The meaning pass: what the shape alone cannot tell, every problem found at once.

Cron expressions, durations and sizes that did not parse, recipients, identities in the
wrong place, URLs (each backend's own parser), unique names, names that refer to sources or
targets, timezones, clashing schedules (``clashes``), hooks. Each problem is a (field,
message) pair; the field is named the way the user wrote it (``messages.field_name``).
Secrets stay out of the messages: a webhook URL is never shown, a URL with a password only
redacted (``messages.quoted_url``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..cron import Cron
from ..durations import Duration
from ..errors import UsageError
from ..redact import looks_like_identity
from .clashes import schedule_clash_problems
from .messages import field_name, quoted_url
from .schema import LABEL, Config, Email, SourceHooks


def semantic_problems(config: Config, raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def field(*loc: str | int) -> str:
        return field_name(list(loc), raw)

    yield from _recipient_problems(config.keys.recipient_keys, field("keys", "recipients"))
    yield from _label_problems(config.keys.labels, field("keys", "recipients"))
    yield from _identity_file_problem(config.keys.identity_file, field("keys", "identity_file"))
    for i, source in enumerate(config.sources):
        yield from _schedule_problem(source.schedule, field("sources", i, "schedule"))
        if source.retention and source.retention.within:
            yield from _duration_problem(
                source.retention.within, field("sources", i, "retention", "within")
            )
        if source.hooks:
            yield from _duration_problem(
                source.hooks.timeout, field("sources", i, "hooks", "timeout")
            )
            yield from _hooks_problems(source.hooks, field("sources", i, "hooks"))
        if source.objectives:
            for key in ("rpo", "rto"):
                value = getattr(source.objectives, key)
                yield from _duration_problem(value, field("sources", i, "objectives", key))
        for loc, text in source.problems():
            yield field("sources", i, *loc), text
    for i, target in enumerate(config.targets):
        if problem := _url_problem(target.url, target.name):
            yield field("targets", i, "url"), problem
        yield from _override_problems(config, i, field)
    yield from _duration_problem(config.prune.grace, field("prune", "grace"))
    yield from _duration_problem(config.prune.keep_tagged, field("prune", "keep_tagged"))
    yield from _schedule_problem(config.prune.schedule, field("prune", "schedule"))
    yield from _schedule_problem(config.check.schedule, field("check", "schedule"))
    yield from _schedule_problem(config.replicate.schedule, field("replicate", "schedule"))
    yield from _schedule_problem(config.drill.schedule, field("drill", "schedule"))
    yield from _drill_problems(config, field)
    yield from _target_sources_problems(config, field)
    yield from _timezone_problem(config.site.timezone, field("site", "timezone"))
    for key in ("server_failure", "disaster"):
        value = getattr(config.objectives, key)
        yield from _duration_problem(value, field("objectives", key))
    yield from schedule_clash_problems(config, field)
    yield from _subset_problem(config.check.read_data_subset, field("check", "read_data_subset"))
    yield from _monitor_problems(config, field)
    for kind, items in (("sources", config.sources), ("targets", config.targets)):
        names = [item.name for item in items]
        for name in sorted({n for n in names if names.count(n) > 1}):
            yield kind, f"two {kind} are named {name!r}; give each its own name"


def _override_problems(
    config: Config, i: int, field: Callable[..., str]
) -> Iterator[tuple[str, str]]:
    """A target's retention overrides name sources the config has."""
    known = [s.name for s in config.sources]
    for name, retention in config.targets[i].retention.items():
        where = field("targets", i, "retention", name)
        if name not in known:
            names = ", ".join(known) or "none"
            yield where, f"no source is named {name!r} (sources: {names}); fix it or remove it"
        elif retention.within:
            yield from _duration_problem(retention.within, f"{where}.within")


def _recipient_problems(values: list[str], where: str) -> Iterator[tuple[str, str]]:
    import pyrage

    for value in values:
        if looks_like_identity(value):
            yield (
                where,
                "this looks like an identity (secret key), not a recipient: put the age1… "
                "recipient here and keep the identity offline",
            )
            continue
        try:
            pyrage.x25519.Recipient.from_str(value)
        except Exception:
            yield (
                where,
                (
                    f"{value!r} is not an age recipient: "
                    + (
                        "its checksum or length is wrong (a typo, or cut short? an age1… "
                        "recipient is 62 characters); copy it again from where `emberkeep "
                        "keygen` printed it"
                        if value.startswith("age1")
                        else "it should start with 'age1' (make one with `emberkeep keygen`)"
                    )
                ),
            )
    if len(set(values)) != len(values):
        yield where, "a recipient is listed twice; list each once"


def _label_problems(labels: dict[str, str], where: str) -> Iterator[tuple[str, str]]:
    """Labels name recipients in `keys remove NAME` and `keys check`: short and unique."""
    seen: set[str] = set()
    for label in labels.values():
        if not re.fullmatch(LABEL, label):
            yield (
                where,
                f"label {label!r} is not a short name: use 1-32 lower-case letters, digits, "
                "'.', '_' or '-' (e.g. \"dba\" or \"alice\")",
            )
        elif label.startswith("age1"):
            yield where, f"label {label!r} starts like a recipient (age1…); name the person"
        elif label in seen:
            yield where, f"label {label!r} names two recipients; give each its own label"
        seen.add(label)


def _identity_file_problem(value: Path | None, where: str) -> Iterator[tuple[str, str]]:
    if value is not None and looks_like_identity(str(value)):
        yield (
            where,
            "this looks like an identity (secret key), not the path of a file holding one: "
            "save it in a file only this user can read (mode 0600) and give that path here",
        )


def _schedule_problem(value: Cron | None, where: str) -> Iterator[tuple[str, str]]:
    if value is not None and value.problem:
        yield where, value.problem


def _target_sources_problems(
    config: Config, field: Callable[..., str]
) -> Iterator[tuple[str, str]]:
    names = {s.name for s in config.sources}
    known = ", ".join(sorted(names)) or "none"
    for t, target in enumerate(config.targets):
        for i, name in enumerate(target.sources):
            if name not in names:
                yield field("targets", t, "sources", i), f"no source named {name!r} ({known})"
    for i, source in enumerate(config.sources):
        if not config.targets_for(source.name):
            yield (
                field("sources", i, "name"),
                f"no target takes source {source.name!r}: every target lists other sources; "
                "add it to one target's sources, or leave a target's sources out",
            )


def _timezone_problem(name: str, where: str) -> Iterator[tuple[str, str]]:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        yield (
            where,
            f"{name!r} is not a timezone this host knows: give an IANA name like "
            "'Europe/Berlin' or 'UTC' (the host's tzdata lists them)",
        )


def _drill_problems(config: Config, field: Callable[..., str]) -> Iterator[tuple[str, str]]:
    names = {s.name for s in config.sources}
    for i, name in enumerate(config.drill.sources):
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            yield field("drill", "sources", i), f"no source named {name!r} (sources: {known})"
    target = config.drill.target
    if target is not None and target not in {t.name for t in config.targets}:
        yield field("drill", "target"), f"no target named {target!r}"


def _monitor_problems(config: Config, field: Callable[..., str]) -> Iterator[tuple[str, str]]:
    """[notify] and [monitor]: durations, sizes, and URLs a notifier can use."""
    monitor = config.monitor
    for key in ("journal_keep", "grace"):
        yield from _duration_problem(getattr(monitor, key), field("monitor", key))
    if monitor.min_free.problem:
        yield field("monitor", "min_free"), monitor.min_free.problem
    notify = config.notify
    if notify is None:
        return
    for key in ("rate_limit", "timeout"):
        yield from _duration_problem(getattr(notify, key), field("notify", key))
    if notify.email is not None:
        yield from _email_problems(notify.email, lambda *loc: field("notify", "email", *loc))
    for i, url in enumerate(notify.webhooks):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            yield (
                field("notify", "webhooks", i),
                "not an http:// or https:// URL (not shown: a webhook URL is a secret); give "
                "the URL the webhook receiver (e.g. Slack) gave you",
            )


def _email_problems(email: Email, field: Callable[..., str]) -> Iterator[tuple[str, str]]:
    from urllib.parse import parse_qs

    parsed = urlparse(email.url)
    if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
        yield (
            field("url"),
            f"{quoted_url(email.url)} is not an SMTP URL; write smtp://[user:password@]host"
            "[:port][?starttls=true] (or smtps:// for TLS from the start)",
        )
        return
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        yield field("url"), f"{quoted_url(email.url)}: the port is not a number"
    query = parse_qs(parsed.query)
    for key, values in query.items():
        if key not in ("starttls", "cafile"):
            yield field("url"), f"unknown option {key!r}; use starttls=true|false or cafile=PATH"
        elif key == "starttls" and values[-1].lower() not in ("true", "false", "1", "0"):
            yield field("url"), f"starttls={values[-1]!r}: use starttls=true or starttls=false"
    for i, address in enumerate([email.from_, *email.to]):
        if "@" not in address:
            where = field("from") if i == 0 else field("to")
            yield where, f"{address!r} is not an email address"


def _subset_problem(value: str | None, where: str) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    from ..repository.check import Subset  # only when a subset is configured

    try:
        Subset.parse(value)
    except UsageError as exc:
        yield where, str(exc)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _hooks_problems(hooks: SourceHooks, where: str) -> Iterator[tuple[str, str]]:
    for key in ("before_backup", "after_backup", "before_restore", "after_restore"):
        if "\0" in (getattr(hooks, key) or ""):
            yield f"{where}.{key}", "the command holds a NUL character; remove it"
    for name in hooks.env:
        if not _ENV_NAME.fullmatch(name):
            yield f"{where}.env", f"{name!r} is not an environment variable name"
        elif name.upper().startswith("AWS_"):
            yield (
                f"{where}.env",
                f"{name}: the targets' credentials (AWS_*) are never passed to hooks; a hook "
                "that needs its own gets them from its own config",
            )


def _duration_problem(value: Duration | None, where: str) -> Iterator[tuple[str, str]]:
    if value is not None and value.problem:
        yield where, value.problem


def _url_problem(value: str, name: str) -> str | None:
    parsed = urlparse(value)
    if parsed.scheme not in ("file", "sftp", "s3"):
        return (
            f"{quoted_url(value)} has no supported scheme; use file:///path, "
            "sftp://user@host/path or s3://bucket/prefix"
        )
    if parsed.scheme == "file" and (
        parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/")
    ):
        return f"{quoted_url(value)}: a file URL needs three slashes and an absolute path, like file:///var/backups"
    from ..storage import check_url  # the backend's own parser: its options and their bounds

    try:
        check_url(value, name=name)
    except UsageError as exc:
        return str(exc).removeprefix(f"target {name}: ")
    return None
