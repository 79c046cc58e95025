"""Durations as people write them in config: ``90s``, ``15m``, ``24h``, ``7d``, ``1h30m``.

``Duration`` is the config's type for them: parsed once when the config is read, so no
reader parses the text again (CONTRIBUTING.md: values are typed once at the edge).
"""

from __future__ import annotations

import re
from datetime import timedelta

from .typedtext import TypedText

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


class Duration(TypedText[timedelta]):
    """A duration as written in config (``"24h"``); ``delta`` is its value (typedtext.py)."""

    parse = staticmethod(parse_duration)

    @property
    def delta(self) -> timedelta:
        return self.value()

    @property
    def seconds(self) -> float:
        return self.delta.total_seconds()
