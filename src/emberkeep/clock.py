"""The one clock every time-dependent piece reads.

``EMBERKEEP_NOW`` (ISO 8601) pins the current time, so schedules, retention and
objectives can be simulated from outside (docs/design.md, "CLI contract").
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from .errors import UsageError

ENV_VAR = "EMBERKEEP_NOW"


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time; a time without a zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{text!r} is not an ISO 8601 time (e.g. 2026-03-01T02:00:00Z)") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def now() -> datetime:
    """The current time in UTC, or the pinned time from ``EMBERKEEP_NOW``."""
    pinned = os.environ.get(ENV_VAR)
    if pinned:
        try:
            return parse_time(pinned).astimezone(UTC)
        except UsageError as exc:
            raise UsageError(f"{ENV_VAR}: {exc}") from exc
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def since(text: str, what: str) -> datetime:
    """A duration back from now (``7d``) or an ISO 8601 time, as ``log --since`` takes it;
    ``what`` names the option in the error (``--since``, ``since``)."""
    from .durations import parse_duration

    try:
        return now() - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except UsageError:
        raise UsageError(
            f"{what} {text!r}: give a duration back from now (like 7d or 12h) or an ISO 8601 "
            "time (like 2026-03-01T00:00:00Z)"
        ) from None
