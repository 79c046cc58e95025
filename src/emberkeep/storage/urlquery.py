"""Options given in a target URL's query string (``?timeout=30&region=…``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import ParseResult, parse_qs, urlparse

from ..durations import format_duration, parse_duration
from ..errors import UsageError

DEFAULT_TIMEOUT = 30.0  # seconds, for every network call of a remote target
MIN_TIMEOUT = 1.0
MAX_TIMEOUT = 3600.0


def parse(url: str, label: str, options: Sequence[str]) -> tuple[ParseResult, dict[str, list[str]]]:
    """A target URL and its query; a user error naming any option not in ``options``."""
    parsed = urlparse(url)
    if parsed.params:  # urlparse takes ";…" off the path's last segment: a folder not named
        raise UsageError(
            f"target {label}: the path in the {parsed.scheme} URL holds ';{parsed.params}', "
            f"which would be dropped from it (the folder would be {parsed.path}); write a ';' "
            "in a folder name as %3B"
        )
    query = parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(options))
    if unknown:
        raise UsageError(
            f"target {label}: unknown option {', '.join(unknown)} in the {parsed.scheme} URL; "
            f"the options are {', '.join(options)}"
        )
    return parsed, query


def last(query: dict[str, list[str]], key: str) -> str | None:
    """The value of ``key``; when given twice, the last one, as a shell's would be."""
    values = query.get(key)
    return values[-1] if values else None


def timeout(value: str | None, label: str) -> float:
    """``?timeout=`` in seconds, or the default; a user error unless from 1 s to 1 h.

    Bounded both ways: a timeout of ``inf`` (or ``1e309``) hangs for ever on a silent
    server, and one below a second fails on any ordinary network."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:
        raise UsageError(
            f"target {label}: timeout={value!r} in the URL is not a number of seconds from "
            f"{MIN_TIMEOUT:g} to {MAX_TIMEOUT:g}"
        )
    return seconds


def positive_int(
    value: str | None, label: str, key: str, default: int, *, maximum: int | None = None
) -> int:
    """``?key=N``, a whole number from 1 to ``maximum``, or ``default`` when not given."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1 or (maximum is not None and number > maximum):
        bound = f" from 1 to {maximum}" if maximum is not None else " of at least 1"
        raise UsageError(f"target {label}: {key}={value!r} in the URL is not a whole number{bound}")
    return number


def seconds(value: str | None, label: str, key: str, default: float, *, maximum: float) -> float:
    """``?key=`` as seconds (``90``, ``0.5``) or a duration (``15m``, ``48h``), or ``default``;
    a user error unless more than 0 and at most ``maximum`` seconds."""
    if value is None:
        return default
    try:
        result = float(value)
    except ValueError:
        try:
            result = parse_duration(value).total_seconds()
        except ValueError:
            result = math.nan
    if not 0 < result <= maximum:
        longest = format_duration(timedelta(seconds=maximum))
        raise UsageError(
            f"target {label}: {key}={value!r} in the URL is not a positive number of seconds "
            f"or a duration such as 15m or 48h, at most {longest}"
        )
    return result


def choice(value: str | None, label: str, key: str, choices: Sequence[str], default: str) -> str:
    """``?key=`` as one of ``choices`` (any letter case), spelled as in ``choices``."""
    if value is None:
        return default
    for option in choices:
        if value.lower() == option.lower():
            return option
    raise UsageError(
        f"target {label}: {key}={value!r} in the URL is not one of {', '.join(choices)}"
    )
