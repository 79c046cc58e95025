"""sftp through OpenSSH against a server that is not to be trusted (README, "How it keeps
data safe"): what it writes to ssh's stderr (its banner, its sftp command's stderr) may be
endless, carry terminal escapes, or mimic ssh's own messages. The error stays one bounded
line, and a command it suggests to paste has nothing of the server's outside quotes."""

from __future__ import annotations

import os
import re
import shlex
import sys
import threading
import tracemalloc
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Site
from servers import SshServer, start_sshd

from emberkeep.errors import StorageError, UsageError
from emberkeep.storage import open_storage
from emberkeep.storage.s3.location import S3Location
from emberkeep.storage.sftp import SftpLocation
from emberkeep.storage.sftp.openssh_client import (
    LINE_MAX,
    SSH_FAILED,
    OpensshConnector,
    _collect,
)

MiB = 1024 * 1024
MIMIC = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
Host key for evil';touch${IFS}PWNED;' has changed and you have requested strict checking.
Offending ED25519 key in /tmp/kh;touch PWNED2:1
The fingerprint for the ED25519 key sent by the remote host is
SHA256:x;touch${IFS}PWNED3.
Host key verification failed.
"""


@pytest.fixture(scope="module")
def hostile_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd whose sftp command floods stderr (8 MiB with no line end, a terminal
    escape), then mimics ssh's changed-host-key warning, and exits 1."""
    workdir = tmp_path_factory.mktemp("hostile-sshd")
    script = workdir / "sftp-server"
    (workdir / "mimic.txt").write_text(MIMIC)
    script.write_text(
        "#!/bin/sh\n"
        f"head -c {8 * MiB} /dev/zero | tr '\\0' A >&2\n"
        "printf '\\n\\033]0;owned\\007\\n' >&2\n"
        f"cat {workdir / 'mimic.txt'} >&2\n"
        "exit 1\n"
    )
    script.chmod(0o755)
    server = start_sshd(workdir / "sshd", subsystem=str(script))
    yield server
    server.stop()


def _operators(command: str) -> list[str]:
    """The shell operators in ``command``: what would run besides the quoted words."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    return [t for t in lexer if t and set(t) <= set("();<>|&")]


def test_a_server_flooding_stderr_and_mimicking_ssh_is_one_bounded_line(
    site: Site, hostile_sshd: SshServer, tmp_path: Path
) -> None:
    url = hostile_sshd.url(tmp_path / "repo", ssh="openssh", timeout=20)
    site.write_config([tmp_path], targets=f'[[targets]]\nname = "remote"\nurl = "{url}"')
    proc = site.run("init", ok=False)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr[:2000]
    [error] = errors
    assert len(error) < 3 * LINE_MAX, error[:2000]
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "target remote:" in error and "refused an SFTP session" in error, error
    assert "does not match" not in error, error  # not ssh's words: not taken for them
    assert "exited with status 1" in error, error


def test_mimicked_host_key_lines_are_quoted_in_the_commands_suggested() -> None:
    """ssh exits 255 after a banner too (the server can show one, then hang up): the
    changed-key advice may then be built from the server's text, and stays inert."""
    loc = SftpLocation.parse("sftp://u@example.org:2222/b?ssh=openssh", "t")
    error = OpensshConnector("t", loc)._refusal(MIMIC.splitlines(), EOFError(), SSH_FAILED)
    text = str(error)
    assert "does not match" in text, text
    command = text.split("replace the entry: ", 1)[1]
    assert _operators(command) == ["&&", ">>"], command
    assert "SHA256:x;touch" not in text, text  # not a fingerprint: not repeated


def test_stderr_is_kept_in_bounded_lines_whatever_its_length() -> None:
    """ssh's stderr reader holds at most ``LINE_MAX`` bytes of a line, however long."""
    read, write = os.pipe()
    size = 64 * MiB

    def flood() -> None:
        with os.fdopen(write, "wb") as out:
            block = b"B" * MiB
            for _ in range(size // MiB):
                out.write(block)
            out.write(b"\nlast words\x1b[2J\n")

    writer = threading.Thread(target=flood)
    messages: deque[str] = deque(maxlen=40)
    tracemalloc.start()
    try:
        writer.start()
        _collect(os.fdopen(read, "rb"), messages)
        writer.join()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak
    assert [len(m) for m in messages] == [LINE_MAX, len("last words?[2J")], messages
    assert messages[-1] == "last words?[2J"


SERVER = Path(__file__).parent / "fixtures" / "hostile_sftp_server.py"


@pytest.fixture(scope="module")
def lying_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshServer, Path]]:
    """An sshd whose sftp subsystem lies about lengths (``fixtures/hostile_sftp_server.py``,
    its behaviour chosen by the file returned)."""
    workdir = tmp_path_factory.mktemp("lying-sshd")
    script = workdir / "server.py"
    script.write_text(SERVER.read_text())
    mode = workdir / "mode"
    mode.write_text("bigdata")
    server = start_sshd(workdir / "sshd", subsystem=f"{sys.executable} {script}")
    yield server, mode
    server.stop()


@pytest.mark.parametrize(
    "mode, said",
    [
        ("garbage", "does not speak SFTP"),
        ("extension", "does not speak SFTP"),
        ("bigdata", "the server sent 4194304 bytes for a read of 32768"),
    ],
)
def test_a_server_with_absurd_packet_lengths_is_refused_by_name(
    lying_sshd: tuple[SshServer, Path], tmp_path: Path, mode: str, said: str
) -> None:
    server, mode_file = lying_sshd
    mode_file.write_text(mode)
    storage = open_storage(server.url(tmp_path / "repo", ssh="openssh", timeout=20), name="far")
    tracemalloc.start()
    try:
        with pytest.raises(StorageError) as raised:
            storage.get("config")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "target far" in str(raised.value) and said in str(raised.value), raised.value
    assert peak < 64 * MiB, peak  # a few replies at most, never the 128 in flight


@pytest.mark.parametrize(
    "url, said",
    [
        ("sftp://a;touch${IFS}x/b", "the host in the sftp URL holds ';'"),
        ("sftp://u@h$(id)/b", "the host in the sftp URL holds '$'"),
        ("sftp://u@h`id`/b", "the host in the sftp URL holds '`'"),
        ("sftp://us%0Aer@h/b", "the user in the sftp URL holds '\\n'"),
        ("sftp://u%20x@h/b", "the user in the sftp URL holds ' '"),
        ("sftp://u%3Bid@h/b", "the user in the sftp URL holds ';'"),
        ("sftp://-oProxyCommand=x@h/b", "the user in the sftp URL holds a leading '-'"),
        ("sftp://u@h/srv/backups;old", "holds ';old', which would be dropped"),
    ],
)
def test_hostile_parts_of_an_sftp_url_are_refused(url: str, said: str) -> None:
    """ssh takes the host and user as arguments (after ``--``; no shell), but an ssh
    config's ProxyCommand or Match exec hands them to a shell (%h, %r): OpenSSH before 9.6
    passes shell characters on. And urlparse drops ';…' from a path."""
    with pytest.raises(UsageError, match=re.escape(said)):
        SftpLocation.parse(url, "t")


def test_ordinary_sftp_urls_still_parse() -> None:
    loc = SftpLocation.parse("sftp://backup.user+x@host-1.example.org:2222/~/b%3Bc", "t")
    assert (loc.user, loc.host, loc.port, loc.root) == (
        "backup.user+x",
        "host-1.example.org",
        2222,
        "b;c",
    )
    assert SftpLocation.parse("sftp://u@[::1]/srv/b", "t").host == "::1"
    # urlparse splits ';' off sftp paths only (its uses_params), not off s3 prefixes
    assert S3Location.parse("s3://bucket/pre;fix", "s").prefix == "pre;fix/"
