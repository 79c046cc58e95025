"""One SFTP session: paramiko's client with the server's protocol extensions kept.

The request layer (``protocol``) builds on paramiko's private request methods, as paramiko's
own file class does; ``Session`` states their signatures for the type checker.
"""

from __future__ import annotations

import contextlib
import struct
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import paramiko
from paramiko.message import Message
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_INIT, CMD_VERSION, SFTPError

REQUEST = 32 * 1024  # bytes per SFTP read or write request that every server accepts
MAX_REQUEST = 128 * 1024  # larger where the server allows it: fewer round trips in Python
LIMITS = "limits@openssh.com"
FSYNC = "fsync@openssh.com"
POSIX_RENAME = "posix-rename@openssh.com"
STATVFS = "statvfs@openssh.com"


@runtime_checkable
class Link(Protocol):
    """What a session runs over besides a paramiko channel (``openssh_client``'s pipes):
    paramiko's SFTP client calls ``send``, ``recv`` and ``close``."""

    def send(self, data: bytes) -> int: ...
    def recv(self, size: int) -> bytes: ...
    def close(self) -> None: ...
    def get_name(self) -> str: ...
    def usable(self) -> bool: ...


class Session(paramiko.SFTPClient):
    """An SFTP session that remembers the protocol extensions the server offers.

    paramiko reads the server's version packet, which lists them, and throws it away.
    """

    extensions: dict[str, bytes]
    read_size = REQUEST
    write_size = REQUEST

    if TYPE_CHECKING:
        # paramiko's private request layer this package builds on (see the package
        # docstring); its stubs leave it out, so the signatures used here are stated for the
        # checker. A session runs over a paramiko channel or a ``Link``.
        def __init__(self, sock: paramiko.Channel | Link) -> None: ...
        def _send_packet(self, t: int, packet: Message) -> None: ...
        def _read_packet(self) -> tuple[int, bytes]: ...
        def _request(self, t: int, *args: object) -> tuple[int, Message]: ...
        def _async_request(self, fileobj: object, t: int, *args: object) -> int: ...
        def _read_response(
            self, waitfor: int | None = None
        ) -> tuple[int | None, Message | None]: ...
        def _convert_status(self, msg: Message) -> None: ...

    def _send_version(self) -> int:
        msg = Message()
        msg.add_int(3)
        self._send_packet(CMD_INIT, msg)
        try:
            kind, data = self._read_packet()
            if kind != CMD_VERSION:
                raise SFTPError(f"its first reply is of type {kind}, not SFTP's version")
            self.extensions = _extensions(data)
            return int(struct.unpack(">I", data[:4])[0])
        except (SFTPError, struct.error) as exc:  # the server's bytes: what the clients catch
            raise paramiko.SSHException(f"the server does not speak SFTP ({exc})") from exc

    def learn_limits(self) -> None:
        """Use larger requests where the server states that it accepts them."""
        if LIMITS not in self.extensions:
            return
        kind, msg = self._request(CMD_EXTENDED, LIMITS)
        if kind != CMD_EXTENDED_REPLY:
            return
        _packet, read, write = (msg.get_int64() for _ in range(3))
        self.read_size = max(REQUEST, min(read, MAX_REQUEST))
        self.write_size = max(REQUEST, min(write, MAX_REQUEST))

    def usable(self) -> bool:
        link = self.get_channel()
        if isinstance(link, paramiko.Channel):
            return not link.closed and link.get_transport().is_active()
        return isinstance(link, Link) and link.usable()


def _extensions(data: bytes) -> dict[str, bytes]:
    """The (name, data) string pairs after the version number in SSH_FXP_VERSION."""
    found: dict[str, bytes] = {}
    pos = 4
    while pos < len(data):
        name, pos = _string(data, pos)
        value, pos = _string(data, pos)
        found[name.decode("utf-8", "replace")] = value
    return found


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """The SFTP string at ``pos`` and the position after it; one whose length runs past
    the packet is ``SFTPError`` (the server's lengths are not trusted)."""
    if pos + 4 > len(data):
        raise SFTPError("its version packet ends inside a length")
    (size,) = struct.unpack_from(">I", data, pos)
    if pos + 4 + size > len(data):
        raise SFTPError(f"its version packet names a {size}-byte string past its end")
    return data[pos + 4 : pos + 4 + size], pos + 4 + size


def quietly_close(sftp: Session) -> None:
    with contextlib.suppress(Exception):
        sftp.close()
