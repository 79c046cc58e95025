"""Identities under a passphrase: `keygen --passphrase` writes the age scrypt format the
stock `age` CLI reads, and emberkeep reads it (passphrase from a file, or the terminal)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from conftest import Site, restored, tree_listing


def _through_a_terminal(argv: list[str], answer: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, typing ``answer`` at each passphrase prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execvpe(argv[0], argv, env)
    out, typed = b"", 0
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if out.lower().count(b"passphrase") > typed:
            os.write(fd, answer.encode() + b"\n")
            typed += 1
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def _keygen(tmp_path: Path, passphrase: str) -> tuple[Path, str]:
    secret = tmp_path / "pass.txt"
    secret.write_text(passphrase + "\n")
    secret.chmod(0o600)
    path = tmp_path / "identity.age"
    proc = subprocess.run(
        [sys.executable, "-m", "emberkeep", "keygen", "-o", str(path), "--passphrase-file",
         str(secret)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return path, proc.stdout.strip().splitlines()[-1]


def test_keygen_passphrase_is_read_by_stock_age_and_by_emberkeep(
    site: Site, tmp_path: Path
) -> None:
    identity, recipient = _keygen(tmp_path, "correct horse battery")
    data = identity.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert b"AGE-SECRET-KEY" not in data and recipient.encode() not in data
    assert (identity.stat().st_mode & 0o777) == 0o600

    code, out = _through_a_terminal(["age", "-d", str(identity)], "correct horse battery", {})
    assert code == 0, out
    assert f"# recipient: {recipient}" in out and "AGE-SECRET-KEY-1" in out

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(20_000))
    site.identities.append(identity)
    site.recipients.append(recipient)
    site.write_config([src], identity=identity)
    site.env["EMBERKEEP_IDENTITY_PASSPHRASE_FILE"] = str(tmp_path / "pass.txt")
    site.run("init")
    site.run("backup")
    site.run("restore", "latest", "--to", tmp_path / "out")
    assert tree_listing(restored(tmp_path / "out", src)) == tree_listing(src)

    # on a terminal, emberkeep asks
    env = {k: v for k, v in {**os.environ, **site.env}.items() if "PASSPHRASE" not in k}
    argv = [sys.executable, "-m", "emberkeep", "-c", str(site.config_path), "restore",
            "latest", "--to", str(tmp_path / "asked")]  # fmt: skip
    code, out = _through_a_terminal(argv, "correct horse battery", env)
    assert code == 0 and f"passphrase for identity file {identity}" in out, out
    assert tree_listing(restored(tmp_path / "asked", src)) == tree_listing(src)

    # a wrong one: one clear line, exit 2, naming the file
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not it\n")
    site.env["EMBERKEEP_IDENTITY_PASSPHRASE_FILE"] = str(wrong)
    proc = site.run("restore", "latest", "--to", tmp_path / "no", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert f"identity file {identity}: wrong passphrase" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    code, out = _through_a_terminal([*argv[:-1], str(tmp_path / "no2")], "not it", env)
    assert code == 2 and "wrong passphrase" in out, out

    # no terminal and no passphrase file: said so, exit 2
    del site.env["EMBERKEEP_IDENTITY_PASSPHRASE_FILE"]
    plain = {k: v for k, v in os.environ.items() if "PASSPHRASE" not in k}
    proc = subprocess.run(
        [*argv[:-1], str(tmp_path / "no3")], capture_output=True, text=True,
        env={**plain, **site.env}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2 and "EMBERKEEP_IDENTITY_PASSPHRASE_FILE" in proc.stderr


def test_keygen_passphrase_needs_a_terminal_or_a_file(tmp_path: Path) -> None:
    plain = {k: v for k, v in os.environ.items() if "PASSPHRASE" not in k}
    out = tmp_path / "id.age"
    proc = subprocess.run(
        [sys.executable, "-m", "emberkeep", "keygen", "-o", str(out), "--passphrase"],
        capture_output=True, text=True, env=plain, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2 and "no terminal" in proc.stderr, proc.stderr
    assert not out.exists()
    argv = [sys.executable, "-m", "emberkeep", "keygen", "-o", str(out), "--passphrase"]
    code, said = _through_a_terminal(argv, "typed on the terminal", plain)
    assert code == 0, said
    assert out.read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt ")
