"""The pipelined SFTP request layer: open, read, write, close and statvfs on one session.

Reads and writes keep ``IN_FLIGHT`` bytes of requests in flight, each request 32 KiB (the
size every server accepts) or up to ``session.MAX_REQUEST`` where the server states its limits
(``limits@openssh.com``). This uses paramiko's request layer (``_async_request`` /
``_read_response``, as its own file class does) rather than ``SFTPFile``: its pipelined writes
do not check the status of the last writes before close, and its close swallows errors, so a
full disk could pass unnoticed.
"""

from __future__ import annotations

import contextlib
from collections import deque

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_WRITE,
    SFTPError,
    int64,
)

from .session import STATVFS, Session

IN_FLIGHT = 4 * 1024 * 1024  # bytes of requests in flight per transfer


class _Replies:
    """Collects the replies to pipelined requests by request number (paramiko calls in).

    The data of a read is taken out as it arrives, and refused if it is more than the read
    asked for (``asked``): ``IN_FLIGHT`` bounds what a transfer holds only if every reply
    is bounded, also the replies still in flight when a transfer is abandoned."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, Message]] = {}
        self.asked: dict[int, int] = {}  # read request number -> bytes it asked for
        self.data: dict[int, bytes] = {}
        self.refused: dict[int, SFTPError] = {}

    def _async_response(self, kind: int, msg: Message, num: int) -> None:
        asked = self.asked.pop(num, None)
        if asked is None or kind != CMD_DATA:
            self.got[num] = (kind, msg)
            return
        data = msg.get_string()
        if len(data) > asked:
            self.refused[num] = SFTPError(
                f"the server sent {len(data)} bytes for a read of {asked}"
            )
        else:
            self.data[num] = data

    def wait(self, sftp: Session, num: int) -> tuple[int, Message]:
        while num not in self.got:
            sftp._read_response()
        return self.got.pop(num)

    def read(self, sftp: Session, handle: bytes, offset: int, size: int) -> int:
        """Send a read request; its reply is ``data_of`` its number."""
        num = sftp._async_request(self, CMD_READ, handle, int64(offset), size)
        self.asked[num] = size
        return num

    def data_of(self, sftp: Session, num: int) -> bytes:
        """The bytes a read got; empty at the end of the file."""
        while num not in self.got and num not in self.data and num not in self.refused:
            sftp._read_response()
        if num in self.refused:
            raise self.refused.pop(num)
        if num in self.data:
            return self.data.pop(num)
        kind, msg = self.got.pop(num)
        return _data(sftp, kind, msg)


def check_status(sftp: Session, kind: int, msg: Message) -> None:
    """Raise the error a status reply carries (paramiko raises IOError with an errno)."""
    if kind != CMD_STATUS:
        raise SFTPError(f"expected a status reply, got packet type {kind}")
    sftp._convert_status(msg)


def open_file(sftp: Session, path: str, flags: int, mode: int | None = None) -> bytes:
    attrs = paramiko.SFTPAttributes()
    if mode is not None:
        attrs.st_mode = mode
    kind, msg = sftp._request(CMD_OPEN, path, flags, attrs)
    if kind != CMD_HANDLE:
        raise SFTPError("expected a file handle")
    return msg.get_binary()


def size(sftp: Session, handle: bytes) -> int:
    kind, msg = sftp._request(CMD_FSTAT, handle)
    if kind != CMD_ATTRS:
        raise SFTPError("expected file attributes")
    # A private constructor too (the stubs leave it out): it parses the ATTRS reply.
    attrs = paramiko.SFTPAttributes._from_msg(msg)  # type: ignore[attr-defined]
    return attrs.st_size or 0


def close_file(sftp: Session, handle: bytes) -> None:
    sftp._request(CMD_CLOSE, handle)


def close_after(sftp: Session, handle: bytes, exc: BaseException) -> None:
    """Close a file after a failure, unless the server is hung or gone."""
    if not isinstance(exc, TimeoutError) and sftp.usable():
        with contextlib.suppress(Exception):
            close_file(sftp, handle)


def write_all(sftp: Session, handle: bytes, parts: list[memoryview]) -> None:
    """Write the parts one after another, IN_FLIGHT bytes in flight, every status checked."""
    replies = _Replies()
    pending: deque[int] = deque()
    offset = 0
    step = sftp.write_size
    for part in parts:
        for start in range(0, len(part), step):
            chunk = bytes(part[start : start + step])
            pending.append(sftp._async_request(replies, CMD_WRITE, handle, int64(offset), chunk))
            offset += len(chunk)
            if len(pending) * step >= IN_FLIGHT:
                check_status(sftp, *replies.wait(sftp, pending.popleft()))
    while pending:
        check_status(sftp, *replies.wait(sftp, pending.popleft()))


def read_range(sftp: Session, handle: bytes, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of a file, fewer at its end; IN_FLIGHT bytes in flight."""
    replies = _Replies()
    pending: deque[tuple[int, int]] = deque()  # request number, bytes asked for
    out = bytearray()
    position, end = offset, offset + length
    while True:
        while position < end and len(pending) * sftp.read_size < IN_FLIGHT:
            size = min(sftp.read_size, end - position)
            pending.append((replies.read(sftp, handle, position, size), size))
            position += size
        if not pending:
            return bytes(out)
        num, size = pending.popleft()
        data = replies.data_of(sftp, num)
        # A short read (a server with a smaller request limit) is finished before going on.
        while data and len(data) < size:
            out += data
            size -= len(data)
            data = replies.data_of(sftp, replies.read(sftp, handle, offset + len(out), size))
        if not data:  # end of file: the replies still in flight are all ends of file too
            for num, _size in pending:
                replies.data_of(sftp, num)
            return bytes(out)
        out += data


def _data(sftp: Session, kind: int, msg: Message) -> bytes:
    """The bytes of a read reply; empty at the end of the file."""
    if kind == CMD_DATA:
        return msg.get_string()
    try:
        check_status(sftp, kind, msg)
    except EOFError:
        return b""
    raise SFTPError("expected data or a status reply")


def statvfs(sftp: Session, path: str) -> int | None:
    """Bytes free to the user where ``path`` lies, when the server offers statvfs."""
    if STATVFS not in sftp.extensions:
        return None
    try:
        kind, msg = sftp._request(CMD_EXTENDED, STATVFS, path)
    except OSError:  # the folder does not exist yet, or may not be examined
        return None
    if kind != CMD_EXTENDED_REPLY:
        return None
    _bsize, frsize, _blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
    return bavail * frsize
