"""A MongoDB client with timeouts on every call, and errors that name the server and the fix.

The URI may hold a password: it is shown only through ``redact_url``, and it never
reaches argv (it comes from the config file).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import MongoClient, uri_parser
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    InvalidURI,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from ...errors import EmberkeepError, UsageError
from ...redact import redact_text, redact_url

SELECT_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_MS = 10_000
SOCKET_TIMEOUT_MS = 600_000  # one batch or one insert; generous for a slow disk
AUTH_FAILED = 18
UNAUTHORIZED = 13

Client = MongoClient[Any]


def open_client(uri: str, who: str) -> Client:
    """A client that has answered ``ping``; ``who`` names the source in errors."""
    shown = redact_url(uri)
    try:
        given = {k.lower() for k in uri_parser.parse_uri(uri, validate=False)["options"]}
        defaults = {
            "serverSelectionTimeoutMS": SELECT_TIMEOUT_MS,
            "connectTimeoutMS": CONNECT_TIMEOUT_MS,
            "socketTimeoutMS": SOCKET_TIMEOUT_MS,
            "appname": "emberkeep",
        }  # the URI's own options win: a keyword argument would override them
        options: dict[str, Any] = {k: v for k, v in defaults.items() if k.lower() not in given}
        client: Client = MongoClient(uri, **options)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise UsageError(f"{who}: the MongoDB URI {shown} is not valid: {_plain(exc)}") from exc
    try:
        client.admin.command("ping")
    except BaseException as exc:
        client.close()
        raise server_error(exc, who, uri) from exc
    return client


@contextmanager
def client_for(uri: str, who: str) -> Iterator[Client]:
    client = open_client(uri, who)
    try:
        yield client
    finally:
        client.close()


def server_error(exc: BaseException, who: str, uri: str) -> BaseException:
    """An ``EmberkeepError`` naming the server for a driver error; others pass through."""
    shown = redact_url(uri)
    if isinstance(exc, ServerSelectionTimeoutError):
        return EmberkeepError(
            f"{who}: cannot reach MongoDB at {shown} (server selection timed out); "
            "check that the server runs and the uri in the config points at it"
        )
    if isinstance(exc, OperationFailure) and exc.code == AUTH_FAILED:
        return EmberkeepError(
            f"{who}: MongoDB at {shown} refused the credentials ({_plain(exc)}); "
            "fix the user and password in the uri"
        )
    if isinstance(exc, OperationFailure) and exc.code == UNAUTHORIZED:
        return EmberkeepError(
            f"{who}: the MongoDB user lacks a permission ({_plain(exc)}); "
            "grant it the backup (or restore) role"
        )
    if isinstance(exc, ConnectionFailure):
        return EmberkeepError(f"{who}: lost the connection to MongoDB at {shown}: {_plain(exc)}")
    if isinstance(exc, PyMongoError):
        return EmberkeepError(f"{who}: MongoDB at {shown} failed: {_plain(exc)}")
    return exc


def _plain(exc: BaseException) -> str:
    """The driver's message without its ``full error`` dump (which may echo the command),
    with any URL or key in it redacted (a driver may quote the URI it was given)."""
    text = str(exc).split(", full error:", 1)[0].strip()
    return redact_text(text.splitlines()[0]) if text else type(exc).__name__
