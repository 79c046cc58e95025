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
    # Imported here: paramiko and boto3 take a while to load, and most commands need neither.
    if parsed.scheme == "sftp":
        from .sftp import SftpStorage

        return SftpStorage(url, label=name or _without_password(url))
    if parsed.scheme == "s3":
        from .s3 import S3Storage

        return S3Storage(url, label=name or _without_password(url))
    raise UsageError(f"target {label}: unsupported URL {url!r}")


def _without_password(url: str) -> str:
    """The URL to name a target by in messages, a password in it left out."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    host = parsed.netloc.rpartition("@")[2]
    return parsed._replace(netloc=f"{parsed.username}@{host}").geturl()


__all__ = ["LocalStorage", "ObjectInfo", "Storage", "open_storage"]
