"""One module per source kind behind ``base.SourceKind``: files, mongodb, git.

The jobs ask ``kind_for(source)`` (or ``for_snapshot``) what to do; a new kind is a module
with its config struct and a ``SourceKind``, and one ``register`` call (docs/design.md,
"Source kinds").
"""

from __future__ import annotations

from . import files, git, mongodb
from .base import (
    DrillResult,
    SourceKind,
    for_snapshot,
    kind_for,
    kind_named,
    register,
    registered,
    unregister,
)

__all__ = [
    "DrillResult",
    "SourceKind",
    "for_snapshot",
    "kind_for",
    "kind_named",
    "register",
    "registered",
    "unregister",
]

for _kind in (files.KIND, mongodb.KIND, git.KIND):
    register(_kind)
