"""A stock ``mongodump``'s output read as a mongodb snapshot's events, for ``emberkeep import``.

Three shapes are taken, each what mongo-tools' ``mongodump`` writes (``mongodump/prepare.go``,
``mongodump/mongodump.go``):

- ``--archive=FILE``, gzipped (``--gzip``) or not: one stream (``archive_read.ArchiveReader``)
  whose namespaces mongodump interleaves (``concurrent_collections`` at once). The snapshot
  holds each collection as one file, so the archive is first split into one spool file per
  namespace, in a private folder (0700) that is removed afterwards: an import needs room
  for the uncompressed dump there.
- ``--out=DIR`` (``DIR/<db>/<coll>.bson`` and ``.metadata.json``, ``.gz`` with ``--gzip``,
  ``DIR/oplog.bson`` with ``--oplog``, ``DIR/prelude.json``), or one database's folder of it
  (``DIR/<db>``, what ``mongorestore --db`` is pointed at): read in place.

Users and roles dumped with ``--dumpDbUsersAndRoles`` (``<db>/$admin.system.users.bson``,
``$admin.system.roles.bson``) keep their names: they are the snapshot's own. ``system.*``
collections and ``$admin.system.version`` are left out, as a dump by emberkeep leaves them
(each said in a warning).

The snapshot is the one a backup makes (``dump``'s layout): every ``.bson`` streams through
a ``DocDigest`` as it is stored, so the record (``record.DumpRecord``) holds the same counts
and digests a drill compares against; the oplog, when there is one, is the window a restore
replays, and its last entry is the point in time the snapshot is consistent at. The
snapshot's time is, unless given, when the dump was written: the archive's modification
time, or the newest of the folder's files.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast
from urllib.parse import unquote_plus

import bson
from bson import Timestamp

from ...clock import iso
from ...engine.events import (
    Enter,
    Event,
    Leave,
    Readable,
    Stream,
    Warning_,
    bytes_stream,
    made_node,
)
from ...errors import EmberkeepError, UsageError
from .archive import OPLOG_COLLECTION, OPLOG_DB, ArchiveError
from .archive_read import ArchiveReader
from .catalog import PRELUDE, SYSTEM_DATABASES, CollectionInfo
from .optime import ts_json
from .record import (
    OPLOG,
    RECORD,
    CollectionRecord,
    DocDigest,
    DumpRecord,
    OplogWindow,
    split_documents,
    whole_documents_length,
)
from .users import ROLES_FILE, USERS_FILE

GZIP_MAGIC = b"\x1f\x8b"
ARCHIVE_MAGIC = b"\x6d\xe2\x99\x81"
READ_BLOCK = 1 << 20
AUTH_FILES = {USERS_FILE: "users", ROLES_FILE: "roles"}
VERSION_FILE = "$admin.system.version.bson"  # mongodump writes it with the users; not kept


class DumpError(EmberkeepError):
    """The dump to import is not one, or is damaged: the message names the file."""


@dataclass
class Part:
    """One collection (or view) of the dump: its catalog entry and where its documents are."""

    info: CollectionInfo
    data: Path | None  # the .bson (or .bson.gz) file; None for a view


@dataclass
class DumpContents:
    """What a dump holds, found before anything is read."""

    origin: str  # the path given, for the record and messages
    kind: str  # "mongodump-archive" or "mongodump-dir"
    server_version: str = ""
    parts: dict[str, list[Part]] = field(default_factory=dict)  # db -> its collections
    auth: dict[str, dict[str, Path]] = field(default_factory=dict)  # db -> file name -> path
    oplog: Path | None = None
    left_out: list[str] = field(default_factory=list)
    written_at: datetime | None = None


# -- finding what is there -----------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC


def _open(path: Path) -> IO[bytes]:
    """``path`` for reading, decompressed when it is gzip (by its first bytes, not its name)."""
    if _is_gzip(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _component(name: str, what: str, origin: str) -> str:
    """A database or collection name that can be one name in the snapshot's tree."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise DumpError(
            f"{origin}: {what} {name!r} cannot be a file name in a snapshot (it holds '/', "
            "a NUL, or is empty or a dot name); restore it with mongorestore instead"
        )
    return name


@contextlib.contextmanager
def opened_dump(path: Path, spool_parent: Path) -> Iterator[DumpContents]:
    """The contents of the dump at ``path``; an archive is split into a spool under
    ``spool_parent`` first, which is removed when the block ends."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory; give a mongodump archive or folder")
    if path.is_dir():
        yield _directory(path, str(path))
        return
    spool_parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    spool = Path(tempfile.mkdtemp(prefix="import-", dir=spool_parent))
    try:
        yield _split_archive(path, spool)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _directory(root: Path, origin: str) -> DumpContents:
    """``mongodump --out`` output, or one database's folder of it."""
    contents = DumpContents(origin=origin, kind="mongodump-dir", written_at=_mtime(root))
    if _holds_collections(root):
        databases = {root.name: root}
        top = root.parent if (root.parent / PRELUDE).exists() else root
    else:
        databases = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
        top = root
    contents.server_version = _prelude_version(root) or _prelude_version(top)
    oplog = next((top / n for n in ("oplog.bson", "oplog.bson.gz") if (top / n).exists()), None)
    contents.oplog = oplog
    for name, folder in databases.items():
        if name in SYSTEM_DATABASES:
            contents.left_out.append(f"database {name}")
            continue
        _component(name, "database", origin)
        _database_folder(contents, name, folder)
    if not contents.parts:
        raise DumpError(
            f"{origin}: no collection found (no <db>/<collection>.metadata.json or .bson); "
            "give the folder mongodump --out wrote, or one database's folder in it"
        )
    newest = [p for parts in contents.parts.values() for p in parts if p.data is not None]
    stamps = [_mtime(p.data) for p in newest if p.data is not None]
    stamps += [_mtime(f) for f in (oplog,) if f is not None]
    contents.written_at = max(stamps, default=contents.written_at)
    return contents


def _holds_collections(folder: Path) -> bool:
    return any(_stem(p.name) is not None for p in folder.iterdir() if p.is_file())


def _stem(name: str) -> tuple[str, str] | None:
    """(escaped collection name, "bson" or "metadata") of a dump file name, else None."""
    for suffix, kind in ((".metadata.json", "metadata"), (".bson", "bson")):
        for tail in (suffix, suffix + ".gz"):
            if name.endswith(tail) and len(name) > len(tail):
                return name[: -len(tail)], kind
    return None


def _prelude_version(folder: Path) -> str:
    for name in (PRELUDE, PRELUDE + ".gz"):
        path = folder / name
        if path.is_file():
            try:
                with _open(path) as f:
                    return str(json.loads(f.read().decode()).get("ServerVersion", ""))
            except (OSError, ValueError, AttributeError) as exc:
                raise DumpError(f"{path}: not mongodump's prelude.json ({exc})") from exc
    return ""


def _database_folder(contents: DumpContents, db: str, folder: Path) -> None:
    files: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        plain = path.name.removesuffix(".gz")
        if plain in AUTH_FILES:
            contents.auth.setdefault(db, {})[plain] = path
            continue
        if plain == VERSION_FILE:
            continue
        found = _stem(path.name)
        if found is None or not path.is_file():
            if path.name not in (PRELUDE, PRELUDE + ".gz"):
                contents.left_out.append(f"{db}/{path.name} (not a mongodump file)")
            continue
        files.setdefault(found[0], {})[found[1]] = path
    parts = []
    for escaped, pair in sorted(files.items()):
        info = _collection_info(db, escaped, pair.get("metadata"), contents.origin)
        if info.name.startswith("system."):
            contents.left_out.append(f"{db}.{info.name}")
            continue
        data = pair.get("bson")
        if info.kind == "timeseries":
            raise DumpError(
                f"{contents.origin}: {db}.{info.name} is a timeseries collection, which "
                "import does not take; restore this dump with mongorestore"
            )
        parts.append(Part(info, None if info.kind == "view" else data))
    if parts:
        contents.parts[db] = parts


def _collection_info(db: str, escaped: str, metadata: Path | None, origin: str) -> CollectionInfo:
    name = unquote_plus(escaped)  # mongodump's url.QueryEscape of the name
    if metadata is None:
        return CollectionInfo(db=db, name=_component(name, "collection", origin), kind="collection")
    with _open(metadata) as f:
        return _parse_metadata(db, name, f.read(), str(metadata))


def _parse_metadata(db: str, name: str, data: bytes, where: str) -> CollectionInfo:
    from bson import json_util
    from bson.json_util import CANONICAL_JSON_OPTIONS

    try:
        meta = json_util.loads(data.decode(), json_options=CANONICAL_JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise DumpError(f"{where}: not a mongodump metadata.json ({exc})") from exc
    if not isinstance(meta, dict):
        raise DumpError(f"{where}: not a mongodump metadata.json (not an object)")
    real = meta.get("collectionName") or name
    return CollectionInfo(
        db=db,
        name=_component(str(real), "collection", where),
        kind=str(meta.get("type") or "collection"),
        options=dict(meta.get("options") or {}),
        uuid=meta.get("uuid"),
        indexes=[dict(i) for i in meta.get("indexes") or []],
    )


# -- an archive, split into a spool --------------------------------------------------------


def _split_archive(path: Path, spool: Path) -> DumpContents:
    """Every namespace of the archive into a file of its own under ``spool``; the archive's
    framing and CRCs are checked on the way (``ArchiveReader``)."""
    contents = DumpContents(origin=str(path), kind="mongodump-archive", written_at=_mtime(path))
    handles: dict[tuple[str, str], BinaryIO] = {}
    files: dict[tuple[str, str], Path] = {}
    try:
        with _open(path) as raw:
            try:
                reader = ArchiveReader(raw)
                contents.server_version = str(reader.header.get("server_version", ""))
                for item in reader.items():
                    key = (item.db, item.collection)
                    if item.kind == "eof":
                        handle = handles.pop(key, None)
                        if handle is not None:
                            handle.close()
                        continue
                    out = handles.get(key)
                    if out is None:
                        files[key] = spool / f"ns{len(files):05d}.bson"
                        out = handles[key] = files[key].open("ab")
                    if item.kind == "document":
                        out.write(item.document)
            except ArchiveError as exc:
                raise DumpError(f"{path}: {exc}") from exc
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise DumpError(f"{path}: cannot be read as a mongodump archive: {exc}") from exc
    finally:
        for handle in handles.values():
            handle.close()
    _archive_parts(contents, reader.metadata, files)
    return contents


def _archive_parts(
    contents: DumpContents,
    metadata: dict[tuple[str, str], dict[str, Any]],
    files: dict[tuple[str, str], Path],
) -> None:
    origin = contents.origin
    contents.oplog = files.get((OPLOG_DB, OPLOG_COLLECTION))
    for (db, collection), entry in sorted(metadata.items()):
        if (db, collection) == (OPLOG_DB, OPLOG_COLLECTION):
            continue
        if db in SYSTEM_DATABASES:
            contents.left_out.append(f"{db}.{collection}")
            continue
        _component(db, "database", origin)
        if f"{collection}.bson" in AUTH_FILES:
            data = files.get((db, collection))
            if data is not None:
                contents.auth.setdefault(db, {})[f"{collection}.bson"] = data
            continue
        if f"{collection}.bson" == VERSION_FILE:
            continue
        where = f"{origin}: {db}.{collection}"
        info = _parse_metadata(db, collection, entry["metadata"].encode(), where)
        if info.name.startswith("system."):
            contents.left_out.append(f"{db}.{info.name}")
            continue
        if entry["type"] == "timeseries" or info.kind == "timeseries":
            raise DumpError(
                f"{origin}: {db}.{collection} is a timeseries collection, which import does "
                "not take; restore this archive with mongorestore"
            )
        data = None if info.kind == "view" else files.get((db, collection))
        contents.parts.setdefault(db, []).append(Part(info, data))
    if not contents.parts:
        raise DumpError(f"{origin}: the archive holds no collection of a user database")


# -- the snapshot's events -----------------------------------------------------------------


class _Documents:
    """A dump file's BSON documents as a stream for the engine, each whole document fed to
    ``digest`` as it passes; anything that is not whole BSON documents is an error naming
    the file."""

    def __init__(
        self,
        path: Path,
        name: str,
        digest: DocDigest,
        on_block: Callable[[bytes], None] = lambda block: None,
    ) -> None:
        self.path = path
        self.name = name
        self.digest = digest
        self.on_block = on_block
        self.source = _open(path)
        self._rest = b""
        self._out = memoryview(b"")

    def readinto(self, buf: Any) -> int:
        while not self._out:
            block = self._read_block()
            if block is None:
                return 0
            self._out = memoryview(block)
        n = min(len(buf), len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _read_block(self) -> bytes | None:
        """The next run of whole documents (digested), or None at a clean end."""
        while True:
            try:
                block = self.source.read(READ_BLOCK)
            except (OSError, EOFError) as exc:
                raise DumpError(f"{self.path}: cannot be read: {exc}") from exc
            data = self._rest + block if self._rest else block
            if not block:
                if data:
                    raise DumpError(
                        f"{self.path}: ends inside a BSON document ({len(data)} bytes left); "
                        f"the dump of {self.name} is truncated"
                    )
                return None
            try:
                used = whole_documents_length(data)
            except ValueError as exc:
                raise DumpError(f"{self.path}: not BSON documents: {exc}") from exc
            self._rest = bytes(data[used:])
            if used:
                whole = bytes(data[:used])
                self.digest.add(whole)
                self.on_block(whole)
                return whole

    def close(self) -> None:
        self.source.close()


class ImportedDump:
    """The events of one imported dump; ``extra`` is filled for the snapshot header as
    they end (as ``dump.MongoDump`` does for a backup)."""

    def __init__(self, contents: DumpContents) -> None:
        self.contents = contents
        self.extra: dict[str, Any] = {}
        self.record = DumpRecord(server_version=contents.server_version)
        self.digests: dict[tuple[str, str], DocDigest] = {}
        self.oplog_first: Timestamp | None = None
        self.oplog_last: Timestamp | None = None

    def events(self) -> Iterator[Event]:
        contents = self.contents
        databases = sorted(contents.parts)
        self.record.databases = databases
        for what in contents.left_out:
            yield Warning_(what, "not imported (emberkeep keeps user databases' collections)")
        for db in databases:
            yield Enter(made_node(db, "dir"))
            for part in contents.parts[db]:
                info = part.info
                yield bytes_stream(made_node(f"{info.name}.metadata.json"), info.metadata_json())
                if part.data is not None:
                    digest = self.digests[(db, info.name)] = DocDigest()
                    yield self._stream(f"{info.name}.bson", part.data, info.ns, digest)
                elif info.has_documents:  # mongodump always writes the .bson: a lost file
                    raise DumpError(f"{contents.origin}: {info.ns} has metadata but no .bson file")
            for name, path in sorted(contents.auth.get(db, {}).items()):
                digest = self.digests[(db, name)] = DocDigest()
                yield self._stream(name, path, f"{db} {AUTH_FILES[name]}", digest)
            yield Leave()
        if contents.oplog is not None:
            yield Stream(made_node(OPLOG), lambda: self._oplog_stream())
        self._finish_record()
        yield bytes_stream(made_node(RECORD), self.record.to_bytes())

    def _stream(self, name: str, path: Path, label: str, digest: DocDigest) -> Stream:
        @contextlib.contextmanager
        def opened() -> Iterator[Readable]:
            reader = _Documents(path, label, digest)
            try:
                yield reader
            finally:
                reader.close()

        return Stream(made_node(name), opened)

    @contextlib.contextmanager
    def _oplog_stream(self) -> Iterator[Readable]:
        """The oplog's documents, its first and last ``ts`` noted (the window)."""
        assert self.contents.oplog is not None
        digest = self.digests[("", "oplog")] = DocDigest()
        reader = _Documents(self.contents.oplog, "the oplog", digest, self._note_window)
        try:
            yield reader
        finally:
            reader.close()

    def _note_window(self, block: bytes) -> None:
        docs, _ = split_documents(block)
        if self.oplog_first is None:
            self.oplog_first = _ts(docs[0])
        self.oplog_last = _ts(docs[-1]) or self.oplog_last

    def _auth_count(self, name: str) -> int:
        return sum(d.count for (_db, file), d in self.digests.items() if file == name)

    def _finish_record(self) -> None:
        record, contents = self.record, self.contents
        for db in record.databases:
            for part in contents.parts[db]:
                digest = self.digests.get((db, part.info.name), DocDigest())
                record.collections.append(
                    CollectionRecord(
                        db=db,
                        name=part.info.name,
                        type=part.info.kind,
                        count=digest.count,
                        bytes=digest.bytes,
                        digest=digest.hexdigest if part.data is not None else "",
                    )
                )
        record.users = self._auth_count(USERS_FILE)
        record.roles = self._auth_count(ROLES_FILE)
        record.users_and_roles = (
            "dumped"
            if contents.auth
            else "not in the imported dump (mongodump keeps them with --dumpDbUsersAndRoles)"
        )
        record.imported_from = {"path": contents.origin, "format": contents.kind}
        if contents.oplog is not None:
            record.point_in_time = True
            entries = self.digests[("", "oplog")].count
            record.oplog = OplogWindow(
                start=ts_json(self.oplog_first), end=ts_json(self.oplog_last), entries=entries
            )
            if self.oplog_last is not None:
                record.consistent_at = iso(self.oplog_last.as_datetime())
        else:
            record.not_point_in_time_because = (
                "imported from a mongodump made without --oplog: documents are as each "
                "collection was read"
            )
        self.extra["mongodb"] = record.header_extra()


def _ts(raw: bytes) -> Timestamp | None:
    try:
        value = bson.decode(raw).get("ts")
    except (bson.errors.BSONError, ValueError):
        return None
    return value if isinstance(value, Timestamp) else None


def file_size(path: Path) -> int:
    """Bytes of the dump on disk (a folder: its files), for a progress bar's total."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
