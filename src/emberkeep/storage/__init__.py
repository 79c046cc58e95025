"""Backends: put/get/list/delete of named objects. No format logic lives here."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from ..errors import UsageError
from ..redact import redact_url
from .base import ObjectInfo, Storage
from .local import LocalStorage


def open_storage(url: str, *, name: str = "") -> Storage:
    """The backend for a target URL."""
    parsed = urlparse(url)
    label = name or redact_url(url)
    if parsed.scheme == "file":
        return LocalStorage(unquote(parsed.path), label=label)
    # Imported here: paramiko and boto3 take a while to load, and most commands need neither.
    if parsed.scheme == "sftp":
        from .sftp import SftpStorage

        return SftpStorage(url, label=name or redact_url(url))
    if parsed.scheme == "s3":
        from .s3 import S3Storage

        return S3Storage(url, label=name or redact_url(url))
    raise UsageError(f"target {label}: unsupported URL {url!r}")


def check_url(url: str, *, name: str) -> None:
    """Raise the UsageError ``open_storage`` would for a remote URL's options, without
    connecting: the config is checked when it loads, before any job starts."""
    scheme = urlparse(url).scheme
    if scheme == "sftp":
        from .sftp import SftpLocation

        SftpLocation.parse(url, name)
    elif scheme == "s3":
        from .s3 import S3Location

        S3Location.parse(url, name)


__all__ = ["LocalStorage", "ObjectInfo", "Storage", "check_url", "open_storage"]
