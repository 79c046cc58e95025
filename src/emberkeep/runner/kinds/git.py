"""The git kind: a repository as one bundle of every ref, with a record of its refs.

Backed up as the bundle (then pushed to its mirror, whose failure only warns); restored
whole, by cloning the bundle into a new directory at the recorded HEAD; drilled by that
clone, the bundle's bytes verified, the refs compared and ``git fsck --full`` clean;
recovered in place over the config files already restored into the app's folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ... import clock
from ...config import GitSource, SourceConfig
from ...engine.backup import BackupResult, Progress, backup
from ...engine.fetch import read_in_order
from ...engine.restore import Restorer, RestoreResult
from ...engine.tree import Node, shown
from ...engine.verify import verify_tree
from ...engine.walk import file_problem, walk_tree
from ...errors import IntegrityError, UsageError
from ...fsutil import make_dirs
from ...redact import redact_url
from ...repository.repo import Repository
from ...repository.snapshot import Snapshot
from ...site import Site
from ...sources import git
from .base import DrillResult, OnFile, OnTotal, TreeKind, refused, scratch_dir


def _git(source: SourceConfig) -> GitSource:
    assert isinstance(source, GitSource), f"source {source.name} is not a git source"
    return source


class GitKind(TreeKind):
    source_type = "git"
    config = GitSource

    def backup(
        self, site: Site, source: SourceConfig, repo: Repository, *, tags: list[str] | None,
        progress: Progress | None,
    ) -> BackupResult:  # fmt: skip
        """The bundle into the target; then the mirror push, whose failure only warns."""
        src = _git(source)
        repository = git.GitRepo(src.name, src.path)
        record = repository.check()
        result = backup(
            repo,
            repository.events(record),
            source=src.name,
            source_type=src.type,
            paths=[str(src.path)],
            now=clock.now(),
            tags=tags,
            progress=progress,
        )
        if src.mirror:
            problem = git.push_mirror(src.path, src.mirror)
            if problem:
                result.warnings.append({"path": git.redact(src.mirror), "message": problem})
        return result

    def restore(
        self, repo: Repository, snapshot: Snapshot, dest: Path, paths: list[str], *,
        on_file: OnFile, on_total: OnTotal, in_place: bool,
    ) -> RestoreResult:  # fmt: skip
        return restore_git(repo, snapshot, dest, paths, on_file, in_place=in_place)

    def drill(
        self, site: Site, repo: Repository, snapshot: Snapshot, source: SourceConfig,
        result: DrillResult,
    ) -> None:  # fmt: skip
        scratch = scratch_dir(site)
        try:
            started = time.monotonic()
            restore_git(repo, snapshot, scratch / "repo", [], lambda path, size: None)
            result.phases["restore"] = result.rto_seconds = time.monotonic() - started
            started = time.monotonic()
            bundle_dir = scratch / "bundle"
            files = [f"/{git.BUNDLE}", f"/{git.RECORD}"]
            restored = Restorer(repo, bundle_dir).restore(snapshot, files)
            verified = verify_tree(repo, snapshot, bundle_dir)
            fsck = subprocess.run(
                ["git", "-C", str(scratch / "repo"), "fsck", "--full", "--no-progress"],
                capture_output=True,
                text=True,
            )
            result.phases["verify"] = time.monotonic() - started
            result.checked.append({"files": verified.files, "git_fsck": fsck.returncode == 0})
            if verified.differences:
                result.first_difference = str(verified.differences[0])
            elif fsck.returncode != 0:
                problem = (fsck.stderr or fsck.stdout).strip().splitlines()[:1]
                result.first_difference = f"git fsck of the restored repository: {problem}"
            refused(restored, result, snapshot)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def recover_destination(self, source: SourceConfig, root: Path | None) -> str:
        path = _git(source).path
        return str(root / str(path).lstrip("/") if root else path)

    def recover(
        self, site: Site, source: SourceConfig, snapshot_id: str, destination: str, target: str
    ) -> list[dict[str, str]]:
        dest = Path(destination)
        if (dest / ".git").exists():
            # a repository is there (a resumed or repeated recover): keep it aside, never lose it
            (dest / ".git").rename(dest / f".git.before-recover-{int(time.time())}")
        return super().recover(site, source, snapshot_id, destination, target)

    def describe(self, source: SourceConfig) -> str:

        src = _git(source)
        mirror = f", pushed to {redact_url(src.mirror)}" if src.mirror else ""
        return f"git {src.path}{mirror}"

    def runbook(self, source: SourceConfig, ek: str) -> list[str]:
        return [
            f"{ek} restore latest --source {source.name} --to /tmp/{source.name}-restored",
            f"# compare, then point the app at it or copy it over {_git(source).path}",
        ]


def restore_git(
    repo: Repository,
    snapshot: Snapshot,
    dest: Path,
    paths: list[str],
    on_file: OnFile,
    *,
    in_place: bool = False,
) -> RestoreResult:
    """Clone the snapshot's bundle into ``dest`` (new or empty) at the recorded HEAD.

    ``in_place``: ``dest`` may hold files but no ``.git``; the checkout writes the tracked
    files over it and leaves the others (ignored secrets, media) alone.

    ``git fetch`` needs the bundle as a file: it is written next to ``dest`` under a
    hidden temp name and removed afterwards. A failed restore removes what it made.
    """
    if paths:
        raise UsageError(f"snapshot {snapshot.short_id} is a git repository; it restores whole")
    if in_place and (dest / ".git").exists():
        raise UsageError(f"{dest} already holds a git repository; move its .git aside first")
    if not in_place and dest.exists() and any(dest.iterdir()):
        raise UsageError(f"--to {dest} is not empty; a git snapshot restores into a new directory")
    repo.require_identity("restore")
    nodes = {path: node for path, node in walk_tree(repo, snapshot.tree)}
    record = git.GitRecord.from_bytes(_content(repo, nodes, snapshot, git.RECORD))
    bundle = _node(repo, nodes, snapshot, git.BUNDLE)
    repo.prepare_read(bundle["content"])  # a cold target thaws the bundle's packs first
    created = not dest.exists()
    make_dirs(dest.parent)
    fd, tmp = tempfile.mkstemp(prefix=".emberkeep-", suffix=".bundle", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for data in read_in_order(repo, bundle["content"]):
                out.write(data)
            if out.tell() != bundle["size"]:
                raise IntegrityError(
                    f"/{git.BUNDLE}", f"{out.tell()} bytes, the snapshot says {bundle['size']}"
                )
        git.restore_bundle(Path(tmp), dest, record)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        os.unlink(tmp)
    on_file(f"/{git.BUNDLE}", bundle["size"])
    return RestoreResult(files=1, bytes=bundle["size"])


def _node(repo: Repository, nodes: dict[str, Node], snapshot: Snapshot, name: str) -> Node:
    """A file of a git snapshot's root, its content checked against its node first."""
    node = nodes.get(f"/{name}")
    if node is None or node["type"] != "file":
        raise IntegrityError(f"snapshot {snapshot.short_id}", f"a git snapshot without {name}")
    problem = file_problem(repo, node)
    if problem:
        raise IntegrityError(f"/{shown(name)}", problem)
    return node


def _content(repo: Repository, nodes: dict[str, Node], snapshot: Snapshot, name: str) -> bytes:
    return b"".join(read_in_order(repo, _node(repo, nodes, snapshot, name)["content"]))


KIND = GitKind()
