"""s3:// targets (``backend.S3Storage``); see ``backend``.

Re-exported here: what the rest of emberkeep and the tests import.
"""

from __future__ import annotations

from .backend import (
    ARCHIVED,
    ARCHIVED_CLASSES,
    READY,
    THAW_HOURS,
    THAWING,
    S3Location,
    S3Storage,
    ThawProgress,
    ThawTimeout,
    thaw_packs,
    thaw_state,
    wait_for_thaw,
)

__all__ = [
    "ARCHIVED",
    "ARCHIVED_CLASSES",
    "READY",
    "THAWING",
    "THAW_HOURS",
    "S3Location",
    "S3Storage",
    "ThawProgress",
    "ThawTimeout",
    "thaw_packs",
    "thaw_state",
    "wait_for_thaw",
]
