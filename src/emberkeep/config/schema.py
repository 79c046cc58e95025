"""The config's schema: one msgspec struct per table, with the types, bounds and defaults.

These structs are the single source of the reference (``config_doc``: a struct's docstring, a
field's ``Meta(description=...)`` or the comment beside it) and of the sample
(``config_sample``). Durations, sizes and schedules are typed here once (``decode_typed``, the
decode hook), so no caller parses them again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, dataclass_transform

import msgspec

from ..cron import Cron
from ..durations import Duration
from ..errors import ConfigError
from ..sizes import Size

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Count = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(pattern=NAME)]


# The decorator tells type checkers what msgspec does at run time: the subclasses inherit
# frozen and kw_only (without it mypy takes each subclass for a non-frozen dataclass).
@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(msgspec.field,))
class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class Site(_Strict):
    name: Annotated[str, msgspec.Meta(min_length=1)]  # as alerts, runbook and dashboard name it
    # this host's writer key, files cache, journal and scheduler state (mode 0700)
    state_dir: Path = Path("/var/lib/emberkeep")
    # the wall clock schedules are read in (an IANA name; policy.schedule: DST handling)
    timezone: str = "UTC"


LABEL = r"^[a-z0-9._-]{1,32}$"


class LabelledRecipient(_Strict):
    """A recipient with a label: `{ key = "age1…", label = "dba" }` in `[keys] recipients`.
    The label names the person or role in `keys list`, `keys remove NAME` and `keys check`."""

    key: str  # the age1… recipient, as `emberkeep keygen` printed it
    # a short name, unique in the set: lower-case letters, digits, `.`, `_`, `-` (1-32)
    label: str


class Keys(_Strict):
    recipients: Annotated[
        list[str | LabelledRecipient],
        msgspec.Meta(
            min_length=1,
            description="age recipients (age1…, from `emberkeep keygen`): any one of their "
            'identities reads backups; each a string, or `{ key = "age1…", label = "dba" }`',
        ),
    ]
    # a file holding an age identity (mode 0600), only on hosts that may read backups
    identity_file: Path | None = None
    # status warns once the newest read-key epoch of a target is older (`emberkeep keys rotate`)
    rotate_every: Duration | None = None

    @property
    def recipient_keys(self) -> list[str]:
        """The ``age1…`` strings, labelled or not, in the config's order."""
        return [r if isinstance(r, str) else r.key for r in self.recipients]

    @property
    def labels(self) -> dict[str, str]:
        """The labelled recipients' labels, by their ``age1…`` string as written."""
        return {r.key: r.label for r in self.recipients if not isinstance(r, str)}


class Retention(_Strict):
    within: Duration | None = None  # every snapshot newer than now minus this is kept
    hourly: Count = 0  # the newest snapshot of each of the N latest hours that have one
    daily: Count = 0  # the newest snapshot of each of the N latest days that have one
    weekly: Count = 0  # the newest snapshot of each of the N latest ISO weeks that have one
    monthly: Count = 0  # the newest snapshot of each of the N latest months that have one
    yearly: Count = 0  # the newest snapshot of each of the N latest years that have one
    # snapshots with one of these tags are kept whatever the rules say (restic --keep-tag)
    keep_tags: list[str] = []


class Objectives(_Strict):
    rpo: Duration | None = None  # the newest snapshot older than this breaches the RPO (status)
    rto: Duration | None = None  # a restore must take at most this (drills and runbook)

    @property
    def rpo_delta(self) -> timedelta | None:
        return self.rpo.delta if self.rpo else None

    @property
    def rto_delta(self) -> timedelta | None:
        return self.rto.delta if self.rto else None


class SourceHooks(_Strict):
    """Shell commands around a source's jobs (runner/hooks.py says how they run)."""

    before_backup: str | None = None  # its failure or timeout aborts the backup
    after_backup: str | None = None  # runs whatever the outcome (EMBERKEEP_OUTCOME)
    before_restore: str | None = None  # e.g. stop the app; its failure aborts the restore
    after_restore: str | None = None  # e.g. start the app again; runs whatever the outcome
    timeout: Duration = Duration("10m")  # a hook past it is killed with all it started
    env: list[str] = []  # names passed on from emberkeep's environment (runner/hooks.py)


class SourceConfig(_Strict, tag_field="type"):
    """What every ``[[sources]]`` table has; each source kind's struct adds its own keys
    and its ``type`` (the struct's tag), and is registered with ``register_source_type``
    (config/sources.py)."""

    name: Name  # how commands (--source), snapshots and reports name it
    schedule: Cron | None = None  # when `emberkeep run` backs it up; none: only by hand
    retention: Retention | None = None  # what prune keeps of its snapshots; none: all
    objectives: Objectives | None = None  # its RPO and RTO, watched by status and alerts
    hooks: SourceHooks | None = None  # shell commands around its backups and restores

    @property
    def type(self) -> str:
        tag = self.__struct_config__.tag
        assert isinstance(tag, str), "every source kind's struct has a tag"
        return tag

    def problems(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """What is wrong with the kind's own keys beyond their shape: (the key's path below
        the source, what is wrong); the config's check reports each with its place."""
        return iter(())


class FilesSource(SourceConfig, tag="files", kw_only=True):
    paths: Annotated[list[Path], msgspec.Meta(min_length=1)]  # absolute files and folders
    # shell patterns, on the whole path when they hold a '/', else on the name
    exclude: list[str] = []

    def problems(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        for path in self.paths:
            if "\0" in str(path):
                yield ("paths",), f"{str(path)!r} holds a NUL character"
            elif not path.is_absolute():
                yield ("paths",), f"{str(path)!r} is relative; give an absolute path"


class Pitr(_Strict):
    """Continuous oplog archiving (``emberkeep oplog run``; README, "Point-in-time recovery")."""

    enabled: bool = False  # archive this source's oplog (`emberkeep oplog run`)
    slice: Duration = Duration("5s")  # an entry waits at most this long before its slice is sealed
    max_lag: Duration = Duration("1m")  # status: archived this far behind the server is late
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000  # per slice

    @property
    def slice_seconds(self) -> float:
        return self.slice.seconds

    @property
    def max_lag_delta(self) -> timedelta:
        return self.max_lag.delta


class MongoSource(SourceConfig, tag="mongodb", kw_only=True):
    uri: str = "mongodb://localhost:27017"  # the server backed up (a connection string)
    databases: list[str] = []  # default: every database but admin, local and config
    exclude: list[str] = []  # shell patterns on "db.collection"
    parallel: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4  # collections read at once
    drill_uri: str | None = None  # where drills restore (scratch databases); default `uri`
    pitr: Pitr | None = None  # continuous oplog archiving, for restores to any moment

    def problems(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        for key in ("slice", "max_lag"):
            value = getattr(self.pitr, key) if self.pitr else None
            if value is not None and value.problem:
                yield ("pitr", key), value.problem


class GitSource(SourceConfig, tag="git", kw_only=True):
    path: Path  # the repository backed up: every ref, as a bundle
    # a remote URL, `git push --mirror` to it after each successful backup
    mirror: str | None = None


# A source of any kind; config/sources.py keeps the kinds a config may name.
Source = SourceConfig


class Target(_Strict):
    name: Name  # how commands (--target) and reports name it
    url: str  # file:///path, sftp://user@host/path or s3://bucket/prefix, with options
    # all: every snapshot; weekly, monthly: one per source and ISO week or month (UTC)
    copies: Literal["all", "weekly", "monthly"] = "all"
    # the sources this target takes (empty: every source), e.g. only the database in cold
    sources: list[str] = []
    # per source name: the retention that replaces that source's own in this target
    retention: dict[str, Retention] = {}


class Email(_Strict):
    url: str  # smtp://[user:password@]host[:port][?starttls=true], or smtps:// (TLS at once)
    to: Annotated[list[str], msgspec.Meta(min_length=1)]  # the addresses alerts go to
    from_: str = msgspec.field(name="from")  # the sender's address


class Notify(_Strict):
    """Where alerts go (monitor/notify.py): failures, RPO/RTO breaches, anomalies, low space."""

    email: Email | None = None  # alerts by email
    webhooks: list[str] = []  # URLs each alert is POSTed to as JSON (Slack-style "text")
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
    grace: Duration = Duration("1h")  # condemned packs wait this long before deletion
    schedule: Cron | None = None  # when `emberkeep run` prunes; none: only by hand
    # a snapshot made with `backup --tag` is kept this long whatever the rules say
    keep_tagged: Duration | None = Duration("30d")


class Check(_Strict):
    """The scheduled check: structural, plus a rotating part of the data when a subset is set."""

    schedule: Cron | None = None  # when `emberkeep run` checks; none: only by hand
    # also read and verify that part of the data: a percentage (10%) or a slice (2/7)
    read_data_subset: str | None = None


class Replicate(_Strict):
    """The scheduled `emberkeep replicate`: fills in what targets missed (e.g. while down)."""

    schedule: Cron | None = None  # when `emberkeep run` replicates; none: only by hand


class Drill(_Strict):
    """The scheduled restore drill: each named source (all when none) from ``target``."""

    schedule: Cron | None = None  # when `emberkeep run` drills; none: only by hand
    sources: list[str] = []  # the sources restored; empty: every source
    target: str | None = None  # default: the first target


class SiteObjectives(_Strict):
    """The RTOs of the strategy's whole-site scenarios (runbook): a new server, a disaster."""

    server_failure: Duration | None = None  # a server failure: the whole site on a new server
    disaster: Duration | None = None  # a disaster: the site back from its off-site copies


class Runbook(_Strict):
    """Who does what in the generated runbook: operator, keyholder, approver -> a name."""

    roles: dict[str, str] = {}  # operator, keyholder, approver -> who (the runbook's names)


class Web(_Strict):
    """The dashboard, `emberkeep web` (web/): where it listens and the token it asks for.

    Any address but loopback needs ``token_file``, and TLS (``tls_cert`` and ``tls_key``)
    or `--insecure-http` (web/server.py)."""

    listen: str = "127.0.0.1:8470"  # host:port the dashboard serves on
    token_file: Path | None = None  # one line, mode 0600: the bearer token
    tls_cert: Path | None = None  # PEM certificate (chain) to serve HTTPS with
    tls_key: Path | None = None  # its PEM private key, mode 0600
    actions: bool = True  # false: read-only, no "back up now"


class Config(_Strict):
    site: Site
    keys: Keys
    targets: Annotated[list[Target], msgspec.Meta(min_length=1)]
    sources: list[SourceConfig] = []  # decoded as one of the registered source types
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


_TYPED_STRINGS: dict[type, str] = {
    Path: "a string path",
    Duration: "a duration string",
    Size: "a size string",
    Cron: "a cron schedule string",
}


def decode_typed(kind: type, value: Any) -> Any:
    """The config's typed strings (paths, durations, sizes, schedules), made once here."""
    if kind in _TYPED_STRINGS and isinstance(value, str):
        return kind(value)
    raise TypeError(
        f"expected {_TYPED_STRINGS.get(kind, kind.__name__)}, got {type(value).__name__}"
    )
