"""Loading the config: finding the file, reading its TOML, and the two passes over it.

Validation runs in two passes: msgspec checks the shape (types, unknown or missing keys,
ranges; ``messages`` says what is wrong the way the user wrote it), then ``checks`` checks
meaning and reports every problem it finds at once. Relative paths in the file are taken
relative to the file's own directory.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConfigError
from ..redact import redact_text
from .checks import semantic_problems
from .messages import describe_shape
from .schema import Config, decode_typed
from .sources import decoded_config

DEFAULT_PATHS = (Path("emberkeep.toml"), Path("/etc/emberkeep/emberkeep.toml"))


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
        config = msgspec.convert(raw, decoded_config(), dec_hook=decode_typed)
    except msgspec.ValidationError as exc:
        raise _invalid(path, [describe_shape(str(exc), raw)]) from None
    problems = list(semantic_problems(config, raw))
    if problems:
        raise _invalid(path, [f"{field}: {message}" for field, message in problems])
    return _resolve_paths(config, path)


def _invalid(path: Path, problems: list[str]) -> ConfigError:
    """The error for a config with ``problems``, any password, token or identity hidden."""
    lines = "".join(f"\n  {problem}" for problem in problems)
    return ConfigError(redact_text(f"{path}: invalid config{lines}"))


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
