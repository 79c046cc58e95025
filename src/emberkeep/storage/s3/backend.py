"""s3:// targets: one object per name, under a prefix in a bucket (boto3).

``S3Storage`` is the backend (``base.Storage``), put together from one part per concern, each
with its own module and docstring: ``location`` (the URL and its options), ``client`` (the
boto3 client, credentials, HEADs and listings), ``replies`` and ``retry`` (what an error says,
what is tried again), ``upload`` (create-only puts, multipart uploads, storage class),
``lock`` (Object Lock) and ``thaw`` (reading archived objects, what cold storage costs).
This module holds the interface itself: reads, listings, deletes.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterator
from typing import Any

import botocore.exceptions as boto_errors

from ...errors import NotFound, StorageError
from ..base import ObjectInfo, ProgressFn
from .location import S3Location
from .replies import error_code, is_missing
from .thaw import S3Thaws, print_progress
from .upload import MULTIPART, S3Uploads


class S3Storage(S3Uploads, S3Thaws):
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
        self.on_thaw: ProgressFn = print_progress  # for thaws no prepare_read asked for
        self._lock = threading.Lock()
        self._thawing = threading.Lock()  # one thaw at a time; other readers wait for it
        self._batch: tuple[list[str], ProgressFn | None] | None = None  # see prepare_read
        self._client: Any = None
        self._conditional = True  # False once the server said it lacks If-None-Match
        self._bucket_checked = False

    # -- the interface (put and prepare_read: upload and thaw) -------------------------------

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        args: dict[str, Any] = {"Bucket": self.loc.bucket, "Key": self._key(name)}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{last}"

        def fetch() -> bytes:
            reply = self.client.get_object(**args)
            body = reply["Body"]
            try:
                # one byte more than asked: a server that ignored the Range header says so
                data = body.read() if length is None else body.read(length + 1)
            finally:
                body.close()
            whole = reply.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200
            if (length is not None and len(data) > length) or (offset and whole):
                raise StorageError(
                    f"target {self.label}: the server answered a ranged read of {name} with "
                    "other bytes than asked (it ignored the Range header); emberkeep needs "
                    "an S3 server that honours ranged GETs"
                )
            return data

        try:
            try:
                return self._call(f"reading {name}", fetch)
            except boto_errors.ClientError as exc:
                if error_code(exc) != "InvalidObjectState":
                    raise
            self._thaw_on_demand(name)  # archived, and nobody called prepare_read for it
            return self._call(f"reading {name}", fetch)
        except boto_errors.ClientError as exc:
            if error_code(exc) == "InvalidRange":  # the range starts at or past the end
                return b""
            if is_missing(exc):
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
