"""The one small interface every backend implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

Payload = bytes | bytearray | memoryview | list[bytes | bytearray]
"""An object's bytes, whole or as a list of parts written one after another."""


@dataclass(frozen=True)
class ObjectInfo:
    name: str  # full object name, e.g. "data/9f…"
    size: int


class Storage(Protocol):
    label: str  # how messages name this target

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        """Store an object crash-safely. Create-only unless ``overwrite``: raises AlreadyExists."""

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read an object or a byte range of it. Raises NotFound."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (a folder such as "data/")."""

    def stat(self, name: str) -> ObjectInfo | None:
        """Size of an object, or None when it does not exist."""

    def delete(self, name: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def free_bytes(self) -> int | None:
        """Free space where known."""

    def incomplete(self) -> list[str]:
        """Names of writes that never finished (a crash mid-upload); ``delete`` removes them."""
