"""sftp:// targets: one file per object on an SSH server, written temp -> fsync -> rename.

URL: ``sftp://[user@]host[:port]/path[?key=FILE&known_hosts=FILE&timeout=SECONDS]``. The path
is absolute on the server; ``/~/path`` is relative to the user's home folder. ``timeout`` is
from 1 to 3600 seconds (default 30).

- **Authentication** is by key only: the SSH agent and the keys in ``~/.ssh``, or only the key
  file given with ``key``. The server's host key must already be in known_hosts
  (``~/.ssh/known_hosts``, or the file given with ``known_hosts``): an unknown or changed key is
  refused, never learnt.
- **Create-only writes** rename the fsynced temp file with the plain SFTP rename, which OpenSSH's
  server makes atomic and refusing to replace an existing name (it hard-links the new name, then
  unlinks the temp one). Overwrites use ``posix-rename@openssh.com`` where the server offers it;
  elsewhere they remove, then rename (not atomic). Files are fsynced with ``fsync@openssh.com``
  where offered; SFTP has no way to fsync a directory, so a rename is as durable as the server's
  file system makes it.
- **Concurrency**: one SSH connection carries up to ``CHANNELS`` SFTP sessions, one per caller
  at a time, because a paramiko SFTP session serves one waiting caller at a time.
- **Pipelining**: reads and writes keep ``IN_FLIGHT`` bytes of requests in flight, each request
  32 KiB (the size every server accepts) or up to ``MAX_REQUEST`` where the server states its
  limits (``limits@openssh.com``). This uses paramiko's request layer (``_async_request`` /
  ``_read_response``, as its own file class does) rather than ``SFTPFile``: its pipelined
  writes do not check the status of the last writes before close, and its close swallows
  errors, so a full disk could pass unnoticed.
- **Failures**: every call has ``timeout``; a server that stays silent for ``timeout`` fails
  the call at once. A dropped or reset connection (end of file, ECONNRESET, a transport that
  died under the call, a session that could not be opened on it) is reopened and the call
  tried again, up to ``ATTEMPTS`` times in all with a growing pause (``BACKOFF``); the error
  after the last try names the drop, the host and what was being done. A create-only
  write tried again may find the name taken by its own first try (the rename was done, its
  reply lost): when the file there is the one being written (``base.holds_written``: same
  size, and the name is the SHA-256 of the bytes or the bytes are equal) the write succeeded;
  another file there stays ``AlreadyExists``. Every other call is idempotent as it is
  (reads, listings, deletes of a missing name, overwrites).
- paramiko's transport thread logs its own failures (with a traceback when a server never
  sends its banner); the error raised here says the same in one line, so its logger is
  given a handler that drops them rather than Python's fallback that prints to stderr.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import getpass
import logging
import posixpath
import secrets
import stat as stat_mode
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote

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
    CMD_INIT,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_WRITE,
    SFTPError,
    int64,
)

from ..errors import AlreadyExists, EmberkeepError, NotFound, StorageError, StorageFull, UsageError
from . import urlquery
from .base import ObjectInfo, Payload, holds_written

T = TypeVar("T")

REQUEST = 32 * 1024  # bytes per SFTP read or write request that every server accepts
MAX_REQUEST = 128 * 1024  # larger where the server allows it: fewer round trips in Python
IN_FLIGHT = 4 * 1024 * 1024  # bytes of requests in flight per transfer
CHANNEL_WINDOW = 8 * 1024 * 1024  # SSH flow-control window: more than IN_FLIGHT
CHANNEL_PACKET = 256 * 1024  # largest SSH packet we accept (the server sends fewer, larger)
LIMITS = "limits@openssh.com"
CHANNELS = 8  # SFTP sessions per connection; OpenSSH allows 10 (MaxSessions) by default
FSYNC = "fsync@openssh.com"
POSIX_RENAME = "posix-rename@openssh.com"
STATVFS = "statvfs@openssh.com"
_OPTIONS = ("key", "known_hosts", "timeout")
ATTEMPTS = 4  # tries of a call whose connection dropped, the first included
BACKOFF = 0.5  # seconds before the first retry; doubled before each next one
# Exceptions that say the connection went away under a call, whatever the session looks like.
_DROPS = (EOFError, ConnectionError, paramiko.SSHException)

logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class SftpLocation:
    """Where an sftp:// target lies and how to reach it, parsed from its URL."""

    user: str
    host: str
    port: int
    root: str  # folder on the server; relative names are relative to the user's home
    key_file: Path | None
    known_hosts: Path
    timeout: float

    @classmethod
    def parse(cls, url: str, label: str) -> SftpLocation:
        parsed, query = urlquery.parse(url, label, _OPTIONS)
        if parsed.password is not None:
            raise UsageError(
                f"target {label}: sftp URLs take no password (only keys); remove it from the "
                "URL, and use ?key=FILE or the SSH agent"
            )
        if not parsed.hostname:
            raise UsageError(f"target {label}: give a host: sftp://user@host[:port]/path")
        try:
            port = parsed.port or 22
        except ValueError:
            raise UsageError(f"target {label}: the port in the sftp URL is not a number") from None
        path = unquote(parsed.path)
        if path in ("/~", "/~/"):
            root = "."
        elif path.startswith("/~/"):
            root = path[3:].rstrip("/")
        else:
            root = path.rstrip("/")
        if not root:
            raise UsageError(
                f"target {label}: give a folder: sftp://user@host/srv/backups (absolute) or "
                "sftp://user@host/~/backups (in the user's home)"
            )
        key = urlquery.last(query, "key")
        known_hosts = urlquery.last(query, "known_hosts")
        return cls(
            user=unquote(parsed.username) if parsed.username else getpass.getuser(),
            host=parsed.hostname,
            port=port,
            root=root,
            key_file=Path(key).expanduser() if key else None,
            known_hosts=Path(known_hosts or "~/.ssh/known_hosts").expanduser(),
            timeout=urlquery.timeout(urlquery.last(query, "timeout"), label),
        )

    @property
    def host_entry(self) -> str:
        """The host's name as known_hosts spells it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def keyscan(self) -> str:
        """The command that adds the host's keys to our known_hosts file."""
        port = "" if self.port == 22 else f"-p {self.port} "
        return f"ssh-keyscan {port}{self.host} >> {self.known_hosts}"


class _Dropped(Exception):
    """The connection went away while it was being opened or a session started on it."""

    def __init__(self, cause: BaseException, refused_session: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.refused_session = refused_session  # the transport lived on: the server refused


class _UnknownHost(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse a host whose key is not in known_hosts, keeping the key for the message."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHost(key)


class _Session(paramiko.SFTPClient):
    """An SFTP session that remembers the protocol extensions the server offers.

    paramiko reads the server's version packet, which lists them, and throws it away.
    """

    extensions: dict[str, bytes]
    read_size = REQUEST
    write_size = REQUEST

    if TYPE_CHECKING:
        # paramiko's private request layer this module builds on (see the module docstring);
        # its stubs leave it out, so the signatures used here are stated for the checker.
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
        kind, data = self._read_packet()
        if kind != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        self.extensions = _extensions(data)
        return struct.unpack(">I", data[:4])[0]

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
        channel = self.get_channel()
        return channel is not None and not channel.closed and channel.get_transport().is_active()


def _extensions(data: bytes) -> dict[str, bytes]:
    """The (name, data) string pairs after the version number in SSH_FXP_VERSION."""
    found: dict[str, bytes] = {}
    pos = 4
    while pos + 8 <= len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        name = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
        (size,) = struct.unpack_from(">I", data, pos)
        found[name.decode("utf-8", "replace")] = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return found


class _Replies:
    """Collects the replies to pipelined requests by request number (paramiko calls in)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, Message]] = {}

    def _async_response(self, kind: int, msg: Message, num: int) -> None:
        self.got[num] = (kind, msg)

    def wait(self, sftp: _Session, num: int) -> tuple[int, Message]:
        while num not in self.got:
            sftp._read_response()
        return self.got.pop(num)


def _check_status(sftp: _Session, kind: int, msg: Message) -> None:
    """Raise the error a status reply carries (paramiko raises IOError with an errno)."""
    if kind != CMD_STATUS:
        raise SFTPError(f"expected a status reply, got packet type {kind}")
    sftp._convert_status(msg)


def _open(sftp: _Session, path: str, flags: int, mode: int | None = None) -> bytes:
    attrs = paramiko.SFTPAttributes()
    if mode is not None:
        attrs.st_mode = mode
    kind, msg = sftp._request(CMD_OPEN, path, flags, attrs)
    if kind != CMD_HANDLE:
        raise SFTPError("expected a file handle")
    return msg.get_binary()


def _size(sftp: _Session, handle: bytes) -> int:
    kind, msg = sftp._request(CMD_FSTAT, handle)
    if kind != CMD_ATTRS:
        raise SFTPError("expected file attributes")
    # A private constructor too (the stubs leave it out): it parses the ATTRS reply.
    attrs = paramiko.SFTPAttributes._from_msg(msg)  # type: ignore[attr-defined]
    return attrs.st_size or 0


def _close(sftp: _Session, handle: bytes) -> None:
    sftp._request(CMD_CLOSE, handle)


def _write_all(sftp: _Session, handle: bytes, parts: list[memoryview]) -> None:
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
                _check_status(sftp, *replies.wait(sftp, pending.popleft()))
    while pending:
        _check_status(sftp, *replies.wait(sftp, pending.popleft()))


def _read_range(sftp: _Session, handle: bytes, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of a file, fewer at its end; IN_FLIGHT bytes in flight."""
    replies = _Replies()
    pending: deque[tuple[int, int]] = deque()  # request number, bytes asked for
    out = bytearray()
    position, end = offset, offset + length
    while True:
        while position < end and len(pending) * sftp.read_size < IN_FLIGHT:
            size = min(sftp.read_size, end - position)
            num = sftp._async_request(replies, CMD_READ, handle, int64(position), size)
            pending.append((num, size))
            position += size
        if not pending:
            return bytes(out)
        num, size = pending.popleft()
        data = _data(sftp, *replies.wait(sftp, num))
        # A short read (a server with a smaller request limit) is finished before going on.
        while data and len(data) < size:
            out += data
            size -= len(data)
            num = sftp._async_request(replies, CMD_READ, handle, int64(offset + len(out)), size)
            data = _data(sftp, *replies.wait(sftp, num))
        if not data:  # end of file: the replies still in flight are all ends of file too
            for num, _size in pending:
                replies.wait(sftp, num)
            return bytes(out)
        out += data


def _data(sftp: _Session, kind: int, msg: Message) -> bytes:
    """The bytes of a read reply; empty at the end of the file."""
    if kind == CMD_DATA:
        return msg.get_string()
    try:
        _check_status(sftp, kind, msg)
    except EOFError:
        return b""
    raise SFTPError("expected data or a status reply")


def _statvfs(sftp: _Session, path: str) -> int | None:
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


def _temp_path(path: str) -> str:
    """A hidden sibling name for writing ``path``, short when its name is long (like local)."""
    folder, name = posixpath.split(path)
    tag = secrets.token_hex(6)
    temp = f".{name}.tmp-{tag}"
    if len(temp.encode()) > 255:
        temp = f".emberkeep.tmp-{tag}"
    return posixpath.join(folder, temp)


def _wanted(filename: str, temps: bool) -> bool:
    """Objects are the files not hidden; temp files are the hidden ones named like ours."""
    if temps:
        return filename.startswith(".") and ".tmp-" in filename
    return not filename.startswith(".")


class SftpStorage:
    """A target on an SSH server. Thread-safe: callers share one connection's sessions."""

    def __init__(self, url: str, *, label: str = "") -> None:
        self.label = label or "sftp target"
        self.loc = SftpLocation.parse(url, self.label)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(CHANNELS)
        self._ssh: paramiko.SSHClient | None = None
        self._idle: list[_Session] = []

    # -- the interface -------------------------------------------------------------------

    def put(self, name: str, data: Payload, *, overwrite: bool = False) -> None:
        path = self._path(name)
        parts = [memoryview(p).cast("B") for p in (data if isinstance(data, list) else [data])]
        tries = 0

        def op(sftp: _Session) -> None:
            nonlocal tries
            tries += 1
            try:
                self._put(sftp, name, path, parts, overwrite)
            except AlreadyExists:
                # Tried again after a dropped connection: the first try may have renamed.
                if tries == 1 or not self._holds(sftp, name, path, parts):
                    raise

        self._run(f"writing {name}", op)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        return self._run(
            f"reading {name}", lambda sftp: self._get(sftp, name, path, offset, length)
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        found = self._run(
            f"listing {prefix or 'the target'}",
            lambda sftp: [
                ObjectInfo(rel, size)
                for rel, size in self._walk(sftp, folder, temps=False)
                if rel.startswith(prefix)
            ],
        )
        return iter(found)

    def stat(self, name: str) -> ObjectInfo | None:
        path = self._path(name)

        def op(sftp: _Session) -> ObjectInfo | None:
            try:
                return ObjectInfo(name, sftp.stat(path).st_size or 0)
            except FileNotFoundError:
                return None

        return self._run(f"looking up {name}", op)

    def delete(self, name: str) -> None:
        path = self._path(name)

        def op(sftp: _Session) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self._run(f"deleting {name}", op)

    def free_bytes(self) -> int | None:
        return self._run("asking for free space", lambda sftp: _statvfs(sftp, self.loc.root))

    def incomplete(self) -> builtins.list[str]:
        found = self._run(
            "looking for unfinished writes",
            lambda sftp: [rel for rel, _size in self._walk(sftp, "", temps=True)],
        )
        return sorted(found)

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        with self._lock:
            self._drop_connection()

    # -- operations, each run on one SFTP session ------------------------------------------

    def _put(
        self,
        sftp: _Session,
        name: str,
        path: str,
        parts: builtins.list[memoryview],
        overwrite: bool,
    ) -> None:
        temp = _temp_path(path)
        try:
            self._write_temp(sftp, temp, parts)
            if overwrite:
                self._replace(sftp, temp, path)
            else:
                self._create(sftp, name, temp, path)
        except BaseException as exc:
            if isinstance(exc, (TimeoutError, *_DROPS)) or not sftp.usable():
                raise  # the temp file stays behind; incomplete() lists it
            with contextlib.suppress(Exception):
                sftp.remove(temp)
            if isinstance(exc, OSError):
                raise self._write_error(sftp, name, exc, sum(map(len, parts))) from exc
            raise

    def _write_temp(self, sftp: _Session, temp: str, parts: builtins.list[memoryview]) -> None:
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
        try:
            handle = _open(sftp, temp, flags, 0o600)
        except FileNotFoundError:
            self._makedirs(sftp, posixpath.dirname(temp))
            handle = _open(sftp, temp, flags, 0o600)
        try:
            _write_all(sftp, handle, parts)
            if FSYNC in sftp.extensions:
                sftp._request(CMD_EXTENDED, FSYNC, handle)
        except BaseException as exc:
            _close_after(sftp, handle, exc)
            raise
        _close(sftp, handle)

    def _create(self, sftp: _Session, name: str, temp: str, path: str) -> None:
        try:
            sftp.rename(temp, path)
        except OSError as exc:
            if self._exists(sftp, path):
                raise AlreadyExists(f"target {self.label}: object {name} already exists") from exc
            raise

    def _holds(
        self, sftp: _Session, name: str, path: str, parts: builtins.list[memoryview]
    ) -> bool:
        """Whether the file at ``path`` is the object being written (``base.holds_written``)."""
        try:
            size = sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return False
        return holds_written(name, parts, size, lambda: self._get(sftp, name, path, 0, None))

    def _replace(self, sftp: _Session, temp: str, path: str) -> None:
        if POSIX_RENAME in sftp.extensions:
            sftp.posix_rename(temp, path)
            return
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(path)
        sftp.rename(temp, path)

    def _get(self, sftp: _Session, name: str, path: str, offset: int, length: int | None) -> bytes:
        try:
            handle = _open(sftp, path, SFTP_FLAG_READ)
        except FileNotFoundError as exc:
            raise NotFound(f"target {self.label}: object {name} is missing") from exc
        try:
            if length is None:
                length = max(0, _size(sftp, handle) - offset)
            data = _read_range(sftp, handle, offset, length)
        except BaseException as exc:
            _close_after(sftp, handle, exc)
            raise
        _close(sftp, handle)
        return data

    def _walk(self, sftp: _Session, folder: str, *, temps: bool) -> Iterator[tuple[str, int]]:
        """(name, size) of every object under ``folder``, or of every temp file with ``temps``."""
        todo = [folder]
        while todo:
            current = todo.pop()
            where = posixpath.join(self.loc.root, current) if current else self.loc.root
            try:
                entries = sftp.listdir_attr(where)
            except FileNotFoundError:
                continue  # not made yet, or removed while walking
            for entry in entries:
                rel = posixpath.join(current, entry.filename) if current else entry.filename
                mode = entry.st_mode or 0
                if stat_mode.S_ISDIR(mode):
                    todo.append(rel)
                elif stat_mode.S_ISREG(mode) and _wanted(entry.filename, temps):
                    yield rel, entry.st_size or 0

    def _makedirs(self, sftp: _Session, folder: str) -> None:
        missing = []
        while folder not in ("", ".", "/") and not self._is_dir(sftp, folder):
            missing.append(folder)
            folder = posixpath.dirname(folder)
        for path in reversed(missing):
            try:
                sftp.mkdir(path, 0o700)
            except OSError:
                if not self._is_dir(sftp, path):  # else another writer made it meanwhile
                    raise

    @staticmethod
    def _is_dir(sftp: _Session, path: str) -> bool:
        try:
            return stat_mode.S_ISDIR(sftp.stat(path).st_mode or 0)
        except FileNotFoundError:
            return False

    @staticmethod
    def _exists(sftp: _Session, path: str) -> bool:
        try:
            sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def _path(self, name: str) -> str:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise StorageError(f"target {self.label}: refusing object name {name!r}")
        return posixpath.join(self.loc.root, name)

    # -- sessions and the connection ---------------------------------------------------------

    def _run(self, what: str, op: Callable[[_Session], T]) -> T:
        """Run ``op`` on a session; when the connection drops, reconnect and run it again,
        up to ``ATTEMPTS`` times in all (module docstring)."""
        drops: list[BaseException] = []
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(min(BACKOFF * 2 ** (attempt - 1), self.loc.timeout))
            try:
                sftp = self._checkout()
            except _Dropped as exc:
                drops.append(exc)
                continue
            try:
                result = op(sftp)
            except TimeoutError as exc:
                if not sftp.usable():
                    # The connection died while we waited (paramiko's transport thread saw
                    # the reset and the channel's wait ran out): a drop, not a silent server.
                    drops.append(_transport_error(sftp) or exc)
                    self._discard(sftp, dropped=True)
                    continue
                self._discard(sftp)
                raise self._timed_out(what) from exc
            except EmberkeepError:
                self._checkin(sftp)
                raise
            except Exception as exc:
                if sftp.usable() and not isinstance(exc, _DROPS):
                    # An error status leaves the session in step; anything else may not.
                    (self._checkin if isinstance(exc, OSError) else self._discard)(sftp)
                    raise self._failed(what, exc) from exc
                drops.append(_transport_error(sftp) or exc)
                self._discard(sftp, dropped=True)
                continue
            self._checkin(sftp)
            return result
        raise self._gave_up(what, drops) from drops[-1]

    def _checkout(self) -> _Session:
        if not self._slots.acquire(timeout=max(60.0, 4 * self.loc.timeout)):
            raise StorageError(f"target {self.label}: every SFTP session stayed busy; try again")
        try:
            with self._lock:
                while self._idle:
                    sftp = self._idle.pop()
                    if sftp.usable():
                        return sftp
                    _quietly_close(sftp)
                transport = self._transport()
            return self._open_session(transport)
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, sftp: _Session) -> None:
        with self._lock:
            self._idle.append(sftp)
        self._slots.release()

    def _discard(self, sftp: _Session, *, dropped: bool = False) -> None:
        """Close a session; when its connection dropped, close that too (if it is still
        the current one), so the next call opens a new one rather than a session on it."""
        if dropped:
            channel = sftp.get_channel()
            self._forget(channel.get_transport() if channel is not None else None)
        _quietly_close(sftp)
        self._slots.release()

    def _forget(self, transport: paramiko.Transport | None) -> None:
        with self._lock:
            current = self._ssh.get_transport() if self._ssh is not None else None
            if transport is None or current is transport:
                self._drop_connection()

    def _open_session(self, transport: paramiko.Transport) -> _Session:
        try:
            channel = transport.open_session(
                window_size=CHANNEL_WINDOW,
                max_packet_size=CHANNEL_PACKET,
                timeout=self.loc.timeout,
            )
            channel.settimeout(self.loc.timeout)
            channel.invoke_subsystem("sftp")
            sftp = _Session(channel)
            sftp.learn_limits()
            return sftp
        except TimeoutError as exc:
            raise self._timed_out("opening an SFTP session") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # A connection that died under it, most likely; tried again on a new one, and
            # named a refusal only if the connection lived on through every try.
            alive = transport.is_active()
            self._forget(transport)
            raise _Dropped(exc, refused_session=alive) from exc

    def _transport(self) -> paramiko.Transport:
        """The live connection, opened (again) when needed; call with the lock held."""
        transport = self._ssh.get_transport() if self._ssh is not None else None
        if transport is None or not transport.is_active():
            self._drop_connection()
            self._ssh = self._connect()
            transport = self._ssh.get_transport()
            assert transport is not None
        return transport

    def _drop_connection(self) -> None:
        for sftp in self._idle:
            _quietly_close(sftp)
        self._idle.clear()
        if self._ssh is not None:
            with contextlib.suppress(Exception):
                self._ssh.close()
            self._ssh = None

    def _connect(self) -> paramiko.SSHClient:
        loc = self.loc
        if loc.key_file is not None and not loc.key_file.is_file():
            raise StorageError(
                f"target {self.label}: key file {loc.key_file} does not exist; fix key= in "
                "the target URL"
            )
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_RejectUnknown())
        if loc.known_hosts.is_file():
            try:
                client.load_system_host_keys(str(loc.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise StorageError(
                    f"target {self.label}: cannot read known_hosts file {loc.known_hosts} "
                    f"({exc}); fix or replace it"
                ) from exc
        started = time.monotonic()
        try:
            client.connect(
                loc.host,
                loc.port,
                username=loc.user,
                key_filename=str(loc.key_file) if loc.key_file else None,
                allow_agent=loc.key_file is None,
                look_for_keys=loc.key_file is None,
                timeout=loc.timeout,
                banner_timeout=loc.timeout,
                auth_timeout=loc.timeout,
                channel_timeout=loc.timeout,
            )
        except BaseException as exc:
            client.close()
            # paramiko reports a server that never sends its banner as a protocol error.
            silent = time.monotonic() - started >= 0.95 * loc.timeout
            if silent and isinstance(exc, (EOFError, paramiko.SSHException)):
                raise self._timed_out("connecting") from exc
            if _cut_off(exc):
                raise _Dropped(exc) from exc
            raise self._connect_error(exc) from exc
        return client

    # -- messages ----------------------------------------------------------------------------

    def _connect_error(self, exc: BaseException) -> BaseException:
        loc = self.loc
        where = f"{loc.host}:{loc.port}"
        if isinstance(exc, _UnknownHost):
            return StorageError(
                f"target {self.label}: the host key of {loc.host_entry} is not in "
                f"{loc.known_hosts} (the server offers {_fingerprint(exc.key)}). Check that "
                f"fingerprint with the server's admin, then add the key: {loc.keyscan}"
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return StorageError(
                f"target {self.label}: the host key of {loc.host_entry} does not match the one "
                f"in {loc.known_hosts} (the server offers {_fingerprint(exc.key)}): someone may "
                "be intercepting the connection, or the server was reinstalled. Only if its "
                "admin confirms that fingerprint, replace the entry: ssh-keygen -R "
                f"'{loc.host_entry}' -f {loc.known_hosts} && {loc.keyscan}"
            )
        keys = f"key file {loc.key_file}" if loc.key_file else "the SSH agent's and ~/.ssh keys"
        if isinstance(exc, paramiko.PasswordRequiredException):
            return StorageError(
                f"target {self.label}: {keys} is protected by a passphrase; load it into "
                "ssh-agent (ssh-add) and drop key= from the URL, or use a key without one"
            )
        if isinstance(exc, paramiko.AuthenticationException) or (
            isinstance(exc, paramiko.SSHException) and "authentication" in str(exc).lower()
        ):
            return StorageError(
                f"target {self.label}: {where} refused user {loc.user} with {keys}; add the "
                f"public key to ~{loc.user}/.ssh/authorized_keys on {loc.host}, or name the "
                "right private key with ?key=FILE in the target URL"
            )
        if isinstance(exc, TimeoutError):
            return self._timed_out("connecting")
        if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                reason = "connection refused"
            return StorageError(
                f"target {self.label}: cannot connect to {where} ({reason}); check the host "
                "name and port in the target URL, and that the SSH server is running"
            )
        return exc

    def _gave_up(self, what: str, drops: Sequence[BaseException]) -> StorageError:
        """The error after the last try: the connection dropped every time."""
        last = drops[-1]
        if isinstance(last, _Dropped) and last.refused_session:
            return StorageError(
                f"target {self.label}: {self.loc.host}:{self.loc.port} refused an SFTP session "
                f"({last}); check that its SSH server offers the sftp subsystem to "
                f"{self.loc.user}"
            )
        reason = _drop_reason(last.cause if isinstance(last, _Dropped) else last)
        return StorageError(
            f"target {self.label}: the connection to {self.loc.host}:{self.loc.port} dropped "
            f"while {what} ({reason}), {len(drops)} times in a row; check the server and the "
            "network, then run the command again"
        )

    def _timed_out(self, what: str) -> StorageError:
        return StorageError(
            f"target {self.label}: {self.loc.host}:{self.loc.port} did not answer within "
            f"{self.loc.timeout:g}s while {what}; check the server and the network, or allow "
            "more time with ?timeout=SECONDS in the target URL"
        )

    def _failed(self, what: str, exc: Exception) -> StorageError:
        if isinstance(exc, FileNotFoundError):
            return NotFound(f"target {self.label}: {what}: no such file on {self.loc.host}")
        if isinstance(exc, PermissionError):
            return StorageError(
                f"target {self.label}: permission denied {what}; check that {self.loc.user} "
                f"may read and write {self.loc.root} on {self.loc.host}"
            )
        return StorageError(f"target {self.label}: {what} failed on {self.loc.host}: {exc}")

    def _write_error(self, sftp: _Session, name: str, exc: OSError, size: int) -> EmberkeepError:
        """A write failure; SFTP reports a full disk as a bare failure, so look at free space."""
        if isinstance(exc, EmberkeepError):
            return exc
        free = None
        with contextlib.suppress(Exception):
            free = _statvfs(sftp, self.loc.root)
        if exc.errno == errno.ENOSPC or (free is not None and free < size + IN_FLIGHT):
            return StorageFull(
                f"target {self.label}: no space left in {self.loc.root} on {self.loc.host}: free "
                "space there or point the target elsewhere; earlier backups are intact"
            )
        return self._failed(f"writing {name}", exc)


def _close_after(sftp: _Session, handle: bytes, exc: BaseException) -> None:
    """Close a file after a failure, unless the server is hung or gone."""
    if not isinstance(exc, TimeoutError) and sftp.usable():
        with contextlib.suppress(Exception):
            _close(sftp, handle)


def _cut_off(exc: BaseException) -> bool:
    """Whether a failed connect was cut off midway (reset, closed) rather than refused or
    denied: worth trying again, as a dropped call is."""
    if isinstance(exc, (EOFError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return True
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    return isinstance(exc, paramiko.SSHException) and (
        "reset" in str(exc).lower() or "eof" in str(exc).lower() or "closed" in str(exc).lower()
    )


def _transport_error(sftp: _Session) -> BaseException | None:
    """What ended a session's connection, as its transport thread saw it (a reset, say),
    where the call itself saw only the end of its channel."""
    channel = sftp.get_channel()
    transport = channel.get_transport() if channel is not None else None
    saved = getattr(transport, "saved_exception", None)
    return saved if isinstance(saved, BaseException) else None


def _drop_reason(exc: BaseException) -> str:
    """A drop in a few words: the error's own text, or what its type means."""
    if isinstance(exc, EOFError):
        return "the server closed it"
    text = getattr(exc, "strerror", None) or str(exc)
    return text or type(exc).__name__


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _quietly_close(sftp: _Session) -> None:
    with contextlib.suppress(Exception):
        sftp.close()


__all__ = ["SftpLocation", "SftpStorage"]
