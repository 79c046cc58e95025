"""s3:// targets (``backend.S3Storage``), one module per concern; see ``backend``.

Re-exported here: the backend, its location and the thaw API.
"""

from __future__ import annotations

from .backend import S3Storage
from .location import S3Location
from .thaw import (
    ARCHIVED,
    READY,
    THAWING,
    ThawProgress,
    ThawTimeout,
    thaw_packs,
    thaw_state,
    wait_for_thaw,
)

__all__ = [
    "ARCHIVED",
    "READY",
    "THAWING",
    "S3Location",
    "S3Storage",
    "ThawProgress",
    "ThawTimeout",
    "thaw_packs",
    "thaw_state",
    "wait_for_thaw",
]
