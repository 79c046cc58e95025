"""Sizes as people write them in config: ``500MB``, ``10GiB``, ``1.5 TB``, ``4096``.

``Size`` is the config's type for them, parsed once when the config is read.
"""

from __future__ import annotations

import re

from .typedtext import TypedText

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")


def parse_size(text: str) -> int:
    """Bytes in ``text``; ValueError naming the accepted forms on anything else."""
    match = _SIZE.match(text.strip().lower())
    if not match or match[2] not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size; write a number and a unit (B, KB, MB, GB, TB or "
            "KiB, MiB, GiB, TiB), e.g. '10GiB' or '500MB'"
        )
    return int(float(match[1]) * _UNITS[match[2]])


class Size(TypedText[int]):
    """A size as written in config (``"1GiB"``); ``bytes`` is its value (typedtext.py)."""

    parse = staticmethod(parse_size)

    @property
    def bytes(self) -> int:
        return self.value()
