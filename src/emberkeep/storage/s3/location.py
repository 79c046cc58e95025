"""Where an s3:// target lies: its URL parsed, every option checked and bounded.

URL: ``s3://bucket[/prefix][?endpoint=URL&region=R&storage_class=C&timeout=SECONDS]``, and
for cold storage ``thaw_days``, ``thaw_tier``, ``thaw_poll``, ``thaw_timeout`` (``thaw``), for
immutability ``lock_days`` and ``lock_mode`` (``lock``). Every number is bounded
(``urlquery``): ``timeout`` from 1 to 3600 seconds, ``thaw_days`` up to 3650, ``thaw_poll``
up to a day, ``thaw_timeout`` up to 30 days, ``lock_days`` up to 36500. Credentials never go
in the URL (``client``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from ...errors import UsageError
from .. import urlquery

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
THAW_TIERS = ("Standard", "Bulk", "Expedited")
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
MAX_LOCK_DAYS = 36500  # AWS's limit (100 years)
DEFAULT_THAW_POLL = 60.0
DEFAULT_THAW_TIMEOUT = 48 * 3600.0
# Upper bounds, so no option can make a wait endless: a thawed copy kept 10 years, a poll
# a day apart, and a month for a thaw (Deep Archive's slowest, Bulk, takes up to 48 hours).
MAX_THAW_DAYS = 3650
MAX_THAW_POLL = 86400.0
MAX_THAW_TIMEOUT = 30 * 86400.0


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
