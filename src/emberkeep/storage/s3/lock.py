"""Object Lock on an s3:// target: objects the server keeps from deletion for N days.

With ``lock_days=N`` (and ``lock_mode=COMPLIANCE`` (default) or ``GOVERNANCE``) every object
written, except under ``unlocked_prefixes`` (``locks/``: leases are refreshed and removed;
``trash/``: prune's markers), gets ``ObjectLockMode`` and ``ObjectLockRetainUntilDate`` = now
+ N days (the real clock, not ``EMBERKEEP_NOW``: the server enforces the lock by its own clock)
on PutObject and CreateMultipartUpload. The bucket must have been created with Object Lock
enabled (on AWS that turns versioning on). ``delete`` then removes every *version* of the name
(so on a versioned bucket a lock is enforced, instead of a delete marker hiding a version that
stays and is billed), and a refusal by the server becomes ``ObjectLocked`` (with the
retain-until date from a HEAD), which prune catches: it leaves the object and says until when.
A create-only put of a name that exists and is locked (a server may answer AccessDenied before
looking at ``If-None-Match``) is ``AlreadyExists``, as for any existing name.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions as boto_errors

from ...errors import EmberkeepError, StorageError
from ..base import ObjectLocked, until_text
from .client import S3Client
from .replies import error_code, http_status, is_missing, mentions_lock


class S3Locks(S3Client):
    """The Object Lock part of ``S3Storage``."""

    unlocked_prefixes: tuple[str, ...]

    def lock_for(self, name: str) -> dict[str, Any]:
        """The Object Lock parameters a new object gets (none without ``lock_days``)."""
        if not self._locks(name):
            return {}
        assert self.loc.lock_days is not None
        until = datetime.now(UTC) + timedelta(days=self.loc.lock_days)
        return {
            "ObjectLockMode": self.loc.lock_mode,
            "ObjectLockRetainUntilDate": until.replace(microsecond=0),
        }

    def locked_until(self, name: str) -> datetime | None:
        """The end of ``name``'s Object Lock retention if still in force (``datetime.max``
        for a legal hold), or None: the server lets it be deleted (as far as we know)."""
        if not self._locks(name):
            return None  # no HEAD; a lock set by other means still makes delete raise
        reply = self._head_reply(name, self._key(name))
        return None if reply is None else _lock_end(reply)

    def _locks(self, name: str) -> bool:
        """Whether ``name`` is written with Object Lock (and so deleted by version)."""
        return bool(self.loc.lock_days) and not name.startswith(self.unlocked_prefixes)

    def _delete_versions(self, name: str, key: str) -> None:
        """Delete every version of ``key`` (and its delete markers), newest first.

        Object Lock buckets are versioned on AWS (and may be on other servers). There a plain
        DELETE only adds a delete marker: no lock stops it, and the locked version stays,
        hidden and billed, for good; and a marker counts as an existing name for
        ``If-None-Match`` on some servers (versitygw), so a lease could never be taken again.
        Deleting by version id is what a lock refuses, and leaves the name free.
        """
        args = {"Bucket": self.loc.bucket, "Prefix": key}
        listing = self._pages(
            f"listing the versions of {name}",
            self.client.list_object_versions,
            args,
            "KeyMarker",
            "VersionIdMarker",
        )
        found = [
            entry
            for page in listing
            for entry in (*page.get("Versions", ()), *page.get("DeleteMarkers", ()))
            if entry.get("Key") == key
        ]
        found.sort(key=_newest_first)
        for entry in found:
            version = entry.get("VersionId")
            args = {"Bucket": self.loc.bucket, "Key": key}
            if version and version != "null":  # "null": an unversioned bucket's one version
                args["VersionId"] = version

            def delete(a: dict[str, Any] = args) -> Any:  # self.client looked up per attempt
                return self.client.delete_object(**a)

            try:
                self._call(f"deleting {name}", delete)
            except boto_errors.ClientError as exc:
                if is_missing(exc):
                    continue
                locked = self._lock_refusal(name, key, exc)
                raise locked or self._failed(f"deleting {name}", exc) from exc

    def _write_failed(
        self, name: str, key: str, exc: boto_errors.ClientError, *, create_only: bool
    ) -> StorageError:
        """A refused write: the name is taken and locked, or another failure."""
        locked = self._lock_refusal(name, key, exc)
        if locked is not None:
            return self._exists(name) if create_only else locked
        return self._failed(f"writing {name}", exc)

    def _lock_refusal(
        self, name: str, key: str, exc: boto_errors.ClientError
    ) -> ObjectLocked | None:
        """ObjectLocked when the server refused because the object is under retention.

        AWS and versitygw both answer AccessDenied ("Access Denied because object protected by
        object lock"); a HEAD tells a lock from missing permissions, and until when.
        """
        if not (error_code(exc) in ("AccessDenied", "ObjectLocked") or http_status(exc) == 403):
            return None
        said = mentions_lock(exc)
        try:
            reply = self._head_reply(name, key)
        except EmberkeepError:
            reply = None
        until = None if reply is None else _lock_end(reply)
        if until is None and not said:
            return None
        return ObjectLocked(
            f"target {self.label}: {name} is protected by S3 Object Lock {until_text(until)}; "
            "the server refuses to delete or replace it before then",
            name=name,
            until=until,
        )


def _lock_end(reply: dict[str, Any]) -> datetime | None:
    """The retention a head_object reply shows still in force, or None."""
    if reply.get("ObjectLockLegalHoldStatus") == "ON":
        return datetime.max.replace(tzinfo=UTC)
    until = reply.get("ObjectLockRetainUntilDate")
    if isinstance(until, datetime) and until > datetime.now(UTC):
        return until.astimezone(UTC)
    return None


def _newest_first(entry: dict[str, Any]) -> tuple[bool, float]:
    modified = entry.get("LastModified")
    return not entry.get("IsLatest"), -modified.timestamp() if modified else 0.0
