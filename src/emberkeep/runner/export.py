"""The export job: a snapshot written out in a format another tool reads.

- ``mongodump-dir``: a mongodb snapshot as the directory ``mongodump --out`` makes
  (``<db>/<coll>.bson``, ``<db>/<coll>.metadata.json``, ``oplog.bson``, and
  ``prelude.json`` with the server's version, as mongo-tools 100.12+ writes it), for
  ``mongorestore --oplogReplay DIR``.
- ``mongodump-archive``: the same as one ``mongodump --archive`` file, for
  ``mongorestore --archive=FILE --oplogReplay``.
- ``tar``: any snapshot as a pax tar file.

Files appear under their final name only when complete (temp name, fsync, rename).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..engine.restore import Restorer
from ..engine.tarball import write_tar
from ..engine.tree import Node
from ..engine.walk import walk_tree
from ..errors import IntegrityError, UsageError
from ..fsutil import atomic_output, write_atomic
from ..repository.repo import Repository
from ..repository.snapshot import Snapshot
from ..site import Site
from ..sources.mongodb import snapshotfiles
from ..sources.mongodb.archive import ArchiveCollection, write_archive
from ..sources.mongodb.catalog import PRELUDE
from ..sources.mongodb.record import OPLOG, RECORD, DumpRecord

FORMATS = ("mongodump-dir", "mongodump-archive", "tar")


@dataclass
class ExportResult:
    format: str
    to: str
    files: int
    bytes: int
    refused: list[dict[str, str]] = field(default_factory=list)  # left out: path, reason

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "to": self.to,
            "files": self.files,
            "bytes": self.bytes,
            "refused": self.refused,
        }


def run_export(
    site: Site,
    spec: str,
    fmt: str,
    dest: Path,
    *,
    target: str | None = None,
    source: str | None = None,
    on_file: Callable[[str, int], None] = lambda path, size: None,
    on_total: Callable[[int], None] = lambda size: None,
) -> tuple[Snapshot, ExportResult]:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    repo = site.repository(target, read=True)
    snapshot = site.find_snapshot(repo, spec, source)
    if fmt != "tar" and snapshot.source_type != "mongodb":
        raise UsageError(
            f"--format {fmt} is for mongodb snapshots; snapshot {snapshot.short_id} is of "
            f"type {snapshot.source_type}: use --format tar"
        )
    on_total(int(snapshot.summary.get("bytes", 0)))
    if fmt == "mongodump-dir":
        return snapshot, _mongodump_dir(repo, snapshot, dest, on_file)
    if dest.is_dir():
        raise UsageError(f"--to {dest} is a directory; give the file to write")
    refused: list[dict[str, str]] = []
    with atomic_output(dest) as out:
        if fmt == "tar":
            files, size, refused = write_tar(repo, snapshot, out, on_file=on_file)
        else:
            files, size = _mongodump_archive(repo, snapshot, out, on_file)
    return snapshot, ExportResult(fmt, str(dest), files, size, refused)


def _mongodump_dir(
    repo: Repository, snapshot: Snapshot, dest: Path, on_file: Callable[[str, int], None]
) -> ExportResult:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"--to {dest} exists and is not an empty directory")
    top = dict(walk_tree_top(repo, snapshot))
    record = DumpRecord.from_bytes(snapshotfiles.content(repo, top[f"/{RECORD}"]))
    # no oplog.bson from a server without an oplog: mongodump writes it only with --oplog
    left_out = {f"/{RECORD}"} | ({f"/{OPLOG}"} if not record.point_in_time else set())
    tops = [path for path in top if path not in left_out]
    result = Restorer(repo, dest, on_file=on_file).restore(snapshot, tops)
    write_atomic(dest / PRELUDE, _prelude(record), mode=0o600)
    return ExportResult("mongodump-dir", str(dest), result.files + 1, result.bytes, result.refused)


def _prelude(record: DumpRecord) -> bytes:
    """``prelude.json`` as mongodump writes it (``mongodump.go`` ``DumpPreludeMetadata``:
    Go's ``json.Marshal`` of ``{ServerVersion, ToolVersion}``)."""
    data = {
        "ServerVersion": record.server_version or "0.0.0",
        "ToolVersion": f"emberkeep {__version__}",
    }
    return json.dumps(data, separators=(",", ":")).encode()


def walk_tree_top(repo: Repository, snapshot: Snapshot) -> list[tuple[str, Node]]:
    """The snapshot's valid root entries (the restore reports the others)."""
    from ..engine.tree import BadTree, decode_listing

    try:
        listing = decode_listing(repo.read_tree(snapshot.tree))
    except BadTree as exc:
        raise IntegrityError(f"snapshot {snapshot.short_id}", f"its root: {exc}") from exc
    return [(f"/{n['name']}", n) for n in listing.nodes]


def _mongodump_archive(
    repo: Repository, snapshot: Snapshot, out: Any, on_file: Callable[[str, int], None]
) -> tuple[int, int]:
    nodes = {path: node for path, node in walk_tree(repo, snapshot.tree)}
    if nodes.get(f"/{RECORD}", {}).get("type") != "file":
        raise IntegrityError(
            f"snapshot {snapshot.short_id}", f"a mongodb snapshot without {RECORD}"
        )
    record = DumpRecord.from_bytes(snapshotfiles.content(repo, nodes[f"/{RECORD}"]))
    dumped = list(snapshotfiles.dumped_collections(repo, nodes))
    collections = [
        ArchiveCollection(
            db=c.info.db,
            collection=c.info.name,
            metadata_json=c.metadata.decode(),
            documents=_reader(repo, c.data, c.info.ns, on_file),
            kind=c.info.kind,
        )
        for c in dumped
    ]
    oplog = nodes.get(f"/{OPLOG}")
    write_archive(
        out,
        collections,
        server_version=record.server_version or "0.0.0",
        oplog=_reader(repo, oplog, "oplog", on_file) if oplog and oplog["content"] else None,
    )
    total = sum(int(c.data["size"]) for c in dumped if c.data is not None)
    total += int(oplog["size"]) if oplog else 0
    return len(collections), total


def _reader(
    repo: Repository, node: Node | None, name: str, on_file: Callable[[str, int], None]
) -> Callable[[], Iterable[bytes]]:
    if node is None:
        return lambda: ()
    return lambda: snapshotfiles.documents(repo, node, name, on_file)
