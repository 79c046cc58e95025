"""Sessions through OpenSSH: each one is the user's ``ssh -s sftp``, spoken to over its stdin
and stdout, as restic and borg do.

SSH's framing and encryption run in C, and the user's ssh config applies as they expect (host
aliases, ``ProxyJump``, ``IdentityFile``, the agent, known_hosts). What the URL names wins
over the config (``-l``, ``-p``, ``-i``, ``UserKnownHostsFile``); ``BatchMode`` means no
prompt ever, and ``StrictHostKeyChecking=yes`` that an unknown or changed host key is
refused, never learnt. Nothing secret goes in argv: keys are named by file. ssh's own
messages (it says why it failed on stderr and exits with 255) become one-line errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import select
import shlex
import shutil
import subprocess
import threading
import weakref
from collections import deque
from typing import IO

import paramiko

from ...errors import StorageError
from . import failures
from .failures import Dropped
from .location import SftpLocation
from .session import Session

PIPE_SIZE = 1024 * 1024  # bytes a pipe to ssh holds (Linux's default limit for a user)
_F_SETPIPE_SZ = 1031  # fcntl's name for it, which Python 3.11 does not export
STDERR_LINES = 40  # of ssh's messages kept for the error
LINE_MAX = 1000  # bytes of each kept
SSH_FAILED = 255  # ssh's exit status for its own failures (not the remote command's)


class _SshPipe:
    """The stdin and stdout of one ``ssh -s sftp``, as the socket paramiko's SFTP client
    expects (``send``, ``recv``, ``close``), each wait bounded by ``timeout``."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.timeout = timeout
        self.closed = False
        self._stdin, self._stdout = proc.stdin, proc.stdout
        # A session nobody closed ends when it is collected: its ssh sees the end of its
        # input and exits (Popen itself keeps a running child's pipes open for ever).
        weakref.finalize(self, _close_quietly, proc.stdin)
        self._to = proc.stdin.fileno()
        self._from = proc.stdout.fileno()
        for fd in (self._to, self._from):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        self.messages: deque[str] = deque(maxlen=STDERR_LINES)
        # The reader holds the stream and the lines, not this object, so that it can be
        # collected (below).
        self._reader = threading.Thread(
            target=_collect, args=(proc.stderr, self.messages), daemon=True
        )
        self._reader.start()

    def send(self, data: bytes) -> int:
        self._wait(self._to, select.POLLOUT)
        return os.write(self._to, data)  # BrokenPipeError once ssh is gone: a drop

    def recv(self, size: int) -> bytes:
        with contextlib.suppress(BlockingIOError):
            return os.read(self._from, size)
        self._wait(self._from, select.POLLIN)
        return os.read(self._from, size)  # b"" once ssh is gone: paramiko's EOFError

    def _wait(self, fd: int, event: int) -> None:
        poller = select.poll()
        poller.register(fd, event)
        if not poller.poll(self.timeout * 1000):
            raise TimeoutError(f"ssh said nothing for {self.timeout:g}s")

    def get_name(self) -> str:
        """paramiko's log lines name the channel."""
        return f"ssh[{self.proc.pid}]"

    def usable(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def close(self) -> None:
        """End the session: ssh sees the end of its input and exits; killed if it lingers."""
        if not self.closed:
            self._end(1.0)

    def finished(self) -> list[str]:
        """ssh's messages, once it has exited (killed if it has not within ``timeout``)."""
        if not self.closed:
            self._end(self.timeout)
        self._reader.join(self.timeout)
        return [line for line in self.messages if line]

    def _end(self, wait: float) -> None:
        self.closed = True
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError, ValueError):
            self._stdout.close()


def _close_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        stream.close()


def _collect(stream: IO[bytes], messages: deque[str]) -> None:
    """Keep ssh's last messages (its stderr) until it exits: ``STDERR_LINES`` lines of at
    most ``LINE_MAX`` characters, control characters shown as ``?``. The server writes
    there too (its banner, its stderr), as much as it likes and with no line end."""
    with contextlib.suppress(OSError, ValueError):
        while line := stream.readline(LINE_MAX):
            rest = line
            while not rest.endswith(b"\n") and (rest := stream.readline(LINE_MAX)):
                pass  # the rest of a longer line, dropped
            text = line.decode("utf-8", "replace").strip()
            messages.append("".join(c if c.isprintable() else "?" for c in text))
    with contextlib.suppress(OSError):
        stream.close()


class OpensshConnector:
    """One ``ssh`` process per session; no connection is shared."""

    def __init__(self, label: str, loc: SftpLocation) -> None:
        self.label = label
        self.loc = loc

    def command(self, ssh: str) -> list[str]:
        """``ssh … -s HOST sftp`` for this target (no secret in it: keys are files)."""
        loc = self.loc
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "ConnectTimeout": str(math.ceil(loc.timeout)),
            "ClearAllForwardings": "yes",
            "ForwardAgent": "no",
            "ForwardX11": "no",
        }
        if loc.known_hosts_given:
            options["UserKnownHostsFile"] = _ssh_value(str(loc.known_hosts))
        argv = [ssh]
        if loc.ssh_config is not None:
            argv += ["-F", str(loc.ssh_config)]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        if loc.key_file is not None:
            argv += ["-i", str(loc.key_file).replace("%", "%%"), "-o", "IdentitiesOnly=yes"]
        if loc.user_given:
            argv += ["-l", loc.user]
        if loc.port_given:
            argv += ["-p", str(loc.port)]
        return [*argv, "-s", "--", loc.host, "sftp"]

    def open_session(self) -> Session:
        pipe = _SshPipe(self._spawn(), self.loc.timeout)
        try:
            sftp = Session(pipe)
            sftp.learn_limits()
            return sftp
        except TimeoutError as exc:
            pipe.finished()
            raise failures.timed_out(self.label, self.loc, "connecting") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            messages = pipe.finished()
            raise self._refusal(messages, exc, pipe.proc.returncode) from exc

    def forget(self, sftp: Session) -> bool:
        return True  # the others may have lost their connections too: open new ones

    def transport_error(self, sftp: Session) -> BaseException | None:
        """ssh's own last word on a dropped connection (a reset, say)."""
        pipe = sftp.get_channel()
        if not isinstance(pipe, _SshPipe):
            return None
        messages = pipe.finished()
        return ConnectionError(messages[-1]) if messages else None

    def close(self) -> None:
        pass  # each session is its own ssh: closing the sessions closed everything

    def _spawn(self) -> subprocess.Popen[bytes]:
        loc = self.loc
        ssh = shutil.which("ssh")
        if ssh is None:
            raise StorageError(
                f"target {self.label}: OpenSSH's ssh is not on PATH; install openssh-client, "
                "or add ssh=paramiko to the sftp URL"
            )
        if loc.key_file is not None and not loc.key_file.is_file():
            raise failures.missing_key(self.label, loc)
        if loc.ssh_config is not None and not loc.ssh_config.exists():  # /dev/null is one
            raise StorageError(
                f"target {self.label}: ssh config file {loc.ssh_config} does not exist; fix "
                "ssh_config= in the target URL"
            )
        return subprocess.Popen(
            self.command(ssh),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # no terminal to prompt on, and no Ctrl-C mid-write
        )

    def _refusal(
        self, messages: list[str], exc: BaseException, status: int | None = SSH_FAILED
    ) -> BaseException:
        """The error for an ssh that exited before the SFTP session began, from its stderr.
        ssh's own failures exit ``SSH_FAILED``; any other status is the server's sftp
        command's, after login: its stderr may mimic ssh's messages, so none is read."""
        label, loc = self.label, self.loc
        if status != SSH_FAILED and status is not None and status >= 0:
            last = messages[-1] if messages else str(exc)
            return Dropped(
                ConnectionError(f"its sftp command exited with status {status}: {last}"),
                refused_session=True,
            )
        text = "\n".join(messages)
        if "has changed and you have requested strict checking" in text:
            return _changed_host(label, loc, text)
        if match := re.search(r"No (\S+) host key is known for (\S+) and you have", text):
            return _unknown_host(label, loc, match[2])
        if match := re.search(r"(\S+)@(\S+): Permission denied", text):
            return failures.refused_user(label, loc, user=match[1], host=match[2])
        if match := re.search(r"Could not resolve hostname (\S+): (.+)", text):
            return failures.cannot_connect(label, loc, f"could not resolve {match[1]}")
        if "timed out" in text:
            return failures.timed_out(label, loc, "connecting")
        if match := re.search(r"connect to host \S+ port \d+: (.+)", text):
            return failures.cannot_connect(label, loc, match[1].lower())
        if "subsystem request failed" in text:
            return Dropped(exc, refused_session=True)
        if re.search(r"closed by|reset by|Broken pipe|kex_exchange_identification", text):
            return Dropped(ConnectionError(messages[-1]))
        last = messages[-1] if messages else f"{type(exc).__name__}: {exc}"
        return StorageError(
            f"target {label}: ssh to {loc.host} failed ({last}); run the same ssh by hand to "
            "see why (ssh -v)"
        )


def _ssh_value(value: str) -> str:
    """A value for ``ssh -o NAME=VALUE`` as ssh reads it back: no %-expansion, one word."""
    value = value.replace("%", "%%")
    return f'"{value}"' if re.search(r"\s", value) else value


def _changed_host(label: str, loc: SftpLocation, text: str) -> StorageError:
    """A changed host key: the host, the known_hosts file and line, the new fingerprint."""
    host = re.search(r"Host key for (\S+) has changed", text)
    line = re.search(r"Offending \S+ key in (.+):(\d+)\s*$", text, re.MULTILINE)
    offered = re.search(
        r"The fingerprint for the (\w+) key .*\n(SHA256:[A-Za-z0-9+/]+)\.?\s*$", text, re.M
    )
    entry = host[1] if host else loc.host_entry
    where = f"{line[1]} line {line[2]}" if line else "known_hosts"
    file = line[1] if line else str(loc.known_hosts)
    return StorageError(
        f"target {label}: the host key of {entry} does not match the one in {where}"
        + (f" (the server offers {offered[1]} {offered[2]})" if offered else "")
        + ": someone may be intercepting the connection, or the server was reinstalled. Only "
        f"if its admin confirms that fingerprint, replace the entry: ssh-keygen -R "
        f"{shlex.quote(entry)} -f {shlex.quote(file)} && {_keyscan(entry, file)}"
    )


def _unknown_host(label: str, loc: SftpLocation, entry: str) -> StorageError:
    file = str(loc.known_hosts) if loc.known_hosts_given else "~/.ssh/known_hosts"
    return StorageError(
        f"target {label}: the host key of {entry} is not in {file} (or the known_hosts your "
        "ssh config names). Check its fingerprint with the server's admin, then add the key: "
        f"{_keyscan(entry, file)}"
    )


def _keyscan(entry: str, file: str) -> str:
    """The command that adds the keys of the host known_hosts calls ``entry`` to ``file``.
    Its parts may come from what ssh printed, which the server can mimic: each is quoted
    for the shell the operator pastes it into."""
    match = re.fullmatch(r"\[(.+)\]:(\d+)", entry)
    host, port = (match[1], f"-p {match[2]} ") if match else (entry, "")
    return f"ssh-keyscan {port}{shlex.quote(host)} >> {shlex.quote(file)}"
