"""Writes to an s3:// target: create-only puts, multipart uploads, and retried writes judged.

- **Create-only** puts send ``If-None-Match: *`` (on PutObject, or on CompleteMultipartUpload),
  which AWS and current S3-compatible servers apply atomically. A server that answers that it
  does not implement it is remembered, and create-only falls back to HEAD-then-PUT, which is
  not atomic: two writers racing for one name may both succeed. (A server that silently
  ignores the header cannot be told apart; it behaves like the fallback.)
- **Large objects** (over ``MULTIPART_THRESHOLD``) go up as multipart uploads of ``PART_SIZE``
  parts, ``PART_WORKERS`` at a time; a failed upload is aborted. Uploads a crash left behind
  show in ``incomplete()`` as ``multipart:<name>:<upload id>``; ``delete`` of such a name
  aborts the upload.
- **Retried writes**: a write retried (``retry``) after a dropped connection or a silent
  server may have been stored by the attempt whose reply was lost; when the retry then finds
  the name taken (If-None-Match, or Object Lock's refusal) or a completion finds its upload
  gone (``NoSuchUpload``), and the stored object is the one being written
  (``base.holds_written``: same size, and the name is the SHA-256 of the bytes or the bytes
  are equal), the write succeeded. Another object there stays ``AlreadyExists``.
- **Storage class**: ``storage_class`` applies only to names under ``cold_prefixes`` (data packs
  by default), so the index, snapshots, keys and locks stay readable without a thaw.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import botocore.exceptions as boto_errors

from ...errors import AlreadyExists, EmberkeepError, StorageError
from ..base import Payload, holds_written
from .lock import S3Locks
from .replies import error_code, http_status, refuses_condition
from .retry import Tries

MULTIPART_THRESHOLD = 8 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
PART_WORKERS = 4
MULTIPART = "multipart:"


class S3Uploads(S3Locks):
    """The writing part of ``S3Storage``."""

    cold_prefixes: tuple[str, ...]
    _conditional: bool  # False once the server said it lacks If-None-Match

    if TYPE_CHECKING:  # S3Storage's; a retried write reads back what it finds

        def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

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

    def storage_class_for(self, name: str) -> str | None:
        """The storage class a new object gets: the target's own for cold names only.

        Data packs may go to a cold class (Glacier, Deep Archive) while everything a listing,
        status or prune reads stays in the standard class and never needs a thaw.
        """
        if self.loc.storage_class and name.startswith(self.cold_prefixes):
            return self.loc.storage_class
        return None

    def _extra(self, name: str) -> dict[str, Any]:
        storage_class = self.storage_class_for(name)
        extra: dict[str, Any] = {"StorageClass": storage_class} if storage_class else {}
        return extra | self.lock_for(name)

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
        self._write_once(
            f"writing {name}",
            name,
            key,
            parts,
            lambda **cond: self.client.put_object(**args, **cond),
            create_only=create_only,
            recheck=False,  # put() sent its HEAD already when the server lacks If-None-Match
        )

    def _write_once(
        self,
        what: str,
        name: str,
        key: str,
        parts: builtins.list[memoryview],
        call: Callable[..., Any],
        *,
        create_only: bool,
        recheck: bool,
    ) -> None:
        """Send ``call`` (a PutObject or a CompleteMultipartUpload) and judge a refusal.

        A create-only write sends If-None-Match while the server takes it. Once the server
        says it does not, the name is checked with a HEAD before the plain write; with
        ``recheck`` also when that was learned before this write (a completion: its upload
        took long enough for another writer to come first).
        """
        if create_only and self._conditional:
            conditional = Tries(lambda: call(IfNoneMatch="*"))
            try:
                self._call(what, conditional)
                return
            except boto_errors.ClientError as exc:
                if not refuses_condition(exc):
                    self._refused(conditional, exc, name, key, parts, create_only=True)
                    return  # a lost reply: the first attempt stored it
                self._conditional = False
            recheck = True
        if create_only and recheck and self._head(name, key) is not None:
            raise self._exists(name)
        plain = Tries(call)
        try:
            self._call(what, plain)
        except boto_errors.ClientError as exc:
            self._refused(plain, exc, name, key, parts, create_only=create_only)

    def _refused(
        self,
        tries: Tries,
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
        if create_only and (error_code(exc) == "PreconditionFailed" or http_status(exc) == 412):
            error: StorageError = self._exists(name)
        else:
            error = self._write_failed(name, key, exc, create_only=create_only)
        met = isinstance(error, AlreadyExists) or error_code(exc) == "NoSuchUpload"
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
        self._write_once(
            f"writing {name}",
            name,
            base["Key"],
            parts,
            lambda **cond: self.client.complete_multipart_upload(**args, **cond),
            create_only=create_only,
            recheck=True,
        )

    def _abort(self, name: str, key: str, upload_id: str, *, quiet: bool = False) -> None:
        args = {"Bucket": self.loc.bucket, "Key": key, "UploadId": upload_id}
        try:
            self._call(
                f"abandoning the upload of {name}",
                lambda: self.client.abort_multipart_upload(**args),
            )
        except boto_errors.ClientError as exc:
            if quiet or error_code(exc) == "NoSuchUpload" or http_status(exc) == 404:
                return
            raise self._failed(f"abandoning the upload of {name}", exc) from exc
        except EmberkeepError:
            if not quiet:
                raise


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
