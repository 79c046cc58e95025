"""s3:// targets: one object per name, under a prefix in a bucket (boto3).

URL: ``s3://bucket[/prefix][?endpoint=URL&region=R&storage_class=C&timeout=SECONDS]``.
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
- **Storage class**: ``storage_class`` applies only to names under ``cold_prefixes`` (data packs
  by default), so the index, snapshots, keys and locks stay readable without a thaw.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config

from ..errors import AlreadyExists, EmberkeepError, NotFound, StorageError, UsageError
from . import urlquery
from .base import ObjectInfo, Payload

T = TypeVar("T")

ATTEMPTS = 5
MULTIPART_THRESHOLD = 8 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
PART_WORKERS = 4
MULTIPART = "multipart:"
_OPTIONS = ("endpoint", "region", "storage_class", "timeout")
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
        return cls(
            bucket=parsed.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint=endpoint,
            region=urlquery.last(query, "region"),
            storage_class=urlquery.last(query, "storage_class"),
            timeout=urlquery.timeout(urlquery.last(query, "timeout"), label),
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


class S3Storage:
    """A target in an S3 bucket. Thread-safe: botocore clients are."""

    def __init__(
        self, url: str, *, label: str = "", cold_prefixes: tuple[str, ...] = ("data/",)
    ) -> None:
        self.label = label or "s3 target"
        self.loc = S3Location.parse(url, self.label)
        self.cold_prefixes = cold_prefixes
        self._lock = threading.Lock()
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
            self._put_single(name, key, body, create_only=not overwrite)

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
        args = {"Bucket": self.loc.bucket, "Key": self._key(name)}
        self._checked(f"deleting {name}", lambda: self.client.delete_object(**args))

    def free_bytes(self) -> int | None:
        return None  # a bucket has no size limit we could ask about

    def incomplete(self) -> list[str]:
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

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- writes ------------------------------------------------------------------------------

    def _put_single(self, name: str, key: str, body: bytes, *, create_only: bool) -> None:
        args = {"Bucket": self.loc.bucket, "Key": key, "Body": body, **self._extra(name)}
        if create_only and self._conditional:
            try:
                self._call(
                    f"writing {name}", lambda: self.client.put_object(**args, IfNoneMatch="*")
                )
                return
            except boto_errors.ClientError as exc:
                if _code(exc) == "PreconditionFailed" or _status(exc) == 412:
                    raise self._exists(name) from exc
                if not _refuses_condition(exc):
                    raise self._failed(f"writing {name}", exc) from exc
                self._conditional = False
            if self._head(name, key) is not None:
                raise self._exists(name)
        self._checked(f"writing {name}", lambda: self.client.put_object(**args))

    def _put_multipart(
        self, name: str, key: str, parts: list[memoryview], size: int, *, create_only: bool
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
            self._complete(name, base, done, create_only=create_only)
        except BaseException:
            self._abort(name, key, base["UploadId"], quiet=True)
            raise

    def _complete(
        self, name: str, base: dict[str, str], done: list[dict[str, Any]], *, create_only: bool
    ) -> None:
        args = {**base, "MultipartUpload": {"Parts": done}}
        what = f"writing {name}"
        if create_only and self._conditional:
            try:
                complete = self.client.complete_multipart_upload
                self._call(what, lambda: complete(**args, IfNoneMatch="*"))
                return
            except boto_errors.ClientError as exc:
                if _code(exc) == "PreconditionFailed" or _status(exc) == 412:
                    raise self._exists(name) from exc
                if not _refuses_condition(exc):
                    raise self._failed(what, exc) from exc
                self._conditional = False
        if create_only and self._head(name, base["Key"]) is not None:
            raise self._exists(name)
        self._checked(what, lambda: self.client.complete_multipart_upload(**args))

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

    def _extra(self, name: str) -> dict[str, str]:
        storage_class = self.storage_class_for(name)
        return {"StorageClass": storage_class} if storage_class else {}

    # -- reads -------------------------------------------------------------------------------

    def _head(self, name: str, key: str) -> int | None:
        args = {"Bucket": self.loc.bucket, "Key": key}
        try:
            reply = self._call(f"looking up {name}", lambda: self.client.head_object(**args))
        except boto_errors.ClientError as exc:
            if _code(exc) in _BODILESS:
                # A HEAD reply has no body to say why: a missing bucket, unknown credentials
                # and a missing object can all look alike. A listing names the cause.
                self._check_bucket(force=_status(exc) != 404)
            if _is_missing(exc):
                return None
            raise self._failed(f"looking up {name}", exc) from exc
        return int(reply["ContentLength"])

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
        }
        extra: dict[str, Any] = {}
        while True:
            page = self._checked(what, lambda extra=extra: call(**args, **extra))
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
                        f"target {self.label}: the connection to {self.loc.where} failed "
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
        message = str(exc.response.get("Error", {}).get("Message", ""))[:200]
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


__all__ = ["S3Location", "S3Storage"]
