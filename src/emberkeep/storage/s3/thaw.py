"""Reading archived objects of an s3:// target: thaw them, wait once for the lot.

``prepare_read(names)`` (or ``thaw_packs``) HEADs the names, asks the server to restore every
archived one (RestoreObject, ``thaw_days`` days, default 1, tier ``thaw_tier``: Standard
(default), Bulk or Expedited), then waits once for the lot, HEADing what is still thawing every
``thaw_poll`` (default 60 s) until its ``Restore`` header says ``ongoing-request="false"``, for
at most ``thaw_timeout`` (default 48 h), reporting how many objects are still thawing. A GET
that the server refuses with ``InvalidObjectState`` (nobody called ``prepare_read``) thaws that
object, or the batch given to an earlier ``prepare_read``, the same way and reads it then.
Instantly readable classes (GLACIER_IR, STANDARD_IA, ONEZONE_IA, ...) are never thawed.

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
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import botocore.exceptions as boto_errors

from ...durations import format_duration
from ...errors import StorageError
from ..base import ProgressFn, prepare_read
from .client import S3Client
from .replies import error_code
from .upload import PART_WORKERS

# Classes whose objects need a restore before a GET. GLACIER_IR, STANDARD_IA, ONEZONE_IA and
# the rest are read at once and never thawed.
ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# Intelligent-Tiering's opt-in archive tiers (head_object's ArchiveStatus) need one too.
ARCHIVED_TIERS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})
# How long a thaw takes at most, by class and tier (hours; the docstring's AWS figures), for
# the runbook and `recover --dry-run` to set against the RTO.
THAW_HOURS = {
    ("GLACIER", "Expedited"): 5 / 60,
    ("GLACIER", "Standard"): 5.0,
    ("GLACIER", "Bulk"): 12.0,
    ("DEEP_ARCHIVE", "Standard"): 12.0,
    ("DEEP_ARCHIVE", "Bulk"): 48.0,
}


class S3Thaws(S3Client):
    """The thawing part of ``S3Storage``."""

    on_thaw: ProgressFn  # for thaws no prepare_read asked for
    _thawing: threading.Lock  # one thaw at a time; other readers wait for it
    _batch: tuple[builtins.list[str], ProgressFn | None] | None  # see prepare_read

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
            if error_code(exc) in ("RestoreAlreadyInProgress", "ObjectAlreadyInActiveTierError"):
                return
            raise self._failed(what, exc) from exc


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


def print_progress(progress: Any) -> None:
    sys.stderr.write(f"{progress}\n")
    sys.stderr.flush()
