"""sftp through a network that drops: a proxy of our own (servers.FlakyProxy) between emberkeep
and the real sshd cuts the connection mid-transfer, with an end of file or a TCP reset.

Through OpenSSH's ssh and through paramiko alike: one cut during an upload or a download is
retried on a new connection and the call succeeds; a connection cut every time fails with an
error naming the drop, the host and what was being done; a server that never sends its banner
is one clear line, with no thread traceback on stderr.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Site, restored, tree_listing
from servers import FlakyProxy, SshServer

from emberkeep.errors import StorageError
from emberkeep.storage import open_storage
from emberkeep.storage.sftp import pool as sftp_pool

MiB = 1024 * 1024
CLIENTS = ["openssh", "paramiko"]  # ?ssh= in sftp URLs


@pytest.fixture
def proxy(sftp_server: SshServer) -> Iterator[FlakyProxy]:
    with FlakyProxy(sftp_server.port) as running:
        yield running


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("cut", ["close", "reset"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_one_cut_during_a_transfer_is_retried_and_succeeds(
    sftp_server: SshServer,
    proxy: FlakyProxy,
    tmp_path: Path,
    direction: str,
    cut: str,
    client: str,
) -> None:
    url = sftp_server.url_via(proxy.port, tmp_path / "t", ssh=client)
    st = open_storage(url, name="remote")
    blob = os.urandom(6 * MiB)
    proxy.arm(drops=1, after_bytes=MiB, direction=direction, cut=cut)
    try:
        st.put("data/aa/big", blob)  # an upload of 6 MiB: cut in the middle when "up"
        assert st.get("data/aa/big") == blob  # a download of 6 MiB: cut when "down"
    finally:
        st.close()  # type: ignore[attr-defined]
    assert proxy.dropped == 1, "the proxy did not cut the connection: the test proved nothing"
    assert (tmp_path / "t" / "data" / "aa" / "big").read_bytes() == blob


@pytest.mark.parametrize("client", CLIENTS)
def test_a_connection_cut_every_time_fails_naming_the_drop(
    sftp_server: SshServer, proxy: FlakyProxy, tmp_path: Path, client: str
) -> None:
    url = sftp_server.url_via(proxy.port, tmp_path / "t", ssh=client)
    st = open_storage(url, name="remote")
    proxy.arm(drops=1000, after_bytes=MiB, cut="reset")
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        st.put("data/aa/big", os.urandom(4 * MiB))
    st.close()  # type: ignore[attr-defined]
    message = str(caught.value)
    assert proxy.dropped == sftp_pool.ATTEMPTS, message
    assert f"target remote: the connection to 127.0.0.1:{proxy.port} dropped" in message
    assert "while writing data/aa/big" in message and "4 times" in message, message
    assert "subsystem" not in message, message
    assert time.monotonic() - started < 60  # bounded: four tries and three pauses


def test_backup_and_restore_through_the_cli_survive_a_drop_and_a_reset(
    site: Site, sftp_server: SshServer, proxy: FlakyProxy, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "media").mkdir(parents=True)
    (src / "media" / "large.bin").write_bytes(os.urandom(5 * MiB))
    for i in range(20):
        (src / "media" / f"small-{i}.txt").write_text(f"file {i}\n" * (i + 1))
    url = sftp_server.url_via(proxy.port, tmp_path / "remote")
    site.write_config(paths=[src], targets=f'[[targets]]\nname = "remote"\nurl = "{url}"')
    site.run("init")

    proxy.arm(drops=1, after_bytes=2 * MiB, direction="up", cut="reset")
    backup = site.run("backup")
    assert proxy.dropped == 1, "the backup's upload was not cut"
    assert "Traceback" not in backup.stderr and "Socket exception" not in backup.stderr
    [snapshot] = site.snapshots()

    proxy.arm(drops=1, after_bytes=2 * MiB, direction="down", cut="close")
    dest = tmp_path / "restored"
    restore = site.run("restore", snapshot["id"], "--to", dest)
    assert proxy.dropped == 1, "the restore's download was not cut"
    assert "Traceback" not in restore.stderr, restore.stderr
    assert tree_listing(restored(dest, src)) == tree_listing(src)


def test_a_server_that_never_sends_its_banner_is_one_clear_line(site: Site, tmp_path: Path) -> None:
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)  # accepts, then says nothing
        port = mute.getsockname()[1]
        url = f"sftp://nobody@127.0.0.1:{port}/srv/backups?timeout=1"
        site.write_config(paths=[tmp_path], targets=f'[[targets]]\nname = "mute"\nurl = "{url}"')
        proc = subprocess.run(
            [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), "snapshots"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"more than one line on stderr:\n{proc.stderr}"
    assert "target mute:" in lines[0] and "did not answer within 1s" in lines[0], lines
    assert "Traceback" not in proc.stderr and "Exception (client)" not in proc.stderr
