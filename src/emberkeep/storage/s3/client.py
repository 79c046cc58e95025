"""The requests every part of an s3:// target makes: one boto3 client, retried calls, HEADs,
listings page by page, and the errors they end in.

Credentials come from boto's usual chain: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` with ``~/.aws/credentials`` and ``~/.aws/config``, or
an instance role. With an ``endpoint`` (an S3-compatible server) requests use path-style
addressing, which every such server accepts.

``S3Client`` is the base of the backend's parts (``lock``, ``upload``, ``thaw``, and
``backend``'s ``S3Storage``, which sets the state declared here).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config

from ...errors import AlreadyExists, StorageError
from . import retry
from .location import S3Location
from .replies import BODILESS, error_code, failure, http_status, is_missing

T = TypeVar("T")


class S3Client:
    """Requests to one s3:// target. Thread-safe: botocore clients are."""

    label: str
    loc: S3Location
    _lock: threading.Lock
    _client: Any
    _bucket_checked: bool

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _make_client(self) -> Any:
        loc = self.loc
        config = Config(
            connect_timeout=loc.timeout,
            read_timeout=loc.timeout,
            retries={"total_max_attempts": 1},  # retried by _call
            max_pool_connections=16,
            s3={"addressing_style": "path"} if loc.endpoint else None,
            user_agent_extra="emberkeep",
        )
        session = boto3.session.Session()
        region = loc.region or session.region_name or "us-east-1"
        return session.client("s3", endpoint_url=loc.endpoint, region_name=region, config=config)

    # -- requests ----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request, retrying transient failures; ClientErrors of other kinds pass."""
        return retry.call(self.label, self.loc, what, fn)

    def _checked(self, what: str, fn: Callable[[], T]) -> T:
        """``_call``, with any error the server answers turned into a StorageError."""
        try:
            return self._call(what, fn)
        except boto_errors.ClientError as exc:
            raise self._failed(what, exc) from exc

    def _head(self, name: str, key: str) -> int | None:
        reply = self._head_reply(name, key)
        return None if reply is None else int(reply["ContentLength"])

    def _head_reply(self, name: str, key: str) -> dict[str, Any] | None:
        """head_object's reply (size, storage class, restore, lock), or None when missing."""
        args = {"Bucket": self.loc.bucket, "Key": key}
        try:
            return self._call(f"looking up {name}", lambda: self.client.head_object(**args))
        except boto_errors.ClientError as exc:
            if error_code(exc) in BODILESS:
                # A HEAD reply has no body to say why: a missing bucket, unknown credentials
                # and a missing object can all look alike. A listing names the cause.
                self._check_bucket(force=http_status(exc) != 404)
            if is_missing(exc):
                return None
            raise self._failed(f"looking up {name}", exc) from exc

    def _check_bucket(self, *, force: bool = False) -> None:
        """Raise the precise error when the bucket or the credentials are wrong."""
        if self._bucket_checked and not force:
            return
        args = {"Bucket": self.loc.bucket, "Prefix": self.loc.prefix, "MaxKeys": 1}
        self._checked("looking up the bucket", lambda: self.client.list_objects_v2(**args))
        self._bucket_checked = True

    def _pages(
        self, what: str, call: Callable[..., dict[str, Any]], args: dict[str, Any], *markers: str
    ) -> Iterator[dict[str, Any]]:
        """Every page of a listing, each page fetched (and retried) on its own."""
        follow = {
            "ContinuationToken": "NextContinuationToken",
            "KeyMarker": "NextKeyMarker",
            "UploadIdMarker": "NextUploadIdMarker",
            "VersionIdMarker": "NextVersionIdMarker",
        }
        extra: dict[str, Any] = {}
        seen: set[tuple[tuple[str, Any], ...]] = set()
        while True:
            page = self._checked(what, functools.partial(call, **args, **extra))
            yield page
            if not page.get("IsTruncated"):
                return
            extra = {m: page[follow[m]] for m in markers if page.get(follow[m])}
            if not extra:
                return
            marker = tuple(sorted(extra.items()))
            if marker in seen:  # a server that sends a page's marker again would loop for ever
                raise StorageError(
                    f"target {self.label}: {what}: the server's listing repeats a page "
                    f"({', '.join(f'{k} {v!r}' for k, v in marker)}); it cannot be trusted "
                    "to list every object"
                )
            seen.add(marker)

    def _key(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise StorageError(f"target {self.label}: refusing object name {name!r}")
        return self.loc.prefix + name

    # -- messages ----------------------------------------------------------------------------

    def _failed(self, what: str, exc: boto_errors.ClientError) -> StorageError:
        return failure(self.label, self.loc, what, exc)

    def _exists(self, name: str) -> AlreadyExists:
        return AlreadyExists(f"target {self.label}: object {name} already exists")
