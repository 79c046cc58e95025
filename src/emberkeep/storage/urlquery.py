"""Options given in a target URL's query string (``?timeout=30&region=…``)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import ParseResult, parse_qs, urlparse

from ..errors import UsageError

DEFAULT_TIMEOUT = 30.0  # seconds, for every network call of a remote target


def parse(url: str, label: str, options: Sequence[str]) -> tuple[ParseResult, dict[str, list[str]]]:
    """A target URL and its query; a user error naming any option not in ``options``."""
    parsed = urlparse(url)
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
    """``?timeout=`` in seconds, or the default; a user error unless a positive number."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise UsageError(f"target {label}: timeout={value!r} in the URL is not a positive number")
    return seconds
