"""`emberkeep demo`: the whole main job on a generated site, through the real CLI.

Steps: generate the site, keygen, write a config, init, backup (twice: the second is
nearly free), snapshots, check --read-data, restore, and compare the restore with the
original byte for byte and in metadata.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

from .. import ui
from ..errors import EmberkeepError, UsageError
from .sitegen import DemoSite, generate

MARKER = ".emberkeep-demo"


def prepare_dir(folder: Path) -> None:
    """Start from an empty demo folder; never wipe a folder the demo did not make."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise UsageError(f"{folder} exists and was not made by the demo; choose another --dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by emberkeep demo; safe to delete\n")


def write_config(folder: Path, site: DemoSite, recipient: str, identity: Path) -> Path:
    config = folder / "emberkeep.toml"
    media, (env_local, server_env, nginx) = site.media, site.config_files
    config.write_text(
        f"""# The demo shop's emberkeep config (DESIGN.md config contract).
[site]
name = "candle-ecommerce-demo"
state_dir = "{folder / "state"}"

[keys]
recipients = ["{recipient}"]
identity_file = "{identity}"

[[sources]]
name = "media"
type = "files"
paths = ["{media}"]
exclude = ["*.tmp"]
schedule = "30 2 * * *"
retention = {{ daily = 30 }}
objectives = {{ rpo = "24h", rto = "4h" }}

[[sources]]
name = "config"
type = "files"
paths = ["{env_local}", "{server_env}", "{nginx}", "{site.nginx_enabled}"]
schedule = "0 3 * * 0"
retention = {{ weekly = 26 }}
objectives = {{ rpo = "7d", rto = "15m" }}

[[sources]]
name = "code"
type = "git"
path = "{site.app}"
objectives = {{ rpo = "24h", rto = "30m" }}

[[targets]]
name = "local"
url = "file://{folder / "backups"}"
"""
    )
    return config


def _refs(repo: Path) -> str:
    """Every ref with its object, and where HEAD points: what a restore must bring back."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout

    return git("for-each-ref", "--format=%(objectname) %(refname)") + git("symbolic-ref", "HEAD")


def tree_digest(root: Path) -> dict[str, tuple[object, ...]]:
    """Content, mode and mtime of ``root`` and everything under it."""
    found: dict[str, tuple[object, ...]] = {}
    if root.is_file() and not root.is_symlink():
        st = os.lstat(root)
        digest = hashlib.sha256(root.read_bytes()).hexdigest()
        found[root.name] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                detail: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            else:
                detail = "dir"
            found[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, detail)
    return found


def run_demo(folder: Path, *, media_files: int = 300) -> int:
    from ..cli import main as cli

    folder = folder.resolve()
    prepare_dir(folder)
    step = _Steps()
    step("generate a demo shop under " + str(folder / "site"))
    site = generate(folder / "site", media_files=media_files)
    identity = folder / "identity.txt"
    step("emberkeep keygen: an identity for the admin (kept offline in real life)")
    from ..runner.setup import keygen

    recipient = keygen(identity)
    ui.line(f"  recipient {recipient}")
    config = str(write_config(folder, site, recipient, identity))
    ui.line(f"  config written to {config}")

    def emberkeep(*args: str) -> None:
        ui.line(f"$ emberkeep -c {config} {' '.join(args)}", style="dim")
        code = cli(["-c", config, *args])
        if code != 0:
            raise EmberkeepError(f"demo step `emberkeep {' '.join(args)}` failed (exit {code})")

    step("init the repository")
    emberkeep("init")
    step("first backup of every source")
    emberkeep("backup")
    step("second backup: unchanged files come from the files cache, nearly free")
    emberkeep("backup")
    step("list snapshots")
    emberkeep("snapshots")
    step("check, reading and decrypting every pack")
    emberkeep("check", "--read-data")
    step("restore the latest media and config snapshots and compare with the originals")
    restored = folder / "restored"
    emberkeep("restore", "latest", "--source", "media", "--to", str(restored))
    emberkeep("restore", "latest", "--source", "config", "--to", str(restored))
    compared = 0
    for original in (site.media, *site.config_files, site.nginx_enabled):
        copy = restored / str(original).lstrip("/")
        if tree_digest(original) != tree_digest(copy):
            raise EmberkeepError(f"restore differs from the original under {original}")
        compared += len(tree_digest(original))
    ui.line(f"{compared} entries, content, modes and mtimes", label="  identical: ", style="green")
    step("restore the application code (every branch and tag) and compare its refs")
    code = folder / "restored-code"
    emberkeep("restore", "latest", "--source", "code", "--to", str(code))
    if _refs(site.app) != _refs(code):
        raise EmberkeepError("the restored repository's refs differ from the original's")
    ui.line(f"{len(_refs(code).splitlines())} refs and HEAD", label="  identical: ", style="green")
    step(f"done in {time.monotonic() - step.started:.1f}s; everything is under {folder}")
    return 0


class _Steps:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.n = 0

    def __call__(self, text: str) -> None:
        self.n += 1
        ui.line(f"\n{self.n}. {text}", style="bold cyan")
