"""Options given in a target URL's query string (``?timeout=30&region=…``)."""

from __future__ import annotations

from ..errors import UsageError

DEFAULT_TIMEOUT = 30.0  # seconds, for every network call of a remote target


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
