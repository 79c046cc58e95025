"""Secrecy: no plaintext of a backed-up file, nor a file name, appears in the repository;
no password, token or secret key appears in what emberkeep shows."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from pathlib import Path

import pyrage
import pytest
from conftest import Site, restored, tree_listing

from emberkeep.redact import redact_text, redact_url

MiB = 1024 * 1024


def repository_files(repo: Path) -> dict[str, bytes]:
    """Every file under the repository (temp files and all), by relative path."""
    found = {}
    for dirpath, _dirs, files in os.walk(repo):
        for name in files:
            path = Path(dirpath) / name
            found[str(path.relative_to(repo))] = path.read_bytes()
    return found


def leaks(repo: Path, needles: dict[str, bytes]) -> list[str]:
    """Which needles appear in which repository file (or in a repository file's name)."""
    found = []
    for rel, data in repository_files(repo).items():
        for label, needle in needles.items():
            if needle in data or needle in os.fsencode(rel):
                found.append(f"{label} in {rel}")
    return found


def name_forms(name: str) -> list[bytes]:
    """The ways a name could be written down: raw bytes, and as JSON would escape it."""
    forms = [os.fsencode(name), json.dumps(name)[1:-1].encode()]
    forms.append(json.dumps(name, ensure_ascii=False)[1:-1].encode("utf-8", "surrogateescape"))
    return forms


def samples(data: bytes, width: int = 64, count: int = 256) -> list[bytes]:
    """``count`` windows of ``width`` bytes spread over data (at odd, unaligned offsets)."""
    step = max(1, (len(data) - width) // count)
    return [data[i : i + width] for i in range(7, len(data) - width, step)][:count]


def test_no_plaintext_contents_or_names_in_the_repository(site: Site, tmp_path: Path) -> None:
    marker = secrets.token_hex(8)
    root = tmp_path / f"topsecret-root-{marker}"
    env_line = f"DB_PASSWORD=hunter2-distinctive-{marker}\n"
    names = {
        "dir": f"zebra-secret-dirname-{marker}",
        "file": f"confidential-ledger-{marker}.xlsx",
        "unicode": f"Geheimnis-ü-秘密-{marker}.txt",
        "env": ".env.local",
        "link": f"pointer-{marker}",
        "big": f"payroll-archive-{marker}.bin",
    }
    link_target = f"/srv/hidden-target-{marker}/keys.pem"
    tiny = f"pin={marker[:6]}".encode()  # too short to compress: stored raw, must be encrypted
    small_random = os.urandom(64 * 1024)  # one blob
    big_random = os.urandom(3 * MiB)  # several chunks

    secret_dir = root / names["dir"]
    secret_dir.mkdir(parents=True)
    (root / names["env"]).write_text(env_line * 2000 + "STRIPE_KEY=sk_live_" + marker + "\n")
    (secret_dir / names["file"]).write_bytes(small_random)
    (secret_dir / names["unicode"]).write_bytes(tiny)
    (secret_dir / names["big"]).write_bytes(big_random)
    os.symlink(link_target, secret_dir / names["link"])

    site.write_config(paths=[root])
    site.run("init")
    site.run("backup", "--tag", "nightly")
    assert len(site.snapshots()) == 1

    needles: dict[str, bytes] = {
        "env line": env_line.encode(),
        "password": f"hunter2-distinctive-{marker}".encode(),
        "stripe key": f"sk_live_{marker}".encode(),
        "tiny file": tiny,
        "symlink target": link_target.encode(),
        "root path": str(root).encode(),
        "marker": marker.encode(),
    }
    for role, name in names.items():
        if role == "env":
            continue  # a common name; its contents are searched for instead
        for n, form in enumerate(name_forms(name)):
            needles[f"name {role} ({n})"] = form
    for n, window in enumerate(samples(small_random)):
        needles[f"small random file [{n}]"] = window
    for n, window in enumerate(samples(big_random)):
        needles[f"big random file [{n}]"] = window

    # the scan sees what is there (the repository's plaintext config), and nothing of ours
    assert leaks(site.repo, {"probe": b'"format"'}) == ["probe in config"]
    assert leaks(site.repo, needles) == []

    # the secrets round-trip, so the needles were really backed up
    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert tree_listing(restored(out, root)) == tree_listing(root)


def test_keys_are_private_and_never_stored_in_plaintext(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "file.txt").write_text("some data\n")
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")

    identity = site.identities[0]
    writer_key = site.state_dir / "writer.key"
    assert writer_key.is_file()
    assert stat.S_IMODE(os.stat(identity).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(writer_key).st_mode) == 0o600
    # nothing in the state dir (writer key, files cache with its file names) is readable by others
    for dirpath, dirs, files in os.walk(site.state_dir):
        for name in dirs + files:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            assert mode & 0o077 == 0, f"{name} has mode {mode:o}"
    assert stat.S_IMODE(os.stat(site.state_dir).st_mode) & 0o077 == 0

    # the repository holds the writer key, encrypted to the recipients (age format)
    wrapped = (site.repo / "keys" / "writer.age").read_bytes()
    assert wrapped.startswith(b"age-encryption.org/v1\n")
    assert wrapped.count(b"\n-> X25519 ") == len(site.recipients)

    key_text = writer_key.read_bytes()
    key = json.loads(key_text)
    secret_parts = {
        "writer key file": key_text,
        "mac key (base64)": key["mac_key"].encode(),
        "index key (base64)": key["index_key"].encode(),
        "mac key": base64.b64decode(key["mac_key"]),
        "index key": base64.b64decode(key["index_key"]),
        "mac key (hex)": base64.b64decode(key["mac_key"]).hex().encode(),
        "index key (hex)": base64.b64decode(key["index_key"]).hex().encode(),
    }
    identity_line = next(
        line for line in identity.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-")
    )
    secret_parts["identity"] = identity_line.encode()
    secret_parts["identity (lower case)"] = identity_line.lower().encode()
    assert leaks(site.repo, secret_parts) == []


# -- what is shown: URLs and messages without their secrets -----------------------------

PW = "S3cretPW"
HIDDEN_IN_URLS = [
    f"mongodb://backup:{PW}@db:27017/shop",
    f"mongodb://backup:pa/{PW}@db:27017/shop",  # an unescaped "/" in the password
    f"mongodb://backup:pa/{PW}@db1:27017,db2:27017/shop?replicaSet=rs0",
    f"mongodb://backup:a@b?{PW}#x@db/shop",  # "@", "?" and "#" unescaped as well
    f"mongodb://backup:{PW}@db/shop?authSource=admin&password={PW}",
    f"mongodb://db/shop?tlsCertificateKeyFilePassword={PW}&authSource=admin",
    f"smtp://alerts%40example.com:{PW}@mail:587?starttls=true",
    f"https://ci:{PW}@git.example.com/org/app.git",
    f"https://{PW}@github.com/org/app.git",  # a token as the user name
    f"https://hooks.example.com/hook?token={PW}",
    f"https://hooks.example.com/hook?a=1&access_token={PW}&b=2",
    f"s3://bucket/prefix?secret_key={PW}&region=eu",
    f"https://s3.example.com/b/k?X-Amz-Credential=AK%2F{PW}&X-Amz-Signature={PW}",
]


@pytest.mark.parametrize("url", HIDDEN_IN_URLS)
def test_redact_url_hides_passwords_and_tokens(url: str) -> None:
    shown = redact_url(url)
    assert PW not in shown, shown
    assert "***" in shown
    assert shown.split("://")[0] == url.split("://")[0]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://backup:pw@db:27017/shop", "mongodb://backup:***@db:27017/shop"),
        (
            "mongodb://u:pa/ss@h1,h2/db?authSource=admin",
            "mongodb://u:***@h1,h2/db?authSource=admin",
        ),
        ("sftp://backup-user@host/backups", "sftp://backup-user@host/backups"),
        ("file:///var/backups/x", "file:///var/backups/x"),
        (
            "s3://bucket/p?endpoint=https://s3.example.com",
            "s3://bucket/p?endpoint=https://s3.example.com",
        ),
        (
            "https://hooks.example.com/hook?token=abc&x=1",
            "https://hooks.example.com/hook?token=***&x=1",
        ),
        ("https://tok@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ],
)
def test_redact_url_keeps_what_is_not_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_hides_urls_and_identities_in_a_message() -> None:
    identity = str(pyrage.x25519.Identity.generate())
    message = (
        f"fatal: unable to access 'https://ci:{PW}@git.example.com/app.git/': 403\n"
        f"(got {identity!r}; also {identity.lower()}) and mongodb://u:a/{PW}@h/db."
    )
    shown = redact_text(message)
    for secret in (PW, identity, identity.lower()):
        assert secret not in shown, shown
    assert "git.example.com/app.git" in shown and "fatal: unable to access" in shown
    assert "AGE-SECRET-KEY-1" in shown  # says what was there, without the key
