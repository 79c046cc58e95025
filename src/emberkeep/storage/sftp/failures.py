"""The one-line errors of an sftp target, the same whichever SSH client carries it."""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import NotFound, StorageError
from .location import SftpLocation


class Dropped(Exception):
    """The connection went away while it was being opened or a session started on it."""

    def __init__(self, cause: BaseException, refused_session: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.refused_session = refused_session  # the transport lived on: the server refused


def timed_out(label: str, loc: SftpLocation, what: str) -> StorageError:
    return StorageError(
        f"target {label}: {loc.host}:{loc.port} did not answer within "
        f"{loc.timeout:g}s while {what}; check the server and the network, or allow "
        "more time with ?timeout=SECONDS in the target URL"
    )


def failed(label: str, loc: SftpLocation, what: str, exc: Exception) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"target {label}: {what}: no such file on {loc.host}")
    if isinstance(exc, PermissionError):
        return StorageError(
            f"target {label}: permission denied {what}; check that {loc.user} "
            f"may read and write {loc.root} on {loc.host}"
        )
    return StorageError(f"target {label}: {what} failed on {loc.host}: {exc}")


def gave_up(
    label: str, loc: SftpLocation, what: str, drops: Sequence[BaseException]
) -> StorageError:
    """The error after the last try: the connection dropped every time."""
    last = drops[-1]
    if isinstance(last, Dropped) and last.refused_session:
        return StorageError(
            f"target {label}: {loc.host}:{loc.port} refused an SFTP session "
            f"({last}); check that its SSH server offers the sftp subsystem to "
            f"{loc.user}"
        )
    reason = drop_reason(last.cause if isinstance(last, Dropped) else last)
    return StorageError(
        f"target {label}: the connection to {loc.host}:{loc.port} dropped "
        f"while {what} ({reason}), {len(drops)} times in a row; check the server and the "
        "network, then run the command again"
    )


def drop_reason(exc: BaseException) -> str:
    """A drop in a few words: the error's own text, or what its type means."""
    if isinstance(exc, EOFError):
        return "the server closed it"
    text = getattr(exc, "strerror", None) or str(exc)
    return text or type(exc).__name__


def unknown_host(label: str, loc: SftpLocation, offered: str) -> StorageError:
    return StorageError(
        f"target {label}: the host key of {loc.host_entry} is not in "
        f"{loc.known_hosts} (the server offers {offered}). Check that "
        f"fingerprint with the server's admin, then add the key: {loc.keyscan}"
    )


def changed_host(label: str, loc: SftpLocation, offered: str) -> StorageError:
    return StorageError(
        f"target {label}: the host key of {loc.host_entry} does not match the one "
        f"in {loc.known_hosts} (the server offers {offered}): someone may "
        "be intercepting the connection, or the server was reinstalled. Only if its "
        "admin confirms that fingerprint, replace the entry: ssh-keygen -R "
        f"'{loc.host_entry}' -f {loc.known_hosts} && {loc.keyscan}"
    )


def keys_named(loc: SftpLocation) -> str:
    if loc.key_file:
        return f"key file {loc.key_file}"
    if loc.client == "openssh":
        return "the keys your ssh config and agent offer"
    return "the SSH agent's and ~/.ssh keys"


def passphrase(label: str, loc: SftpLocation) -> StorageError:
    return StorageError(
        f"target {label}: {keys_named(loc)} is protected by a passphrase; load it into "
        "ssh-agent (ssh-add) and drop key= from the URL, or use a key without one"
    )


def refused_user(
    label: str, loc: SftpLocation, *, user: str | None = None, host: str | None = None
) -> StorageError:
    """Authentication failed (as ``user`` at ``host`` where ssh named another, a jump host)."""
    user = user or loc.user
    where = host or f"{loc.host}:{loc.port}"
    return StorageError(
        f"target {label}: {where} refused user {user} with "
        f"{keys_named(loc)}; add the public key to ~{user}/.ssh/authorized_keys on "
        f"{host or loc.host}, or name the right private key with ?key=FILE in the target URL"
    )


def cannot_connect(label: str, loc: SftpLocation, reason: str) -> StorageError:
    return StorageError(
        f"target {label}: cannot connect to {loc.host}:{loc.port} ({reason}); check the host "
        "name and port in the target URL, and that the SSH server is running"
    )


def missing_key(label: str, loc: SftpLocation) -> StorageError:
    return StorageError(
        f"target {label}: key file {loc.key_file} does not exist; fix key= in the target URL"
    )
