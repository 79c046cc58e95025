"""The TOML config (docs/design.md, "Config contract"), validated on load.

Every problem is reported as ``file: field: what is wrong; what to do`` and exits 2.
Secrets stay out of those messages: the value of an unknown key or of a webhook is never
shown, an age identity never, and every message passes through ``redact_text``.
Validation runs in two passes: msgspec checks the shape (types, unknown or missing keys,
ranges), then ``_semantic_problems`` checks meaning (cron expressions, durations,
recipients, URLs, unique names) and reports every problem it finds at once. Relative
paths in the file are taken relative to the file's own directory.

msgspec rather than pydantic: a CLI started by cron pays the import on every run, and
pydantic's cost 0.2 s and 23 MB of RSS there; msgspec's is a few milliseconds.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, dataclass_transform
from urllib.parse import urlparse

import msgspec

from ..cron import Cron
from ..durations import Duration
from ..errors import ConfigError, UsageError
from ..redact import looks_like_identity, redact_text
from ..sizes import Size

DEFAULT_PATHS = (Path("emberkeep.toml"), Path("/etc/emberkeep/emberkeep.toml"))
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Count = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(pattern=NAME)]


# The decorator tells type checkers what msgspec does at run time: the subclasses inherit
# frozen and kw_only (without it mypy takes each subclass for a non-frozen dataclass).
@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(msgspec.field,))
class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class Site(_Strict):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    state_dir: Path = Path("/var/lib/emberkeep")
    # the wall clock schedules are read in (an IANA name; policy.schedule: DST handling)
    timezone: str = "UTC"


class Keys(_Strict):
    recipients: Annotated[list[str], msgspec.Meta(min_length=1)]
    identity_file: Path | None = None


class Retention(_Strict):
    within: Duration | None = None
    hourly: Count = 0
    daily: Count = 0
    weekly: Count = 0
    monthly: Count = 0
    yearly: Count = 0
    # snapshots with one of these tags are kept whatever the rules say (restic --keep-tag)
    keep_tags: list[str] = []


class Objectives(_Strict):
    rpo: Duration | None = None
    rto: Duration | None = None

    @property
    def rpo_delta(self) -> timedelta | None:
        return self.rpo.delta if self.rpo else None

    @property
    def rto_delta(self) -> timedelta | None:
        return self.rto.delta if self.rto else None


class SourceHooks(_Strict):
    """Shell commands around a source's jobs (runner/hooks.py says how they run)."""

    before_backup: str | None = None
    after_backup: str | None = None
    before_restore: str | None = None
    after_restore: str | None = None
    timeout: Duration = Duration("10m")
    env: list[str] = []  # names passed on from emberkeep's environment (runner/hooks.py)


class _SourceBase(_Strict, tag_field="type"):
    name: Name
    schedule: Cron | None = None
    retention: Retention | None = None
    objectives: Objectives | None = None
    hooks: SourceHooks | None = None


class FilesSource(_SourceBase, tag="files", kw_only=True):
    paths: Annotated[list[Path], msgspec.Meta(min_length=1)]
    exclude: list[str] = []

    @property
    def type(self) -> str:
        return "files"


class Pitr(_Strict):
    """Continuous oplog archiving (``emberkeep oplog run``; README, "Point-in-time recovery")."""

    enabled: bool = False
    slice: Duration = Duration("5s")  # an entry waits at most this long before its slice is sealed
    max_lag: Duration = Duration("1m")  # status: archived this far behind the server is late
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000  # per slice

    @property
    def slice_seconds(self) -> float:
        return self.slice.seconds

    @property
    def max_lag_delta(self) -> timedelta:
        return self.max_lag.delta


class MongoSource(_SourceBase, tag="mongodb", kw_only=True):
    uri: str = "mongodb://localhost:27017"
    databases: list[str] = []  # default: every database but admin, local and config
    exclude: list[str] = []  # shell patterns on "db.collection"
    parallel: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4  # collections read at once
    drill_uri: str | None = None  # where drills restore (scratch databases); default `uri`
    pitr: Pitr | None = None

    @property
    def type(self) -> str:
        return "mongodb"


class GitSource(_SourceBase, tag="git", kw_only=True):
    path: Path
    mirror: str | None = None

    @property
    def type(self) -> str:
        return "git"


Source = FilesSource | MongoSource | GitSource


class Target(_Strict):
    name: Name
    url: str
    copies: Literal["all", "weekly", "monthly"] = "all"
    # the sources this target takes (empty: every source), e.g. only the database in cold
    sources: list[str] = []
    # per source name: the retention that replaces that source's own in this target
    retention: dict[str, Retention] = {}


class Email(_Strict):
    url: str
    to: Annotated[list[str], msgspec.Meta(min_length=1)]
    from_: str = msgspec.field(name="from")


class Notify(_Strict):
    """Where alerts go (monitor/notify.py): failures, RPO/RTO breaches, anomalies, low space."""

    email: Email | None = None
    webhooks: list[str] = []
    rate_limit: Duration = Duration(
        "6h"
    )  # an ongoing problem's alert is repeated at most this often
    on_success: bool = False  # also a message after each successful backup
    timeout: Duration = Duration("10s")  # for each SMTP or HTTP attempt


class Monitor(_Strict):
    """Journal, status and metrics settings (journal/, monitor/)."""

    journal_keep: Duration = Duration("365d")  # journal rows older than this are removed
    grace: Duration = Duration("1h")  # a scheduled source is late once its next run is this overdue
    anomaly_change: Annotated[float, msgspec.Meta(gt=0)] = 0.3  # fraction vs the median
    anomaly_runs: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5  # recent backups compared
    min_free: Size = Size("1GiB")  # a target with less free space raises the low-space alert
    metrics_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None  # 127.0.0.1
    metrics_textfile: Path | None = None  # for node_exporter's textfile collector


class Prune(_Strict):
    grace: Duration = Duration("1h")
    schedule: Cron | None = None
    # a snapshot made with `backup --tag` is kept this long whatever the rules say
    keep_tagged: Duration | None = Duration("30d")


class Check(_Strict):
    """The scheduled check: structural, plus a rotating part of the data when a subset is set."""

    schedule: Cron | None = None
    read_data_subset: str | None = None


class Replicate(_Strict):
    """The scheduled `emberkeep replicate`: fills in what targets missed (e.g. while down)."""

    schedule: Cron | None = None


class Drill(_Strict):
    """The scheduled restore drill: each named source (all when none) from ``target``."""

    schedule: Cron | None = None
    sources: list[str] = []
    target: str | None = None  # default: the first target


class SiteObjectives(_Strict):
    """The RTOs of the strategy's whole-site scenarios (runbook): a new server, a disaster."""

    server_failure: Duration | None = None
    disaster: Duration | None = None


class Runbook(_Strict):
    """Who does what in the generated runbook: operator, keyholder, approver -> a name."""

    roles: dict[str, str] = {}


class Web(_Strict):
    """The dashboard, `emberkeep web` (web/): where it listens and the token it asks for.

    Any address but loopback needs ``token_file``, and TLS (``tls_cert`` and ``tls_key``)
    or `--insecure-http` (web/server.py)."""

    listen: str = "127.0.0.1:8470"
    token_file: Path | None = None  # one line, mode 0600: the bearer token
    tls_cert: Path | None = None  # PEM certificate (chain) to serve HTTPS with
    tls_key: Path | None = None  # its PEM private key, mode 0600
    actions: bool = True  # false: read-only, no "back up now"


class Config(_Strict):
    site: Site
    keys: Keys
    targets: Annotated[list[Target], msgspec.Meta(min_length=1)]
    sources: list[Source] = []
    notify: Notify | None = None
    monitor: Monitor = Monitor()
    prune: Prune = Prune()
    check: Check = Check()
    replicate: Replicate = Replicate()
    drill: Drill = Drill()
    runbook: Runbook = Runbook()
    web: Web = Web()
    objectives: SiteObjectives = SiteObjectives()
    path: Path | None = None  # the file it was read from; set by ``parse``, not by the user

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} in {self.path} (sources: {known})")

    def targets_for(self, source: str) -> list[Target]:
        """The targets that take ``source``, in the config's order (the first is its
        primary while it is reachable)."""
        return [t for t in self.targets if not t.sources or source in t.sources]

    def retention(self, target: str) -> dict[str, Retention | None]:
        """Each source's retention in ``target``: the target's override, else its own."""
        overrides = self.target(target).retention
        return {s.name: overrides.get(s.name, s.retention) for s in self.sources}

    def target(self, name: str | None) -> Target:
        if name is None:
            return self.targets[0]
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.targets)
        raise ConfigError(f"no target named {name!r} in {self.path} (targets: {known})")


def find_config(explicit: str | None) -> Path:
    """The config file: ``-c`` when given, else ./emberkeep.toml, else /etc/emberkeep/."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found: check the path given to -c")
        return path
    for candidate in DEFAULT_PATHS:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "no config file: pass -c FILE, or create ./emberkeep.toml or "
        "/etc/emberkeep/emberkeep.toml (`emberkeep config sample` prints one)"
    )


def load(explicit: str | None = None) -> Config:
    path = find_config(explicit)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}; fix the syntax there") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc
    return parse(raw, path)


def parse(raw: dict[str, Any], path: Path) -> Config:
    if "path" in raw:  # the one attribute the user may not set
        raise _invalid(path, ["path: unknown key; remove it"])
    try:
        config = msgspec.convert(raw, Config, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        raise _invalid(path, [_describe_shape(str(exc), raw)]) from None
    problems = list(_semantic_problems(config, raw))
    if problems:
        raise _invalid(path, [f"{field}: {message}" for field, message in problems])
    return _resolve_paths(config, path)


def _invalid(path: Path, problems: list[str]) -> ConfigError:
    """The error for a config with ``problems``, any password, token or identity hidden."""
    lines = "".join(f"\n  {problem}" for problem in problems)
    return ConfigError(redact_text(f"{path}: invalid config{lines}"))


_TYPED_STRINGS: dict[type, str] = {
    Path: "a string path",
    Duration: "a duration string",
    Size: "a size string",
    Cron: "a cron schedule string",
}


def _decode_path(kind: type, value: Any) -> Any:
    """The config's typed strings (paths, durations, sizes, schedules), made once here."""
    if kind in _TYPED_STRINGS and isinstance(value, str):
        return kind(value)
    raise TypeError(
        f"expected {_TYPED_STRINGS.get(kind, kind.__name__)}, got {type(value).__name__}"
    )


def _resolve_paths(config: Config, path: Path) -> Config:
    base = path.resolve().parent

    def absolute(value: Path | None) -> Path | None:
        if value is None:
            return None
        value = Path(os.path.expanduser(value))
        return value if value.is_absolute() else base / value

    site = msgspec.structs.replace(config.site, state_dir=absolute(config.site.state_dir))
    keys = msgspec.structs.replace(config.keys, identity_file=absolute(config.keys.identity_file))
    monitor = msgspec.structs.replace(
        config.monitor, metrics_textfile=absolute(config.monitor.metrics_textfile)
    )
    web = msgspec.structs.replace(
        config.web,
        token_file=absolute(config.web.token_file),
        tls_cert=absolute(config.web.tls_cert),
        tls_key=absolute(config.web.tls_key),
    )
    return msgspec.structs.replace(
        config, site=site, keys=keys, monitor=monitor, web=web, path=path
    )


# -- the shape pass: msgspec's message, said the way the user wrote the file -----------

_TOML_KINDS = {
    "array": 'a list (like ["a", "b"])',
    "str": 'a string (in quotes, like "x")',
    "int": "a whole number (integer)",
    "float": "a number",
    "bool": "true or false",
    "object": "a table (like { key = value } or a [section])",
    "Path": 'a path string (like "/var/www")',
}
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.S)


def _describe_shape(message: str, raw: dict[str, Any]) -> str:
    match = _AT.match(message)
    assert match is not None
    what, where = match["what"], match["where"] or ""
    loc: list[str | int] = []
    for index, key, in_table in re.findall(r"\[(\d+)\]|\.([^.\[]+)|(\[\.\.\.\])", where):
        if in_table:  # msgspec does not name the key of a table of tables: find it
            loc.append(_failing_key(raw, loc, message))
        else:
            loc.append(int(index) if index else key)
    if unknown := re.match(r"Object contains unknown field `(.+)`", what):
        loc.append(unknown[1])
        text = "unknown key; remove it or check its spelling against the README"
    elif missing := re.match(r"Object missing required field `(.+)`", what):
        loc.append(missing[1])
        text = "required, but missing; add it"
    elif loc and loc[-1] == "type" and what.startswith("Invalid value"):
        loc.pop()
        text = "unknown source type; use 'files', 'mongodb' or 'git'"
    elif what.startswith("Expected `int` >= 0"):
        text = "must be a whole number greater than or equal to 0"
    elif what.startswith("Invalid enum value"):
        text = f"not allowed; use {_choices(loc[-1])}"
    elif what.startswith("Expected `str` matching regex"):
        text = "use letters, digits, '.', '_' or '-', starting with a letter or digit"
    elif what.startswith("Expected `array` of length >= 1"):
        text = "must list at least one value"
    elif wrong := re.match(r"Expected `(\w+)(?: \| null)?`, got `(\w+)`", what):
        wanted, got = (_TOML_KINDS.get(k, k) for k in (wrong[1], wrong[2]))
        text = f"should be {wanted}, not {got}"
    else:
        text = what[0].lower() + what[1:] if what else "invalid"
    if _may_show_value(loc, unknown is not None):
        given = _value_at(raw, loc)
        if given is not _MISSING and not isinstance(given, dict | list) and _showable(given):
            text += f" (got {given!r})"
    return f"{_field_name(loc, raw)}: {text}"


_MISSING = object()
# keys whose values may be secrets as a whole: webhook URLs, hook commands (PGPASSWORD=…)
_SECRET_KEYS = frozenset({"webhooks", "hooks"})


def _may_show_value(loc: list[str | int], unknown: bool) -> bool:
    """Whether a shape error may quote the value at ``loc``: not when the key is unknown (a
    misspelt ``uri`` or ``password``), nor when it is, or is in, one of ``_SECRET_KEYS``."""
    return not unknown and _SECRET_KEYS.isdisjoint(loc)


def _showable(value: Any) -> bool:
    """False for ``user:password@host`` without a ``scheme://``: ``redact_text`` hides the
    password of a URL, but cannot tell such a value from other text."""
    return not (isinstance(value, str) and "@" in value and "://" not in value)


def _quoted_url(value: str) -> str:
    return repr(value) if _showable(value) else "the value (not shown: it may hold a password)"


def _failing_key(raw: dict[str, Any], loc: list[str | int], message: str) -> str:
    """The key of the table at ``loc`` whose value alone fails with ``message``."""
    table = _value_at(raw, loc)
    for key in table if isinstance(table, dict) else ():
        try:
            msgspec.convert(_replaced(raw, loc, {key: table[key]}), Config, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            if str(exc) == message:
                return str(key)
    return "[...]"


def _replaced(node: Any, loc: list[str | int], value: Any) -> Any:
    """A copy of ``node`` with the item at ``loc`` replaced by ``value``."""
    if not loc:
        return value
    copy: Any = list(node) if isinstance(node, list) else dict(node)
    copy[loc[0]] = _replaced(node[loc[0]], loc[1:], value)
    return copy


def _value_at(raw: Any, loc: list[str | int]) -> Any:
    node = raw
    for item in loc:
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _choices(field: str | int) -> str:
    """The allowed values of a Literal-typed field, as a sentence."""
    import typing

    for struct in (Target, FilesSource, MongoSource, GitSource, Config, Site, Prune):
        hint = typing.get_type_hints(struct).get(str(field))
        if typing.get_origin(hint) is Literal:
            values = [repr(v) for v in typing.get_args(hint)]
            return ", ".join(values[:-1]) + " or " + values[-1]
    return "one of the documented values"


def _field_name(loc: list[str | int], raw: dict[str, Any]) -> str:
    """Render a location as the user wrote it: ``sources[2] (media).schedule``."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item + 1}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and "name" in node:
                    label += f" ({node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


# -- the meaning pass -------------------------------------------------------------------


def _semantic_problems(config: Config, raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def field(*loc: str | int) -> str:
        return _field_name(list(loc), raw)

    yield from _recipient_problems(config.keys.recipients, field("keys", "recipients"))
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
        if isinstance(source, MongoSource) and source.pitr:
            for key in ("slice", "max_lag"):
                where = field("sources", i, "pitr", key)
                yield from _duration_problem(getattr(source.pitr, key), where)
        if isinstance(source, FilesSource):
            for path in source.paths:
                if "\0" in str(path):
                    yield field("sources", i, "paths"), f"{str(path)!r} holds a NUL character"
                elif not path.is_absolute():
                    yield (
                        field("sources", i, "paths"),
                        f"{str(path)!r} is relative; give an absolute path",
                    )
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
    yield from _schedule_clash_problems(config, field)
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


def _identity_file_problem(value: Path | None, where: str) -> Iterator[tuple[str, str]]:
    if value is not None and looks_like_identity(str(value)):
        yield (
            where,
            "this looks like an identity (secret key), not the path of a file holding one: "
            "save it in a file only this user can read (mode 0600) and give that path here",
        )


def _cron(value: Cron | None) -> str | None:
    """The five-field cron expression of a schedule that parses; None if unset or invalid."""
    return None if value is None or value.problem else value.expr


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


# Schedules that cannot both run. A scheduled prune takes the exclusive lease on every
# target, so a backup, check or replicate started by cron or a systemd timer in the same
# minute fails on its lease (or the prune does). Two jobs of one kind on one source cannot
# clash: each source has one schedule and a unique name. Compared over a fixed year
# (deterministic, and every month and weekday), in whole minutes as cron fires.
SCHEDULE_HORIZON_START = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE_HORIZON = timedelta(days=366)
SCHEDULE_SCAN_LIMIT = 20_000  # steps per expression for one pair; then assume no clash


def _schedule_clash_problems(
    config: Config, field: Callable[..., str]
) -> Iterator[tuple[str, str]]:
    """``prune.schedule`` against every schedule whose job takes a lease on the targets."""
    prune = _cron(config.prune.schedule)
    if prune is None:  # unset, or invalid: that is its own problem
        return
    others = [(field("sources", i, "schedule"), s.schedule) for i, s in enumerate(config.sources)]
    others.append((field("check", "schedule"), config.check.schedule))
    others.append((field("replicate", "schedule"), config.replicate.schedule))
    others.append((field("drill", "schedule"), config.drill.schedule))
    for where, value in others:
        other = _cron(value)
        if other is None:
            continue
        first = _first_shared_minute(prune, other)
        if first is None:
            continue
        yield (
            field("prune", "schedule"),
            (
                f"fires at the same minute as {where} ({value!r}; first at "
                f"{first:%Y-%m-%d %H:%M} UTC); prune locks every target, so one of them "
                f"would fail: move one of them (got {config.prune.schedule!r})"
            ),
        )


def _first_shared_minute(a: str, b: str) -> datetime | None:
    """The first minute of the horizon at which cron expressions ``a`` and ``b`` both fire.

    A leapfrog join: the side that is behind jumps to its first slot at or after the other's,
    so the steps number about the rarer schedule's slots, not every minute; at most
    ``SCHEDULE_SCAN_LIMIT`` a side. None when they do not meet within the horizon (or the
    limit, which only expressions firing thousands of times apart without meeting reach).
    """
    from croniter import croniter

    if not _fields_can_meet(a, b):
        return None
    end = SCHEDULE_HORIZON_START + SCHEDULE_HORIZON
    before = SCHEDULE_HORIZON_START - timedelta(minutes=1)  # the start minute counts
    iters = [croniter(a, before), croniter(b, before)]
    times: list[datetime] = [it.get_next(datetime) for it in iters]
    steps = [1, 1]
    while max(times) < end:
        if times[0] == times[1]:
            return times[0]
        behind = 0 if times[0] < times[1] else 1
        if steps[behind] >= SCHEDULE_SCAN_LIMIT:
            return None
        iters[behind].set_current(times[1 - behind] - timedelta(minutes=1), force=True)
        times[behind] = iters[behind].get_next(datetime)
        steps[behind] += 1
    return None


def _fields_can_meet(a: str, b: str) -> bool:
    """False when the minutes, hours or months of ``a`` and ``b`` share no value."""
    from croniter import croniter

    fields_a, fields_b = croniter.expand(a)[0], croniter.expand(b)[0]
    for index in (0, 1, 3):  # minute, hour, month: plain numbers or '*'
        values_a, values_b = fields_a[index], fields_b[index]
        if "*" in values_a or "*" in values_b:
            continue
        if not set(values_a) & set(values_b):
            return False
    return True


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
            f"{_quoted_url(email.url)} is not an SMTP URL; write smtp://[user:password@]host"
            "[:port][?starttls=true] (or smtps:// for TLS from the start)",
        )
        return
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        yield field("url"), f"{_quoted_url(email.url)}: the port is not a number"
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
            f"{_quoted_url(value)} has no supported scheme; use file:///path, "
            "sftp://user@host/path or s3://bucket/prefix"
        )
    if parsed.scheme == "file" and (
        parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/")
    ):
        return f"{_quoted_url(value)}: a file URL needs three slashes and an absolute path, like file:///var/backups"
    from ..storage import check_url  # the backend's own parser: its options and their bounds

    try:
        check_url(value, name=name)
    except UsageError as exc:
        return str(exc).removeprefix(f"target {name}: ")
    return None
