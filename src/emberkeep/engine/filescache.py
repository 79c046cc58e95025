"""The files cache: unchanged files cost a stat, not a read.

One SQLite file per source in state_dir maps path -> (size, mtime, ctime, inode, ids).
A file whose stat matches and whose blobs are all still in the repository is taken
from the cache. The new table is written only after the snapshot commits, so a failed
run leaves the previous cache; losing the cache only costs time.

Checking that a cached file's blobs are still indexed costs a lookup per blob. The cache
records which index files existed when it was written; while every one of them still
exists and prune has condemned nothing, no pack can have been deleted since (prune
deletes packs only after replacing the index files that list them), so the check is
skipped.

Rows are keyed by the path with ``/`` mapped to ``\\0``: that orders them exactly as the
walk visits files (depth-first, names in byte order), so one cursor read in step with
the walk answers every lookup, with no query per file and flat memory.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

ID = 32
Row = tuple[bytes, int, int, int, int, bytes]


def walk_key(path: str) -> bytes:
    return os.fsencode(path).replace(b"/", b"\0")


class FilesCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path)
        os.chmod(path, 0o600)
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != 2:  # an older layout: start afresh, it only costs one slower run
            self._db.execute("DROP TABLE IF EXISTS files")
            self._db.execute("PRAGMA user_version = 2")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS files (key BLOB PRIMARY KEY, size INTEGER, "
            "mtime INTEGER, ctime INTEGER, inode INTEGER, ids BLOB) WITHOUT ROWID"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self.trusted = False
        self._rows: Iterator[Row] = iter(
            self._db.execute("SELECT key, size, mtime, ctime, inode, ids FROM files ORDER BY key")
        )
        self._row: Row | None = next(self._rows, None)
        self._seen: list[tuple[bytes, os.stat_result, list[bytes]]] = []

    def _find(self, key: bytes) -> Row | None:
        while self._row is not None and self._row[0] < key:
            self._row = next(self._rows, None)
        return self._row if self._row is not None and self._row[0] == key else None

    def trust(self, index_names: set[str], anything_condemned: bool) -> None:
        """Skip per-blob checks when the repository cannot have lost a cached blob."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'index_files'").fetchone()
        recorded = set(json.loads(row[0])) if row else None
        self.trusted = recorded is not None and not anything_condemned and recorded <= index_names

    def lookup(
        self, path: str, st: os.stat_result, known: Callable[[bytes], bool]
    ) -> list[bytes] | None:
        """The ids stored for ``path`` if it is unchanged; call in walk order."""
        row = self._find(walk_key(path))
        if row is None or row[1:5] != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return None
        raw = row[5]
        ids = [raw[i : i + ID] for i in range(0, len(raw), ID)]
        return ids if self.trusted or all(known(i) for i in ids) else None

    def remember(self, path: str, st: os.stat_result, ids: list[bytes]) -> None:
        """Note a file for the next run; ``ids`` may still be filling in."""
        self._seen.append((walk_key(path), st, ids))

    def commit(self, index_names: set[str]) -> None:
        self._rows = iter(())
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('index_files', ?)",
                (json.dumps(sorted(index_names)),),
            )
            self._db.execute("DELETE FROM files")
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (k, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, b"".join(ids))
                    for k, s, ids in self._seen
                ),
            )
        self._seen.clear()

    def close(self) -> None:
        self._db.close()
