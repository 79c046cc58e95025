"""Real servers for the storage tests, each on a free loopback port, with keys made for the run.

- SFTP: Debian's OpenSSH server (``sshd``), with its own host key, authorized key, pid file
  and the built-in SFTP server, run as the current user (root in CI).
- S3: versitygw (``go install github.com/versity/versitygw/cmd/versitygw``, built into
  the machine's tool cache by ``scripts/setup --test``) with its posix backend on a temp folder.

Starting either one fails loudly (never a skip): a test that needs a server must not pass
without it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

from emberkeep.demo import tools

VERSITYGW_BIN = tools.built("versitygw", tools.VERSITYGW_VERSION)
START_TIMEOUT = 20.0


class ServerError(RuntimeError):
    """A test server could not be started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path) -> str:
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-2000:]
    return "(no log)"


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    """Wait until ``proc`` accepts connections on ``port``; raise with its log if it dies."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with status {proc.returncode}:\n{_log_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    proc.kill()
    raise ServerError(f"{what} did not listen on port {port} in {START_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2)  # a test server needs no graceful shutdown
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _keygen(path: Path) -> str:
    """A new ed25519 key pair at ``path``; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "emberkeep-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class SshServer:
    """A running sshd; ``url`` makes target URLs that reach it with the run's key."""

    workdir: Path
    port: int
    user: str
    key: Path  # the client's private key
    known_hosts: Path  # holds the server's real host key
    proc: subprocess.Popen[bytes]

    def url(self, path: str | os.PathLike[str], **query: str | float) -> str:
        options = {"key": str(self.key), "known_hosts": str(self.known_hosts), **query}
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}?{urlencode(options)}"

    def url_via(self, port: int, path: str | os.PathLike[str], **query: str | float) -> str:
        """A URL reaching this server through a proxy on ``port`` (its own known_hosts line:
        the host key is this server's, the name the proxy's)."""
        entry = self.known_hosts.read_text().replace(f"]:{self.port} ", f"]:{port} ", 1)
        known = self.workdir / f"known_hosts-{port}"
        known.write_text(entry)
        options = {"key": str(self.key), "known_hosts": str(known), **query}
        return f"sftp://{self.user}@127.0.0.1:{port}{path}?{urlencode(options)}"

    def host_entry_for(self, public_key: str) -> str:
        """A known_hosts line giving this server ``public_key`` (the wrong-key test)."""
        kind, blob = public_key.split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def drop_connections(self) -> int:
        """Kill the per-connection sshd processes (a dropped connection); the listener stays."""
        killed = 0
        for pid in _children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed

    def stop(self) -> None:
        self.drop_connections()
        _stop(self.proc)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def start_sshd(workdir: Path, subsystem: str = "internal-sftp") -> SshServer:
    """An sshd on loopback; ``subsystem``: the command it runs as sftp (a hostile one)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        raise ServerError("sshd is not installed: run scripts/setup --test (openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    host_pub = _keygen(workdir / "host_ed25519")
    user_pub = _keygen(workdir / "user_ed25519")
    (workdir / "authorized_keys").write_text(user_pub + "\n")
    port = free_port()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n")
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {workdir / 'host_ed25519'}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                "StrictModes no",
                "UsePAM no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                f"Subsystem sftp {subsystem}",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = workdir / "sshd.log"
    proc = subprocess.Popen(
        [sshd, "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115 - the child keeps it
    )
    _wait_listening(proc, port, log, "sshd")
    return SshServer(
        workdir=workdir,
        port=port,
        user=_user(),
        key=workdir / "user_ed25519",
        known_hosts=known_hosts,
        proc=proc,
    )


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@dataclass
class S3Server:
    """A running versitygw; ``url`` makes target URLs, ``env`` the credentials for them."""

    workdir: Path
    port: int
    access_key: str
    secret_key: str
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **override: str) -> dict[str, str]:
        """AWS variables for this server; never a look-up outside this machine."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            **override,
        }

    def url(self, bucket: str, prefix: str = "", **query: str | float) -> str:
        options = {"endpoint": self.endpoint, "region": "us-east-1", **query}
        return f"s3://{bucket}/{prefix}?{urlencode(options)}"

    def client(self):  # -> botocore S3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def make_bucket(self, prefix: str = "bkt") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        _stop(self.proc)


def start_versitygw(workdir: Path, *, versioning: bool = False) -> S3Server:
    """versitygw on a free loopback port, its posix backend on ``workdir/data``.

    ``versioning``: give the backend a versioning folder, so buckets can have versioning on
    (as AWS requires for Object Lock; a bucket created with ObjectLockEnabledForBucket then
    gets versioning on by itself). Without it Object Lock works on unversioned buckets.
    """
    binary = VERSITYGW_BIN
    if not binary.exists():
        raise ServerError(f"{binary} is missing: run scripts/setup --test to build versitygw")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    backend = ["posix"]
    if versioning:
        versions = workdir / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        backend += ["--versioning-dir", str(versions)]
    port = free_port()
    access, secret = f"AK{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30)
    log = workdir / "versitygw.log"
    proc = subprocess.Popen(
        [str(binary), "--port", f"127.0.0.1:{port}", "--quiet", *backend, str(data)],
        stdin=subprocess.DEVNULL,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child keeps it
        stderr=subprocess.STDOUT,
        # Keys go through the environment, not argv, so `ps` does not show them.
        env={**os.environ, "ROOT_ACCESS_KEY_ID": access, "ROOT_SECRET_ACCESS_KEY": secret},
    )
    _wait_listening(proc, port, log, "versitygw")
    return S3Server(workdir=workdir, port=port, access_key=access, secret_key=secret, proc=proc)


class FlakyProxy:
    """A loopback TCP proxy that cuts connections mid-transfer, as a flaky network would.

    It forwards to ``upstream`` and cuts the next ``drops`` connections that carry more than
    ``after_bytes`` bytes in ``direction`` (``up``: from the client, ``down``: to it), with a
    TCP reset (``cut="reset"``) or an orderly close (``cut="close"``, the peer sees an end of
    file). ``arm`` sets it again for the next step of a test; the port stays the same.
    """

    def __init__(
        self,
        upstream: int,
        *,
        drops: int = 0,
        after_bytes: int = 0,
        direction: str = "up",
        cut: str = "reset",
    ) -> None:
        self.upstream = upstream
        self.dropped = 0
        self._lock = threading.Lock()
        self.arm(drops=drops, after_bytes=after_bytes, direction=direction, cut=cut)
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def arm(
        self, *, drops: int, after_bytes: int, direction: str = "up", cut: str = "reset"
    ) -> None:
        assert direction in ("up", "down") and cut in ("reset", "close")
        with self._lock:
            self.drops, self.after_bytes = drops, after_bytes
            self.direction, self.cut = direction, cut
            self.dropped = 0

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        """Both directions of one connection in one thread. A cut closes both sockets here:
        a socket closed while another thread is blocked in its ``recv`` is not released, so
        the reset would not be sent until that thread woke (the cut would be a stall)."""
        peer = {client: (server, "up"), server: (client, "down")}
        carried = {"up": 0, "down": 0}
        open_ends = {client, server}
        with selectors.DefaultSelector() as selector:
            for sock in open_ends:
                selector.register(sock, selectors.EVENT_READ)
            while open_ends:
                for key, _ in selector.select():
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    dst, direction = peer[src]
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    if not data:  # that side finished: pass the end on, keep the other way
                        selector.unregister(src)
                        open_ends.discard(src)
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        continue
                    carried[direction] += len(data)
                    if carried[direction] > self.after_bytes and self._take_drop(direction):
                        self._cut(client, server)
                        return
                    try:
                        dst.sendall(data)
                    except OSError:
                        self._cut(client, server)
                        return
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.close()

    def _cut(self, *socks: socket.socket) -> None:
        for sock in socks:
            if self.cut == "reset":
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _take_drop(self, direction: str) -> bool:
        with self._lock:
            if direction != self.direction or self.dropped >= self.drops:
                return False
            self.dropped += 1
            return True


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset rather than an orderly end, like a dropped connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@contextlib.contextmanager
def http_serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """An HTTP server with ``handler`` on a free loopback port, for the block; its port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
