"""The files cache: unchanged files cost a stat, not a read.

One SQLite file per source in state_dir maps path -> (size, mtime, ctime, inode, ids).
A file whose stat matches and whose blobs are all still in the repository is taken
from the cache. The new table is written only after the snapshot commits, so a failed
run leaves the previous cache; losing the cache only costs time.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

ID = 32


class FilesCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path)
        os.chmod(path, 0o600)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, "
            "mtime INTEGER, ctime INTEGER, inode INTEGER, ids BLOB)"
        )
        self._seen: list[tuple[str, os.stat_result, list[bytes]]] = []

    def lookup(
        self, path: str, st: os.stat_result, known: Callable[[bytes], bool]
    ) -> list[bytes] | None:
        row = self._db.execute(
            "SELECT size, mtime, ctime, inode, ids FROM files WHERE path = ?", (os.fsencode(path),)
        ).fetchone()
        if row is None or tuple(row[:4]) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return None
        raw: bytes = row[4]
        ids = [raw[i : i + ID] for i in range(0, len(raw), ID)]
        return ids if all(known(i) for i in ids) else None

    def remember(self, path: str, st: os.stat_result, ids: list[bytes]) -> None:
        """Note a file for the next run; ``ids`` may still be filling in."""
        self._seen.append((path, st, ids))

    def commit(self) -> None:
        with self._db:
            self._db.execute("DELETE FROM files")
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        os.fsencode(p),
                        s.st_size,
                        s.st_mtime_ns,
                        s.st_ctime_ns,
                        s.st_ino,
                        b"".join(ids),
                    )
                    for p, s, ids in self._seen
                ),
            )
        self._seen.clear()

    def close(self) -> None:
        self._db.close()
