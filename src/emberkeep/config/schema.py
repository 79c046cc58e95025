"""The config's schema: one msgspec struct per table, with the types, bounds and defaults.

These structs are the single source of the reference (``config_doc``: a struct's docstring, a
field's ``Meta(description=...)`` or the comment beside it) and of the sample
(``config_sample``). Durations, sizes and schedules are typed here once (``decode_typed``, the
decode hook), so no caller parses them again.
"""

from __future__ import annotations

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
