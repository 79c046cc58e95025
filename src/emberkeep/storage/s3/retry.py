"""Retries of S3 requests: transient failures again, with backoff, within the timeout.

Transient failures (dropped connections, 5xx, throttling) are retried with exponential
backoff, ``ATTEMPTS`` tries in all. This is our loop rather than botocore's ``standard`` mode
so that an endpoint that refuses connections or stays silent fails once ``timeout`` has
passed, instead of after every attempt's timeout and backoff.

A write retried after a dropped connection or a silent server may have been stored by the
attempt whose reply was lost (``Tries`` tells); ``upload`` decides whether the write then
succeeded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import botocore.exceptions as boto_errors

from ...errors import StorageError
from .location import S3Location
from .replies import error_code, http_status, refuses_condition

T = TypeVar("T")

ATTEMPTS = 5
TRANSIENT_CODES = {
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
UNREACHABLE = (
    boto_errors.EndpointConnectionError,
    boto_errors.ConnectTimeoutError,
    boto_errors.ProxyConnectionError,
    boto_errors.ReadTimeoutError,
)
# Failures mid-request (a dropped connection): retried ATTEMPTS times.
DROPPED = (
    boto_errors.ConnectionClosedError,
    boto_errors.ResponseStreamingError,
    boto_errors.IncompleteReadError,
    boto_errors.HTTPClientError,
)


class Tries:
    """One request for ``call`` that counts its attempts: after the first, an earlier
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


def call(label: str, loc: S3Location, what: str, fn: Callable[[], T]) -> T:
    """Run one request, retrying transient failures; ClientErrors of other kinds pass."""
    start = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn()
        except UNREACHABLE as exc:
            delay = backoff(attempt)
            if attempt == ATTEMPTS or time.monotonic() - start + delay >= loc.timeout:
                raise unreachable(label, loc, what, exc) from exc
        except boto_errors.ClientError as exc:
            if not (
                error_code(exc) in TRANSIENT_CODES or http_status(exc) >= 500
            ) or refuses_condition(exc):
                raise
            if attempt == ATTEMPTS:
                raise
            delay = backoff(attempt)
        except DROPPED as exc:
            if attempt == ATTEMPTS:
                raise StorageError(
                    f"target {label}: the connection to {loc.where} dropped "
                    f"{ATTEMPTS} times while {what} ({type(exc).__name__}); check the "
                    "server and the network, then run the command again"
                ) from exc
            delay = backoff(attempt)
        except (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError) as exc:
            raise StorageError(
                f"target {label}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"
            ) from exc
        except boto_errors.BotoCoreError as exc:
            raise StorageError(f"target {label}: {what} failed: {exc}") from exc
        time.sleep(delay)
    raise AssertionError("not reached")


def unreachable(label: str, loc: S3Location, what: str, exc: Exception) -> StorageError:
    silent = isinstance(exc, boto_errors.ReadTimeoutError)
    why = "did not answer" if silent else "could not be reached"
    return StorageError(
        f"target {label}: {loc.where} {why} within {loc.timeout:g}s while "
        f"{what}; check endpoint= in the target URL and the network, or allow more time "
        "with ?timeout=SECONDS"
    )


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.2 s, 0.4 s, 0.8 s … at most 5 s."""
    ceiling = min(5.0, 0.2 * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
