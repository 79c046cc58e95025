"""s3:// targets: one object per name, under a prefix in a bucket (boto3).

URL: ``s3://bucket[/prefix][?endpoint=URL&region=R&storage_class=C&timeout=SECONDS]``, and
for cold storage ``thaw_days``, ``thaw_tier``, ``thaw_poll``, ``thaw_timeout``, for
immutability ``lock_days`` and ``lock_mode`` (both below). Every number is bounded
(``urlquery``): ``timeout`` from 1 to 3600 seconds, ``thaw_days`` up to 3650, ``thaw_poll``
up to a day, ``thaw_timeout`` up to 30 days, ``lock_days`` up to 36500.
Credentials come from boto's usual chain: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` with ``~/.aws/credentials`` and ``~/.aws/config``, or
an instance role. With an ``endpoint`` (an S3-compatible server) requests use path-style
addressing, which every such server accepts.

- **Create-only** puts send ``If-None-Match: *`` (on PutObject, or on CompleteMultipartUpload),
  which AWS and current S3-compatible servers apply atomically. A server that answers that it
  does not implement it is remembered, and create-only falls back to HEAD-then-PUT, which is
  not atomic: two writers racing for one name may both succeed. (A server that silently
  ignores the header cannot be told apart; it behaves like the fallback.)
- **Large objects** (over ``MULTIPART_THRESHOLD``) go up as multipart uploads of ``PART_SIZE``
  parts, ``PART_WORKERS`` at a time; a failed upload is aborted. Uploads a crash left behind
  show in ``incomplete()`` as ``multipart:<name>:<upload id>``; ``delete`` of such a name
  aborts the upload.
- **Retries**: transient failures (dropped connections, 5xx, throttling) are retried with
  exponential backoff, ``ATTEMPTS`` tries in all. This is our loop rather than botocore's
  ``standard`` mode so that an endpoint that refuses connections or stays silent fails once
  ``timeout`` has passed, instead of after every attempt's timeout and backoff.
  A write retried after a dropped connection or a silent server may have been stored by the
  attempt whose reply was lost; when the retry then finds the name taken (If-None-Match, or
  Object Lock's refusal) or a completion finds its upload gone (``NoSuchUpload``), and the
  stored object is the one being written (``base.holds_written``: same size, and the name
  is the SHA-256 of the bytes or the bytes are equal), the write succeeded. Another object
  there stays ``AlreadyExists``.
- **Storage class**: ``storage_class`` applies only to names under ``cold_prefixes`` (data packs
  by default), so the index, snapshots, keys and locks stay readable without a thaw.
- **Thaw** (reading archived objects): ``prepare_read(names)`` (or ``thaw_packs``) HEADs the
  names, asks the server to restore every archived one (RestoreObject, ``thaw_days`` days,
  default 1, tier ``thaw_tier``: Standard (default), Bulk or Expedited), then waits once for
  the lot, HEADing what is still thawing every ``thaw_poll`` (default 60 s) until its
  ``Restore`` header says ``ongoing-request="false"``, for at most ``thaw_timeout`` (default
  48 h), reporting how many objects are still thawing. A GET that the server refuses with
  ``InvalidObjectState`` (nobody called ``prepare_read``) thaws that object, or the batch
  given to an earlier ``prepare_read``, the same way and reads it then. Instantly readable
  classes (GLACIER_IR, STANDARD_IA, ONEZONE_IA, ...) are never thawed.
- **Object Lock** (``lock_days=N``, ``lock_mode=COMPLIANCE`` (default) or ``GOVERNANCE``): every
  object written, except under ``unlocked_prefixes`` (``locks/``: leases are refreshed and
  removed; ``trash/``: prune's markers), gets ``ObjectLockMode`` and
  ``ObjectLockRetainUntilDate`` = now + N days (the real clock, not ``EMBERKEEP_NOW``: the
  server enforces the lock by its own clock) on PutObject and CreateMultipartUpload. The
  bucket must have been created with Object Lock enabled (on AWS that turns versioning on).
  ``delete`` then removes every *version* of the name (so on a versioned bucket a lock is
  enforced, instead of a delete marker hiding a version that stays and is billed), and a
  refusal by the server becomes ``ObjectLocked`` (with the retain-until date from a HEAD),
  which prune catches: it leaves the object and says until when. A create-only put of a name
  that exists and is locked (a server may answer AccessDenied before looking at
  ``If-None-Match``) is ``AlreadyExists``, as for any existing name.

Cold storage: what it costs and how long it takes (Amazon S3; numbers from AWS's
documentation, "Understanding archive retrieval options" and "Understanding S3 Glacier storage
classes"; prices vary by region, see https://aws.amazon.com/s3/pricing/):

- ``storage_class=GLACIER`` (S3 Glacier Flexible Retrieval) and ``DEEP_ARCHIVE`` (S3 Glacier
  Deep Archive) are *archival*: an object cannot be read until a restore request has made a
  temporary copy of it, kept for ``thaw_days``. ``GLACIER_IR`` (Instant Retrieval) reads at
  once, like ``STANDARD_IA``; it only costs more per GB read.
- Restore time, typical: Glacier Flexible Retrieval: Expedited 1-5 minutes (objects under
  250 MB), Standard 3-5 hours, Bulk 5-12 hours. Deep Archive: Standard within 12 hours, Bulk
  within 48 hours (no Expedited). A restore of many packs waits once, for the slowest.
- Retrieval fees: per restore request and per GB restored (Expedited costs most; Bulk is the
  cheapest and, from Flexible Retrieval, free of the per-GB fee), plus the restored copy is
  billed as standard storage for the ``thaw_days`` it is kept. A full-site restore from Deep
  Archive therefore costs money and half a day to two days before the first byte.
- Minimum storage duration: 90 days for Flexible Retrieval (and Instant Retrieval), 180 days
  for Deep Archive. An object deleted (or overwritten) sooner is billed for the remaining days,
  so a cold target's retention should keep snapshots at least that long (``copies =
  "monthly"`` with monthly retention does); pruning young cold packs saves nothing.
- emberkeep sends only data packs (``data/``) to the cold class. The index, snapshot headers,
  keys, metadata (tree) packs and leases stay in STANDARD, so ``snapshots``, ``status``,
  ``check`` (without ``--read-data``) and ``prune`` never wait for a thaw or pay a retrieval;
  ``restore`` and ``check --read-data`` thaw exactly the data packs they read.
"""

from __future__ import annotations

import builtins
import functools
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config

from ...durations import format_duration
from ...errors import AlreadyExists, EmberkeepError, NotFound, StorageError, UsageError
from .. import urlquery
from ..base import (
    ObjectInfo,
    ObjectLocked,
    Payload,
    ProgressFn,
    holds_written,
    prepare_read,
    until_text,
)

T = TypeVar("T")

ATTEMPTS = 5
MULTIPART_THRESHOLD = 8 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
PART_WORKERS = 4
MULTIPART = "multipart:"
_OPTIONS = (
    "endpoint",
    "region",
    "storage_class",
    "timeout",
    "thaw_days",
    "thaw_tier",
    "thaw_poll",
    "thaw_timeout",
    "lock_days",
    "lock_mode",
)
# Classes whose objects need a restore before a GET. GLACIER_IR, STANDARD_IA, ONEZONE_IA and
# the rest are read at once and never thawed.
ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# Intelligent-Tiering's opt-in archive tiers (head_object's ArchiveStatus) need one too.
ARCHIVED_TIERS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})
THAW_TIERS = ("Standard", "Bulk", "Expedited")
# How long a thaw takes at most, by class and tier (hours; the docstring's AWS figures), for
# the runbook and `recover --dry-run` to set against the RTO.
THAW_HOURS = {
    ("GLACIER", "Expedited"): 5 / 60,
    ("GLACIER", "Standard"): 5.0,
    ("GLACIER", "Bulk"): 12.0,
    ("DEEP_ARCHIVE", "Standard"): 12.0,
    ("DEEP_ARCHIVE", "Bulk"): 48.0,
}
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
MAX_LOCK_DAYS = 36500  # AWS's limit (100 years)
DEFAULT_THAW_POLL = 60.0
DEFAULT_THAW_TIMEOUT = 48 * 3600.0
# Upper bounds, so no option can make a wait endless: a thawed copy kept 10 years, a poll
# a day apart, and a month for a thaw (Deep Archive's slowest, Bulk, takes up to 48 hours).
MAX_THAW_DAYS = 3650
MAX_THAW_POLL = 86400.0
MAX_THAW_TIMEOUT = 30 * 86400.0
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "XAdminUserNotFound",  # versitygw: an unknown access key
}
_BODILESS = {"", "404", "NotFound", "403", "Forbidden"}  # codes botocore makes up for HEAD
_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "ConditionalRequestConflict",  # a concurrent conditional write: AWS asks to retry
}
# Failures before any byte reached the server, and silence: bounded by the timeout.
_UNREACHABLE = (
    boto_errors.EndpointConnectionError,
    boto_errors.ConnectTimeoutError,
    boto_errors.ProxyConnectionError,
    boto_errors.ReadTimeoutError,
)
# Failures mid-request (a dropped connection): retried ATTEMPTS times.
_DROPPED = (
    boto_errors.ConnectionClosedError,
    boto_errors.ResponseStreamingError,
    boto_errors.IncompleteReadError,
    boto_errors.HTTPClientError,
)


@dataclass(frozen=True)
class S3Location:
    """Where an s3:// target lies, parsed from its URL."""

    bucket: str
    prefix: str  # "" or ending in "/"
    endpoint: str | None
    region: str | None
    storage_class: str | None
    timeout: float
    thaw_days: int = 1
    thaw_tier: str = "Standard"
    thaw_poll: float = DEFAULT_THAW_POLL
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT
    lock_days: int | None = None
    lock_mode: str = "COMPLIANCE"

    @classmethod
    def parse(cls, url: str, label: str) -> S3Location:
        parsed, query = urlquery.parse(url, label, _OPTIONS)
        if not parsed.netloc or "@" in parsed.netloc or ":" in parsed.netloc:
            raise UsageError(
                f"target {label}: give a bucket: s3://bucket/prefix (credentials go in the "
                "AWS environment variables or files, never in the URL)"
            )
        prefix = unquote(parsed.path).strip("/")
        endpoint = urlquery.last(query, "endpoint")
        if endpoint is not None and urlparse(endpoint).scheme not in ("http", "https"):
            raise UsageError(
                f"target {label}: endpoint={endpoint!r} is not an http:// or https:// URL"
            )

        def option(key: str) -> str | None:
            return urlquery.last(query, key)

        lock_days = option("lock_days")
        if lock_days is None and option("lock_mode") is not None:
            raise UsageError(
                f"target {label}: lock_mode= in the URL needs lock_days=N (how many days every "
                "object written stays locked)"
            )
        return cls(
            bucket=parsed.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint=endpoint,
            region=option("region"),
            storage_class=option("storage_class"),
            timeout=urlquery.timeout(option("timeout"), label),
            thaw_days=urlquery.positive_int(
                option("thaw_days"), label, "thaw_days", 1, maximum=MAX_THAW_DAYS
            ),
            thaw_tier=urlquery.choice(
                option("thaw_tier"), label, "thaw_tier", THAW_TIERS, "Standard"
            ),
            thaw_poll=urlquery.seconds(
                option("thaw_poll"), label, "thaw_poll", DEFAULT_THAW_POLL, maximum=MAX_THAW_POLL
            ),
            thaw_timeout=urlquery.seconds(
                option("thaw_timeout"),
                label,
                "thaw_timeout",
                DEFAULT_THAW_TIMEOUT,
                maximum=MAX_THAW_TIMEOUT,
            ),
            lock_days=None
            if lock_days is None
            else urlquery.positive_int(lock_days, label, "lock_days", 1, maximum=MAX_LOCK_DAYS),
            lock_mode=urlquery.choice(
                option("lock_mode"), label, "lock_mode", LOCK_MODES, "COMPLIANCE"
            ),
        )

    @property
    def where(self) -> str:
        """The bucket and endpoint for messages (an endpoint's user:password left out)."""
        if not self.endpoint:
            return f"bucket {self.bucket}"
        endpoint = urlparse(self.endpoint)
        host = endpoint.hostname or ""
        port = f":{endpoint.port}" if endpoint.port else ""
        return f"bucket {self.bucket} at {endpoint.scheme}://{host}{port}"


def _code(exc: boto_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: boto_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def _mentions_lock(exc: boto_errors.ClientError) -> bool:
    return re.search(r"object\s*lock", _message(exc), re.IGNORECASE) is not None


def _status(exc: boto_errors.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_missing(exc: boto_errors.ClientError) -> bool:
    """The object is missing (a missing bucket is another error, see ``_check_bucket``)."""
    return _code(exc) in ("NoSuchKey", "404", "NotFound") or (
        _status(exc) == 404 and not _code(exc)
    )


def _refuses_condition(exc: boto_errors.ClientError) -> bool:
    """The server does not implement If-None-Match (rather than: the name is taken)."""
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return (
        _status(exc) == 501
        or _code(exc) in ("NotImplemented", "NotImplementedException")
        or (_code(exc) in ("InvalidArgument", "InvalidRequest") and "match" in message.lower())
    )


def _views(data: Payload) -> list[memoryview]:
    return [memoryview(p).cast("B") for p in (data if isinstance(data, list) else [data])]


def _span(parts: list[memoryview], start: int, end: int) -> bytes:
    """Bytes [start, end) of the payload made of ``parts`` one after another."""
    out = bytearray()
    offset = 0
    for part in parts:
        lo, hi = max(start, offset), min(end, offset + len(part))
        if lo < hi:
            out += part[lo - offset : hi - offset]
        offset += len(part)
        if offset >= end:
            break
    return bytes(out)


class _Tries:
    """One request for ``_call`` that counts its attempts: after the first, an earlier
    attempt may have been carried out by the server and only its reply lost."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.count = 0

    def __call__(self) -> Any:
        self.count += 1
        return self.fn()

    @property
    def retried(self) -> bool:
        return self.count > 1


class S3Storage:
    """A target in an S3 bucket. Thread-safe: botocore clients are."""

    def __init__(
        self,
        url: str,
        *,
        label: str = "",
        cold_prefixes: tuple[str, ...] = ("data/",),
        unlocked_prefixes: tuple[str, ...] = ("locks/", "trash/"),
    ) -> None:
        self.label = label or "s3 target"
        self.loc = S3Location.parse(url, self.label)
        self.cold_prefixes = cold_prefixes
        self.unlocked_prefixes = unlocked_prefixes
        self.on_thaw: ProgressFn = _print_progress  # for thaws no prepare_read asked for
        self._lock = threading.Lock()
        self._thawing = threading.Lock()  # one thaw at a time; other readers wait for it
        self._batch: tuple[list[str], ProgressFn | None] | None = None  # see prepare_read
        self._client: Any = None
        self._conditional = True  # False once the server said it lacks If-None-Match
        self._bucket_checked = False

    # -- the interface -------------------------------------------------------------------

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        key = self._key(name)
        parts = _views(data)
        size = sum(len(p) for p in parts)
        large = size > MULTIPART_THRESHOLD
        # Without If-None-Match a HEAD is the only check; before a multipart upload it also
        # saves sending megabytes the server will refuse.
        if not overwrite and (large or not self._conditional) and self._head(name, key):
            raise self._exists(name)
        if large:
            self._put_multipart(name, key, parts, size, create_only=not overwrite)
        else:
            body = data if isinstance(data, bytes) else _span(parts, 0, size)
            self._put_single(name, key, body, parts, create_only=not overwrite)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        args: dict[str, Any] = {"Bucket": self.loc.bucket, "Key": self._key(name)}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{last}"

        def fetch() -> bytes:
            return self.client.get_object(**args)["Body"].read()

        try:
            try:
                return self._call(f"reading {name}", fetch)
            except boto_errors.ClientError as exc:
                if _code(exc) != "InvalidObjectState":
                    raise
            self._thaw_on_demand(name)  # archived, and nobody called prepare_read for it
            return self._call(f"reading {name}", fetch)
        except boto_errors.ClientError as exc:
            if _code(exc) == "InvalidRange":  # the range starts at or past the end
                return b""
            if _is_missing(exc):
                self._check_bucket()
                raise NotFound(f"target {self.label}: object {name} is missing") from exc
            raise self._failed(f"reading {name}", exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        args = {"Bucket": self.loc.bucket, "Prefix": self.loc.prefix + prefix}
        cut = len(self.loc.prefix)
        for page in self._pages("listing", self.client.list_objects_v2, args, "ContinuationToken"):
            for item in page.get("Contents", ()):
                if not item["Key"].endswith("/"):  # folder markers made by other tools
                    yield ObjectInfo(item["Key"][cut:], int(item["Size"]))

    def stat(self, name: str) -> ObjectInfo | None:
        size = self._head(name, self._key(name))
        return None if size is None else ObjectInfo(name, size)

    def delete(self, name: str) -> None:
        if name.startswith(MULTIPART):
            rest, _, upload_id = name[len(MULTIPART) :].rpartition(":")
            self._abort(rest, self._key(rest), upload_id)
            return
        key = self._key(name)
        if self.loc.lock_days:
            self._delete_versions(name, key)
            return
        args = {"Bucket": self.loc.bucket, "Key": key}
        try:
            self._call(f"deleting {name}", lambda: self.client.delete_object(**args))
        except boto_errors.ClientError as exc:
            locked = self._lock_refusal(name, key, exc)
            raise locked or self._failed(f"deleting {name}", exc) from exc

    def free_bytes(self) -> int | None:
        return None  # a bucket has no size limit we could ask about

    def incomplete(self) -> builtins.list[str]:
        args = {"Bucket": self.loc.bucket, "Prefix": self.loc.prefix}
        cut = len(self.loc.prefix)
        found = []
        pages = self._pages(
            "listing unfinished uploads",
            self.client.list_multipart_uploads,
            args,
            "KeyMarker",
            "UploadIdMarker",
        )
        for page in pages:
            for upload in page.get("Uploads", ()):
                found.append(f"{MULTIPART}{upload['Key'][cut:]}:{upload['UploadId']}")
        return sorted(found)

    def storage_class_for(self, name: str) -> str | None:
        """The storage class a new object gets: the target's own for cold names only.

        Data packs may go to a cold class (Glacier, Deep Archive) while everything a listing,
        status or prune reads stays in the standard class and never needs a thaw.
        """
        if self.loc.storage_class and name.startswith(self.cold_prefixes):
            return self.loc.storage_class
        return None

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

    def prepare_read(self, names: Iterable[str], on_progress: ProgressFn | None = None) -> None:
        """Thaw every archived object of ``names`` and wait once for them all (see above).

        When data packs are not sent to an archival class, objects can still be archived by a
        bucket lifecycle rule; rather than HEAD every name for that, the names are kept, and
        the first read the server refuses as archived thaws the whole batch.
        """
        batch = sorted(set(names))
        if (self.loc.storage_class or "").upper() in ARCHIVED_CLASSES:
            with self._thawing:
                self._thaw(batch, on_progress)
        else:
            with self._lock:
                self._batch = (batch, on_progress)

    def locked_until(self, name: str) -> datetime | None:
        """The end of ``name``'s Object Lock retention if still in force (``datetime.max``
        for a legal hold), or None: the server lets it be deleted (as far as we know)."""
        if not self._locks(name):
            return None  # no HEAD; a lock set by other means still makes delete raise
        reply = self._head_reply(name, self._key(name))
        return None if reply is None else _lock_end(reply)

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- writes ------------------------------------------------------------------------------

    def _put_single(
        self,
        name: str,
        key: str,
        body: bytes,
        parts: builtins.list[memoryview],
        *,
        create_only: bool,
    ) -> None:
        args = {"Bucket": self.loc.bucket, "Key": key, "Body": body, **self._extra(name)}
        if create_only and self._conditional:
            send = _Tries(lambda: self.client.put_object(**args, IfNoneMatch="*"))
            try:
                self._call(f"writing {name}", send)
                return
            except boto_errors.ClientError as exc:
                if not _refuses_condition(exc):
                    self._refused(send, exc, name, key, parts, create_only=True)
                    return  # a lost reply: the first attempt stored it
                self._conditional = False
            if self._head(name, key) is not None:
                raise self._exists(name)
        send = _Tries(lambda: self.client.put_object(**args))
        try:
            self._call(f"writing {name}", send)
        except boto_errors.ClientError as exc:
            self._refused(send, exc, name, key, parts, create_only=create_only)

    def _refused(
        self,
        tries: _Tries,
        exc: boto_errors.ClientError,
        name: str,
        key: str,
        parts: builtins.list[memoryview],
        *,
        create_only: bool,
    ) -> None:
        """Raise the error for a refused write, unless the write was retried and refused only
        because its own earlier attempt, whose reply was lost, stored it: the name is taken
        (or, for a multipart completion, the upload is gone) and holds what is being written
        (``base.holds_written``). Then return: the write succeeded."""
        if create_only and (_code(exc) == "PreconditionFailed" or _status(exc) == 412):
            error: StorageError = self._exists(name)
        else:
            error = self._write_failed(name, key, exc, create_only=create_only)
        met = isinstance(error, AlreadyExists) or _code(exc) == "NoSuchUpload"
        if not (tries.retried and met):
            raise error from exc
        if not holds_written(name, parts, self._head(name, key), lambda: self.get(name)):
            raise error from exc

    def _put_multipart(
        self, name: str, key: str, parts: builtins.list[memoryview], size: int, *, create_only: bool
    ) -> None:
        what = f"writing {name}"
        base = {"Bucket": self.loc.bucket, "Key": key}
        reply = self._checked(
            what, lambda: self.client.create_multipart_upload(**base, **self._extra(name))
        )
        base["UploadId"] = reply["UploadId"]
        spans = [(start, min(start + PART_SIZE, size)) for start in range(0, size, PART_SIZE)]

        def send(number: int, span: tuple[int, int]) -> dict[str, Any]:
            body = _span(parts, *span)  # built in the worker: PART_WORKERS parts in memory
            sent = self._checked(
                what, lambda: self.client.upload_part(**base, PartNumber=number, Body=body)
            )
            # Only number and ETag: part checksums are checked by the server on upload, and
            # listing them here is refused unless the upload was created with an algorithm.
            return {"PartNumber": number, "ETag": sent["ETag"]}

        try:
            with ThreadPoolExecutor(PART_WORKERS, thread_name_prefix="s3-part") as pool:
                done = list(pool.map(send, range(1, len(spans) + 1), spans))
            self._complete(name, base, done, parts, create_only=create_only)
        except BaseException:
            self._abort(name, key, base["UploadId"], quiet=True)
            raise

    def _complete(
        self,
        name: str,
        base: dict[str, str],
        done: builtins.list[dict[str, Any]],
        parts: builtins.list[memoryview],
        *,
        create_only: bool,
    ) -> None:
        """Complete an upload. A completion retried after its reply was lost may be answered
        200 (versitygw, AWS), 412 or NoSuchUpload: the last two are checked like a put's."""
        args = {**base, "MultipartUpload": {"Parts": done}}
        what, key = f"writing {name}", base["Key"]
        if create_only and self._conditional:
            complete = _Tries(
                lambda: self.client.complete_multipart_upload(**args, IfNoneMatch="*")
            )
            try:
                self._call(what, complete)
                return
            except boto_errors.ClientError as exc:
                if not _refuses_condition(exc):
                    self._refused(complete, exc, name, key, parts, create_only=True)
                    return  # a lost reply: the first attempt completed it
                self._conditional = False
        if create_only and self._head(name, key) is not None:
            raise self._exists(name)
        complete = _Tries(lambda: self.client.complete_multipart_upload(**args))
        try:
            self._call(what, complete)
        except boto_errors.ClientError as exc:
            self._refused(complete, exc, name, key, parts, create_only=create_only)

    def _abort(self, name: str, key: str, upload_id: str, *, quiet: bool = False) -> None:
        args = {"Bucket": self.loc.bucket, "Key": key, "UploadId": upload_id}
        try:
            self._call(
                f"abandoning the upload of {name}",
                lambda: self.client.abort_multipart_upload(**args),
            )
        except boto_errors.ClientError as exc:
            if quiet or _code(exc) == "NoSuchUpload" or _status(exc) == 404:
                return
            raise self._failed(f"abandoning the upload of {name}", exc) from exc
        except EmberkeepError:
            if not quiet:
                raise

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
                if _is_missing(exc):
                    continue
                locked = self._lock_refusal(name, key, exc)
                raise locked or self._failed(f"deleting {name}", exc) from exc

    def _extra(self, name: str) -> dict[str, Any]:
        storage_class = self.storage_class_for(name)
        extra: dict[str, Any] = {"StorageClass": storage_class} if storage_class else {}
        return extra | self.lock_for(name)

    def _locks(self, name: str) -> bool:
        """Whether ``name`` is written with Object Lock (and so deleted by version)."""
        return bool(self.loc.lock_days) and not name.startswith(self.unlocked_prefixes)

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
        if not (_code(exc) in ("AccessDenied", "ObjectLocked") or _status(exc) == 403):
            return None
        said = _mentions_lock(exc)
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

    # -- reads -------------------------------------------------------------------------------

    def _head(self, name: str, key: str) -> int | None:
        reply = self._head_reply(name, key)
        return None if reply is None else int(reply["ContentLength"])

    def _head_reply(self, name: str, key: str) -> dict[str, Any] | None:
        """head_object's reply (size, storage class, restore, lock), or None when missing."""
        args = {"Bucket": self.loc.bucket, "Key": key}
        try:
            return self._call(f"looking up {name}", lambda: self.client.head_object(**args))
        except boto_errors.ClientError as exc:
            if _code(exc) in _BODILESS:
                # A HEAD reply has no body to say why: a missing bucket, unknown credentials
                # and a missing object can all look alike. A listing names the cause.
                self._check_bucket(force=_status(exc) != 404)
            if _is_missing(exc):
                return None
            raise self._failed(f"looking up {name}", exc) from exc

    # -- thawing archived objects ----------------------------------------------------------

    def _thaw_on_demand(self, name: str) -> None:
        """A GET found ``name`` archived: thaw it, with the batch prepare_read was given."""
        with self._thawing:  # concurrent readers wait here for one thaw, then read
            with self._lock:
                batch, self._batch = self._batch, None
            names, on_progress = batch if batch is not None else ([], None)
            if name not in names:
                names = [*names, name]
            self._thaw(names, on_progress or self.on_thaw)

    def _thaw(self, names: builtins.list[str], on_progress: ProgressFn | None) -> None:
        heads: dict[str, dict[str, Any]] = {}

        def head(name: str) -> dict[str, Any]:
            heads[name] = self._head_reply(name, self._key(name)) or {}  # missing: not ours
            return heads[name]

        def restore(name: str) -> None:
            self._request_restore(name, heads.get(name, {}))

        with ThreadPoolExecutor(PART_WORKERS * 2, thread_name_prefix="s3-thaw") as pool:
            wait_for_thaw(
                names,
                head,
                restore,
                poll=self.loc.thaw_poll,
                timeout=self.loc.thaw_timeout,
                on_progress=on_progress or self.on_thaw,
                label=self.label,
                mapper=pool.map,
            )

    def _request_restore(self, name: str, reply: dict[str, Any]) -> None:
        request: dict[str, Any] = {"GlacierJobParameters": {"Tier": self.loc.thaw_tier}}
        if reply.get("ArchiveStatus") not in ARCHIVED_TIERS:
            request["Days"] = self.loc.thaw_days  # Intelligent-Tiering takes no Days
        args = {"Bucket": self.loc.bucket, "Key": self._key(name), "RestoreRequest": request}
        what = f"asking to thaw {name}"
        try:
            self._call(what, lambda: self.client.restore_object(**args))
        except boto_errors.ClientError as exc:
            if _code(exc) in ("RestoreAlreadyInProgress", "ObjectAlreadyInActiveTierError"):
                return
            raise self._failed(what, exc) from exc

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
        while True:
            page = self._checked(what, functools.partial(call, **args, **extra))
            yield page
            if not page.get("IsTruncated"):
                return
            extra = {m: page[follow[m]] for m in markers if page.get(follow[m])}
            if not extra:
                return

    def _key(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise StorageError(f"target {self.label}: refusing object name {name!r}")
        return self.loc.prefix + name

    # -- the client, retries and messages ----------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

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

    def _checked(self, what: str, fn: Callable[[], T]) -> T:
        """``_call``, with any error the server answers turned into a StorageError."""
        try:
            return self._call(what, fn)
        except boto_errors.ClientError as exc:
            raise self._failed(what, exc) from exc

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request, retrying transient failures; ClientErrors of other kinds pass."""
        start = time.monotonic()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return fn()
            except _UNREACHABLE as exc:
                delay = _backoff(attempt)
                if attempt == ATTEMPTS or time.monotonic() - start + delay >= self.loc.timeout:
                    raise self._unreachable(what, exc) from exc
            except boto_errors.ClientError as exc:
                if not (
                    _code(exc) in _TRANSIENT_CODES or _status(exc) >= 500
                ) or _refuses_condition(exc):
                    raise
                if attempt == ATTEMPTS:
                    raise
                delay = _backoff(attempt)
            except _DROPPED as exc:
                if attempt == ATTEMPTS:
                    raise StorageError(
                        f"target {self.label}: the connection to {self.loc.where} dropped "
                        f"{ATTEMPTS} times while {what} ({type(exc).__name__}); check the "
                        "server and the network, then run the command again"
                    ) from exc
                delay = _backoff(attempt)
            except (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError) as exc:
                raise StorageError(
                    f"target {self.label}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"
                ) from exc
            except boto_errors.BotoCoreError as exc:
                raise StorageError(f"target {self.label}: {what} failed: {exc}") from exc
            time.sleep(delay)
        raise AssertionError("not reached")

    def _unreachable(self, what: str, exc: Exception) -> StorageError:
        silent = isinstance(exc, boto_errors.ReadTimeoutError)
        why = "did not answer" if silent else "could not be reached"
        return StorageError(
            f"target {self.label}: {self.loc.where} {why} within {self.loc.timeout:g}s while "
            f"{what}; check endpoint= in the target URL and the network, or allow more time "
            "with ?timeout=SECONDS"
        )

    def _failed(self, what: str, exc: boto_errors.ClientError) -> StorageError:
        code, status = _code(exc), _status(exc)
        if code == "NoSuchBucket":
            return StorageError(
                f"target {self.label}: {self.loc.where} does not exist; create it, or fix the "
                "bucket name in the target URL"
            )
        if code in _CREDENTIAL_CODES:
            return StorageError(
                f"target {self.label}: {self.loc.where} refused the credentials ({code}); check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the AWS profile) for this target"
            )
        if code == "AccessDenied" or status == 403:
            return StorageError(
                f"target {self.label}: access denied while {what} in {self.loc.where}; check that "
                "the credentials are right and allowed to read, write, list and delete there"
            )
        if code == "InvalidRequest" and _mentions_lock(exc):
            return StorageError(
                f"target {self.label}: {self.loc.where} does not have Object Lock enabled, which "
                "lock_days= in the target URL needs; use a bucket created with Object Lock "
                "enabled, or remove lock_days"
            )
        if code == "InvalidObjectState":
            return StorageError(
                f"target {self.label}: {what} in {self.loc.where}: the object is archived (cold "
                "storage) and could not be thawed; check thaw_tier= and the server's support "
                "for RestoreObject"
            )
        message = _message(exc)[:200]
        return StorageError(
            f"target {self.label}: {what} in {self.loc.where} failed: {code or status}"
            + (f" ({message})" if message else "")
        )

    def _exists(self, name: str) -> AlreadyExists:
        return AlreadyExists(f"target {self.label}: object {name} already exists")


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.2 s, 0.4 s, 0.8 s … at most 5 s."""
    ceiling = min(5.0, 0.2 * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# -- thawing, as a pure function over head and restore -------------------------------------

READY, ARCHIVED, THAWING = "ready", "archived", "thawing"


def thaw_state(head: dict[str, Any]) -> str:
    """What a head_object reply says: READY to read, ARCHIVED (needs a restore), or THAWING.

    ``Restore`` is ``ongoing-request="true"`` while a restore runs and ``ongoing-request=
    "false", expiry-date="…"`` once the temporary copy is readable. Objects in instantly
    readable classes (GLACIER_IR, STANDARD_IA, …) and missing ones (an empty reply) are READY.
    """
    restore = str(head.get("Restore") or "").replace(" ", "")
    if 'ongoing-request="true"' in restore:
        return THAWING
    if 'ongoing-request="false"' in restore:
        return READY
    if head.get("StorageClass") in ARCHIVED_CLASSES or head.get("ArchiveStatus") in ARCHIVED_TIERS:
        return ARCHIVED
    return READY


@dataclass(frozen=True)
class ThawProgress:
    """One report of a thaw: how many of the archived objects are not readable yet."""

    label: str
    total: int  # objects that needed a thaw
    thawing: int  # of those, still thawing
    waited: float  # seconds since the restore requests

    def __str__(self) -> str:
        waited = format_duration(timedelta(seconds=int(self.waited)))
        if not self.thawing:
            return f"target {self.label}: {self.total} archived objects thawed after {waited}"
        return (
            f"target {self.label}: {self.thawing} of {self.total} objects thawing from cold "
            f"storage (waited {waited}); Glacier takes hours, Deep Archive up to 48 h"
        )


class ThawTimeout(StorageError):
    """Archived objects were not readable within ``thaw_timeout``."""

    def __init__(self, message: str, pending: list[str]) -> None:
        super().__init__(message)
        self.pending = pending


def wait_for_thaw(
    names: Iterable[str],
    head: Callable[[str], dict[str, Any]],
    restore: Callable[[str], None],
    *,
    poll: float,
    timeout: float,
    on_progress: ProgressFn,
    label: str = "s3 target",
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    mapper: Callable[..., Iterable[Any]] = map,
) -> int:
    """Restore every archived object of ``names``, then wait until all of them are readable.

    ``head(name)`` returns a head_object reply, ``restore(name)`` asks for a restore (and
    tolerates one already running). Objects already thawing are waited for, not asked again;
    one found archived again while waiting (its restore lapsed) is asked again. Progress goes
    to ``on_progress`` once the requests are out, after every poll, and when all are readable.
    Returns how many objects needed a thaw; raises ThawTimeout after ``timeout`` seconds.
    ``mapper`` runs the HEADs and requests (``map``, or a thread pool's).
    """

    def states(batch: list[str]) -> dict[str, str]:
        return dict(zip(batch, mapper(lambda name: thaw_state(head(name)), batch), strict=True))

    found = states(list(dict.fromkeys(names)))
    list(mapper(restore, [name for name, state in found.items() if state == ARCHIVED]))
    pending = sorted(name for name, state in found.items() if state != READY)
    total = len(pending)
    if not total:
        return 0
    start = now()
    on_progress(ThawProgress(label, total, total, 0.0))
    while True:
        waited = now() - start
        if waited >= timeout:
            raise ThawTimeout(
                f"target {label}: {len(pending)} of {total} archived objects were still thawing "
                f"after {format_duration(timedelta(seconds=int(timeout)))}; the restore "
                "requests stay active: run the command again later (it reads what has thawed "
                "by then), or allow more time with thaw_timeout= in the target URL",
                pending,
            )
        sleep(min(poll, timeout - waited))
        found = states(pending)
        list(mapper(restore, [name for name, state in found.items() if state == ARCHIVED]))
        pending = [name for name in pending if found[name] != READY]
        on_progress(ThawProgress(label, total, len(pending), now() - start))
        if not pending:
            return total


def thaw_packs(
    storage: Any, pack_names: Iterable[str], on_progress: ProgressFn | None = None
) -> None:
    """Make the packs a restore (or ``check --read-data``) is about to read readable.

    Call it once, with every pack the job will read, before reading any: on an s3 target whose
    packs are archived (Glacier Flexible Retrieval, Deep Archive) it requests all restores
    first and waits once for the lot, calling ``on_progress`` with a ThawProgress (``str()``
    is a line to print) after every poll; it raises ThawTimeout (a StorageError) after
    ``thaw_timeout``. On any other target, or with nothing archived, it returns at once.
    Works for every backend (it calls the optional ``prepare_read``), so callers need not
    know the target's kind.
    """
    prepare_read(storage, pack_names, on_progress)


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


def _print_progress(progress: Any) -> None:
    sys.stderr.write(f"{progress}\n")
    sys.stderr.flush()


__all__ = [
    "S3Location",
    "S3Storage",
    "ThawProgress",
    "ThawTimeout",
    "thaw_packs",
    "thaw_state",
    "wait_for_thaw",
]
