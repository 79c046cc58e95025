"""The files kind: directories and files of the host, walked with their metadata.

Backed up through the files cache (a file unchanged since the last backup is not read
again); restored under a directory, whole or some paths; drilled by restoring into scratch
and comparing every entry and byte; recovered at / (or the recovery's root).
"""

from __future__ import annotations

from pathlib import Path

from ... import clock
from ...config import FilesSource, SourceConfig
from ...engine.backup import BackupResult, Progress, backup
from ...engine.filescache import FilesCache
from ...repository.repo import Repository
from ...site import Site
from ...sources.files import FilesWalker, scan_size
from .base import TreeKind, state_dir_reason, warn_after_commit


def files_cache_path(site: Site, repo: Repository, source: str) -> Path:
    """One cache per repository, source and writer key generation: what a cache built
    under a retired key names must never pass for data of the new one (a rotation's
    next backup reads and uploads everything again, docs/design.md)."""
    key = repo.writer_key
    generation = f"-g{key.generation}" if key.generation > 1 else ""
    return site.state_dir / "cache" / f"{key.repo_id}{generation}-{source}.sqlite"


def _files(source: SourceConfig) -> FilesSource:
    assert isinstance(source, FilesSource), f"source {source.name} is not a files source"
    return source


class FilesKind(TreeKind):
    source_type = "files"
    config = FilesSource

    def backup(
        self, site: Site, source: SourceConfig, repo: Repository, *, tags: list[str] | None,
        progress: Progress | None,
    ) -> BackupResult:  # fmt: skip
        files = _files(source)
        walker = FilesWalker(files.paths, files.exclude)
        walker.check_paths()
        cache = FilesCache(files_cache_path(site, repo, files.name), repo.writer_key.mac_key)
        try:
            result = backup(
                repo,
                walker.walk(),
                source=files.name,
                source_type=files.type,
                paths=walker.roots,
                now=clock.now(),
                tags=tags,
                cache=cache,
                progress=progress,
            )
            try:
                cache.commit()
            except Exception as exc:
                warn_after_commit(
                    result,
                    str(cache.path),
                    "the files cache was not saved (the next backup reads every file again)",
                    state_dir_reason(site, exc),
                )
        finally:
            cache.close()
        return result

    def scan_size(self, source: SourceConfig) -> int | None:
        files = _files(source)
        return scan_size(files.paths, files.exclude)

    def describe(self, source: SourceConfig) -> str:
        return "files " + ", ".join(str(p) for p in _files(source).paths)


KIND = FilesKind()
