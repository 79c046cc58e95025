"""The import job: a stock ``mongodump`` (archive, gzipped or not, or folder) made into a
snapshot of a mongodb source, dated when the dump was made.

The user's existing dumps (the strategy's ``backup-db.sh``) then count like any backup of
the source: retention keeps or prunes them by their time, a drill restores and verifies
one, status sees them, and ``restore --to-uri`` or ``export`` brings one back. The snapshot
is written to the first target, as a backup's is (the CLI then copies it to the others).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..config import MongoSource
from ..engine.backup import Progress, backup
from ..errors import UsageError
from ..site import Site
from ..sources.mongodb.stockdump import ImportedDump, opened_dump
from .backup import SourceOutcome

IMPORT_TAG = "imported"


def import_source(site: Site, name: str | None) -> MongoSource:
    """The mongodb source a dump is imported into: ``name``, or the config's only one."""
    if name is not None:
        source = site.config.source(name)
        if not isinstance(source, MongoSource):
            raise UsageError(
                f"--source {name} is a {source.type} source; a mongodump imports into a "
                "mongodb source"
            )
        return source
    found = [s for s in site.config.sources if isinstance(s, MongoSource)]
    if len(found) != 1:
        names = ", ".join(s.name for s in found) or "none"
        raise UsageError(
            f"{site.config.path}: name the mongodb source to import into with --source "
            f"(mongodb sources: {names})"
        )
    return found[0]


def run_import(
    site: Site,
    path: Path,
    *,
    source: str | None = None,
    time: datetime | None = None,
    tags: list[str] | None = None,
    progress: Progress | None = None,
) -> SourceOutcome:
    """Store the dump at ``path`` as one snapshot of the source, dated ``time`` (default:
    when the dump was written), tagged ``imported``."""
    chosen = import_source(site, source)
    target = site.config.targets[0]
    repo = site.repository_to_write(target.name)
    with opened_dump(path, site.state_dir / "import") as contents:
        dump = ImportedDump(contents)
        when = time or contents.written_at
        assert when is not None
        result = backup(
            repo,
            dump.events(),
            source=chosen.name,
            source_type=chosen.type,
            paths=[str(path.resolve())],
            now=when,
            tags=sorted({IMPORT_TAG, *(tags or [])}),
            progress=progress,
            extra=dump.extra,
        )
    return SourceOutcome(chosen.name, target.name, result)
