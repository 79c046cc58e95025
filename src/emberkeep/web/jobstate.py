"""The record of the dashboard's job: dashboard.py runs it and fills this in, page.py shows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class JobState:
    """The dashboard's current (or last) job, as ``/api/job`` and the page show it."""

    id: int
    kind: str
    source: str
    state: str  # running | ok | failed
    started: str
    files: int = 0
    bytes: int = 0
    summary: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
