"""What an S3 server's error reply says, and the message a user reads for it.

botocore raises one ``ClientError`` for every refusal; its code, HTTP status and message tell
a missing object from a missing bucket, wrong credentials, a lock or a server without
``If-None-Match``. ``failure`` turns the rest into a StorageError naming the target, the
bucket and the fix.
"""

from __future__ import annotations

import re

import botocore.exceptions as boto_errors

from ...errors import StorageError
from .location import S3Location

CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "XAdminUserNotFound",  # versitygw: an unknown access key
}
BODILESS = {"", "404", "NotFound", "403", "Forbidden"}  # codes botocore makes up for HEAD


def error_code(exc: boto_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: boto_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def mentions_lock(exc: boto_errors.ClientError) -> bool:
    return re.search(r"object\s*lock", error_message(exc), re.IGNORECASE) is not None


def http_status(exc: boto_errors.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_missing(exc: boto_errors.ClientError) -> bool:
    """The object is missing (a missing bucket is another error, see ``_check_bucket``)."""
    return error_code(exc) in ("NoSuchKey", "404", "NotFound") or (
        http_status(exc) == 404 and not error_code(exc)
    )


def refuses_condition(exc: boto_errors.ClientError) -> bool:
    """The server does not implement If-None-Match (rather than: the name is taken)."""
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return (
        http_status(exc) == 501
        or error_code(exc) in ("NotImplemented", "NotImplementedException")
        or (error_code(exc) in ("InvalidArgument", "InvalidRequest") and "match" in message.lower())
    )


def failure(label: str, loc: S3Location, what: str, exc: boto_errors.ClientError) -> StorageError:
    """The StorageError for a request of target ``label`` the server refused."""
    code, status = error_code(exc), http_status(exc)
    if code == "NoSuchBucket":
        return StorageError(
            f"target {label}: {loc.where} does not exist; create it, or fix the "
            "bucket name in the target URL"
        )
    if code in CREDENTIAL_CODES:
        return StorageError(
            f"target {label}: {loc.where} refused the credentials ({code}); check "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the AWS profile) for this target"
        )
    if code == "AccessDenied" or status == 403:
        return StorageError(
            f"target {label}: access denied while {what} in {loc.where}; check that "
            "the credentials are right and allowed to read, write, list and delete there"
        )
    if code == "InvalidRequest" and mentions_lock(exc):
        return StorageError(
            f"target {label}: {loc.where} does not have Object Lock enabled, which "
            "lock_days= in the target URL needs; use a bucket created with Object Lock "
            "enabled, or remove lock_days"
        )
    if code == "InvalidObjectState":
        return StorageError(
            f"target {label}: {what} in {loc.where}: the object is archived (cold "
            "storage) and could not be thawed; check thaw_tier= and the server's support "
            "for RestoreObject"
        )
    message = error_message(exc)[:200]
    return StorageError(
        f"target {label}: {what} in {loc.where} failed: {code or status}"
        + (f" ({message})" if message else "")
    )
