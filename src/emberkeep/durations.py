"""Durations as people write them in config: ``90s``, ``15m``, ``24h``, ``7d``, ``1h30m``.

``Duration`` is the config's type for them: parsed once when the config is read, so no
reader parses the text again (CONTRIBUTING.md: values are typed once at the edge).
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raise ValueError with the accepted form on anything else."""
    compact = text.strip().replace(" ", "")
    if not compact or _PART.sub("", compact) != "":
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (s, m, h, d, w), "
            "e.g. '24h', '7d' or '1h30m'"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration; give at most some years") from None


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class Duration(str):
    """A duration as written in config (``"24h"``), parsed once when it is read.

    A ``str``, so it prints, compares and goes into JSON as the user wrote it; ``delta`` is
    its value. Text that is not a duration keeps its ``problem`` instead of raising, so the
    config check reports it beside every other problem at once; its ``delta`` refuses to be
    read (a config with a problem is never handed out by ``config.load``).
    """

    _delta: timedelta | None
    problem: str | None

    def __new__(cls, text: str) -> Duration:
        value = super().__new__(cls, text)
        try:
            value._delta, value.problem = parse_duration(text), None
        except ValueError as exc:
            value._delta, value.problem = None, str(exc)
        return value

    @property
    def delta(self) -> timedelta:
        if self._delta is None:
            raise ValueError(self.problem)
        return self._delta

    @property
    def seconds(self) -> float:
        return self.delta.total_seconds()
