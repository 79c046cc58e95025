"""The TOML config (DESIGN.md, "Config contract"), validated on load.

Every problem is reported as ``file: field: what is wrong; what to do`` and exits 2.
Relative paths in the file are taken relative to the file's own directory.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .durations import parse_duration
from .errors import ConfigError

DEFAULT_PATHS = (Path("emberkeep.toml"), Path("/etc/emberkeep/emberkeep.toml"))
SCHEDULE_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_schedule(value: str | None) -> str | None:
    if value is None:
        return None
    expr = SCHEDULE_ALIASES.get(value.strip(), value.strip())
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise ValueError(
            f"{value!r} is not a cron schedule; use five fields (minute hour day month weekday) "
            "like '0 2 * * *', or @hourly/@daily/@weekly/@monthly"
        )
    return value.strip()


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class Site(_Strict):
    name: str = Field(min_length=1)
    state_dir: Path = Path("/var/lib/emberkeep")


class Keys(_Strict):
    recipients: list[str] = Field(min_length=1)
    identity_file: Path | None = None

    @field_validator("recipients")
    @classmethod
    def _recipients_are_age(cls, values: list[str]) -> list[str]:
        import pyrage

        for value in values:
            try:
                pyrage.x25519.Recipient.from_str(value)
            except Exception as exc:
                raise ValueError(
                    f"{value!r} is not an age recipient; it should start with 'age1' "
                    "(make one with `emberkeep keygen`)"
                ) from exc
        if len(set(values)) != len(values):
            raise ValueError("a recipient is listed twice; list each once")
        return values


class Retention(_Strict):
    within: str | None = None
    hourly: Annotated[int, Field(ge=0)] = 0
    daily: Annotated[int, Field(ge=0)] = 0
    weekly: Annotated[int, Field(ge=0)] = 0
    monthly: Annotated[int, Field(ge=0)] = 0
    yearly: Annotated[int, Field(ge=0)] = 0

    _within = field_validator("within")(_check_duration)


class Objectives(_Strict):
    rpo: str | None = None
    rto: str | None = None

    _durations = field_validator("rpo", "rto")(_check_duration)

    @property
    def rpo_delta(self) -> timedelta | None:
        return parse_duration(self.rpo) if self.rpo else None

    @property
    def rto_delta(self) -> timedelta | None:
        return parse_duration(self.rto) if self.rto else None


class _SourceBase(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    schedule: str | None = None
    retention: Retention | None = None
    objectives: Objectives | None = None

    _schedule = field_validator("schedule")(_check_schedule)


class FilesSource(_SourceBase):
    type: Literal["files"]
    paths: list[Path] = Field(min_length=1)
    exclude: list[str] = []

    @field_validator("paths")
    @classmethod
    def _absolute(cls, values: list[Path]) -> list[Path]:
        for value in values:
            if not value.is_absolute():
                raise ValueError(f"{str(value)!r} is relative; give an absolute path")
        return values


class MongoSource(_SourceBase):
    type: Literal["mongodb"]
    uri: str = "mongodb://localhost:27017"
    databases: list[str] = []


class GitSource(_SourceBase):
    type: Literal["git"]
    path: Path


Source = Annotated[FilesSource | MongoSource | GitSource, Field(discriminator="type")]

_TARGET_SCHEMES = ("file", "sftp", "s3")


class Target(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    url: str
    copies: Literal["all", "weekly", "monthly"] = "all"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in _TARGET_SCHEMES:
            raise ValueError(
                f"{value!r} has no supported scheme; use file:///path, "
                "sftp://user@host/path or s3://bucket/prefix"
            )
        parsed = urlparse(value)
        if scheme == "file" and (
            parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/")
        ):
            raise ValueError(
                f"{value!r}: a file URL needs three slashes and an absolute path, "
                "like file:///var/backups"
            )
        return value


class Email(_Strict):
    url: str
    to: list[str] = Field(min_length=1)
    from_: str = Field(alias="from")


class Notify(_Strict):
    email: Email | None = None
    webhooks: list[str] = []


class Prune(_Strict):
    grace: str = "1h"
    schedule: str | None = None

    _grace = field_validator("grace")(_check_duration)
    _schedule = field_validator("schedule")(_check_schedule)


class Config(_Strict):
    site: Site
    keys: Keys
    sources: list[Source] = []
    targets: list[Target] = Field(min_length=1)
    notify: Notify | None = None
    prune: Prune = Prune()
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for kind, items in (("sources", self.sources), ("targets", self.targets)):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"two {kind} are named {item.name!r}; give each its own name")
                seen.add(item.name)
        return self

    def source(self, name: str) -> FilesSource | MongoSource | GitSource:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} in {self.path} (sources: {known})")

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
        "/etc/emberkeep/emberkeep.toml (see the README for an example)"
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
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw, path)) from None
    return _resolve_paths(config, path)


def _resolve_paths(config: Config, path: Path) -> Config:
    base = path.resolve().parent

    def absolute(value: Path | None) -> Path | None:
        if value is None:
            return None
        value = Path(os.path.expanduser(value))
        return value if value.is_absolute() else base / value

    site = config.site.model_copy(update={"state_dir": absolute(config.site.state_dir)})
    keys = config.keys.model_copy(update={"identity_file": absolute(config.keys.identity_file)})
    return config.model_copy(update={"site": site, "keys": keys, "path": path})


def _describe(exc: ValidationError, raw: dict[str, Any], path: Path) -> str:
    lines = [f"{path}: invalid config"]
    for error in exc.errors():
        field = _field_name(error["loc"], raw)
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown key; remove it or check its spelling against the README"
        elif kind == "missing":
            message = "required, but missing; add it"
        elif kind == "union_tag_invalid":
            message = "unknown source type; use 'files', 'mongodb' or 'git'"
        elif kind == "union_tag_not_found":
            message = "missing 'type'; set type = 'files', 'mongodb' or 'git'"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if kind.endswith("_type") or kind.endswith("_parsing"):
                message += f" (got {error.get('input')!r})"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def _field_name(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """Render a pydantic location as the user wrote it: ``sources[2] (media).schedule``."""
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
        elif item in ("files", "mongodb", "git") and isinstance(node, dict) and "type" in node:
            continue  # the discriminator's tag, not a key the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"
