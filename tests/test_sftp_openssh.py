"""sftp through OpenSSH's ssh, as a user's ~/.ssh/config sets it up: two sshd on loopback, an
ssh config naming the far one by a host alias that jumps through the other (``ProxyJump``).

A backup and a restore through the alias work from the CLI; a changed host key (of the far
host or of the jump host) is refused with one line naming that host and the known_hosts file
and line, exit code 1, and nothing written; a jump host that refuses the key is one line too;
paramiko (``?ssh=paramiko``) still backs up and restores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Site, restored, tree_listing
from servers import SshServer, _keygen, start_sshd

from emberkeep.errors import UsageError
from emberkeep.storage.sftp import SftpLocation

MiB = 1024 * 1024


@dataclass
class Hops:
    """A jump host and a far host, and an ssh config that reaches the far one as ``vault``."""

    jump: SshServer
    far: SshServer
    known_hosts: Path  # both hosts' keys, one a line: the jump host's first
    config: Path

    def url(self, path: Path) -> str:
        return f"sftp://vault{path}?ssh_config={self.config}"


@pytest.fixture(scope="module")
def hops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hops]:
    workdir = tmp_path_factory.mktemp("hops")
    jump = start_sshd(workdir / "jump")
    far = start_sshd(workdir / "far")
    try:
        known = workdir / "known_hosts"
        known.write_text(jump.known_hosts.read_text() + far.known_hosts.read_text())
        config = workdir / "ssh_config"
        config.write_text(
            f"Host jumpbox\n  HostName 127.0.0.1\n  Port {jump.port}\n  IdentityFile {jump.key}\n"
            f"Host vault\n  HostName 127.0.0.1\n  Port {far.port}\n  IdentityFile {far.key}\n"
            "  ProxyJump jumpbox\n"
            f"Host *\n  User {jump.user}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
            "  GlobalKnownHostsFile /dev/null\n"
        )
        yield Hops(jump, far, known, config)
    finally:
        jump.stop()
        far.stop()


def _make_tree(root: Path) -> None:
    (root / "media").mkdir(parents=True)
    (root / "media" / "large.bin").write_bytes(os.urandom(3 * MiB + 17))
    for i in range(12):
        (root / "media" / f"small-{i}.txt").write_text(f"file {i}\n" * (i + 1))


def _backup_and_restore(site: Site, url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_tree(src)
    site.write_config(paths=[src], targets=f'[[targets]]\nname = "remote"\nurl = "{url}"')
    site.run("init")
    site.run("backup")
    [snapshot] = site.snapshots()
    assert snapshot["target"] == "remote"
    out = tmp_path / "out"
    site.run("restore", snapshot["id"], "--to", out)
    assert tree_listing(restored(out, src)) == tree_listing(src)


def _accepted(server: SshServer) -> int:
    """How many logins the server's log records."""
    return (server.workdir / "sshd.log").read_text().count("Accepted publickey for")


def test_backup_and_restore_through_a_host_alias_that_jumps(
    site: Site, hops: Hops, tmp_path: Path
) -> None:
    before = _accepted(hops.jump), _accepted(hops.far)
    _backup_and_restore(site, hops.url(tmp_path / "vault-repo"), tmp_path)
    assert (tmp_path / "vault-repo" / "config").is_file()
    after = _accepted(hops.jump), _accepted(hops.far)
    # Every login to the far host went through the jump host (ProxyJump), none around it.
    assert after[1] > before[1]
    assert after[0] - before[0] == after[1] - before[1]


@pytest.mark.parametrize("changed", ["far", "jump"])
def test_a_changed_host_key_is_refused_naming_the_host_and_line(
    site: Site, hops: Hops, tmp_path: Path, changed: str
) -> None:
    impostor = _keygen(tmp_path / "impostor")
    lines = hops.known_hosts.read_text().splitlines(keepends=True)
    line = {"jump": 1, "far": 2}[changed]
    server = {"jump": hops.jump, "far": hops.far}[changed]
    lines[line - 1] = server.host_entry_for(impostor)
    known = tmp_path / "known_hosts"
    known.write_text("".join(lines))
    config = tmp_path / "ssh_config"
    config.write_text(hops.config.read_text().replace(str(hops.known_hosts), str(known)))

    repo = tmp_path / "vault-repo"
    url = f"sftp://vault{repo}?ssh_config={config}"
    site.write_config(paths=[tmp_path], targets=f'[[targets]]\nname = "remote"\nurl = "{url}"')
    proc = site.run("init", ok=False)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    [error] = errors
    assert "target remote:" in error and "does not match" in error, error
    assert f"[127.0.0.1]:{server.port}" in error, error
    assert f"{known} line {line}" in error, error
    assert "ssh-keygen -R" in error, error
    assert not repo.exists()


def test_a_jump_host_that_refuses_the_key_is_one_line(
    site: Site, hops: Hops, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    _keygen(stranger)
    config = tmp_path / "ssh_config"
    config.write_text(hops.config.read_text().replace(str(hops.jump.key), str(stranger)))
    repo = tmp_path / "vault-repo"
    url = f"sftp://vault{repo}?ssh_config={config}"
    site.write_config(paths=[tmp_path], targets=f'[[targets]]\nname = "remote"\nurl = "{url}"')
    proc = site.run("init", ok=False)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    assert "target remote:" in errors[0] and "refused user" in errors[0], errors
    assert not repo.exists()


def test_paramiko_still_backs_up_and_restores(
    site: Site, sftp_server: SshServer, tmp_path: Path
) -> None:
    _backup_and_restore(site, sftp_server.url(tmp_path / "remote-repo", ssh="paramiko"), tmp_path)
    assert (tmp_path / "remote-repo" / "config").is_file()


def test_the_client_options_of_the_url() -> None:
    assert SftpLocation.parse("sftp://h/b?ssh=paramiko", "t").client == "paramiko"
    assert SftpLocation.parse("sftp://h/b?ssh=openssh", "t").client == "openssh"
    # ssh is on PATH here: OpenSSH is the default.
    loc = SftpLocation.parse("sftp://h/b?ssh_config=~/cfg", "t")
    assert loc.client == "openssh" and loc.ssh_config == Path("~/cfg").expanduser()
    assert not loc.user_given and not loc.port_given and not loc.known_hosts_given
    for url, message in [
        ("sftp://h/b?ssh=putty", "ssh='putty'"),
        ("sftp://h/b?ssh=paramiko&ssh_config=/c", "ssh_config= is read by OpenSSH"),
        ("sftp://-oProxyCommand=x/b", "starts with '-'"),
    ]:
        with pytest.raises(UsageError, match=message):
            SftpLocation.parse(url, "t")
