"""The files kind: directories and files of the host, walked with their metadata.

Backed up through the files cache (a file unchanged since the last backup is not read
again); restored under a directory, whole or some paths; drilled by restoring into scratch
and comparing every entry and byte; recovered at / (or the recovery's root).
"""

from __future__ import annotations

from ... import clock
from ...config import FilesSource, SourceConfig
from ...engine.backup import BackupResult, Progress, backup
from ...engine.filescache import FilesCache
from ...repository.repo import Repository
from ...site import Site
from ...sources.files import FilesWalker, scan_size
from .base import TreeKind, state_dir_reason, warn_after_commit


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
        cache = FilesCache(
            site.state_dir / "cache" / f"{repo.writer_key.repo_id}-{files.name}.sqlite",
            repo.writer_key.mac_key,
        )
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
