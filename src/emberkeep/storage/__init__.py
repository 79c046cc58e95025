"""Backends: put/get/list/delete of named objects. No format logic lives here."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from ..errors import UsageError
from .base import ObjectInfo, Storage
from .local import LocalStorage


def open_storage(url: str, *, name: str = "") -> Storage:
    """The backend for a target URL."""
    parsed = urlparse(url)
    label = name or url
    if parsed.scheme == "file":
        return LocalStorage(unquote(parsed.path), label=label)
    if parsed.scheme in ("sftp", "s3"):
        raise UsageError(
            f"target {label}: {parsed.scheme}:// targets are not available in this version; "
            "use a file:// target"
        )
    raise UsageError(f"target {label}: unsupported URL {url!r}")


__all__ = ["LocalStorage", "ObjectInfo", "Storage", "open_storage"]
