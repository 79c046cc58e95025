"""The files cache: unchanged files cost a stat, not a read.

One SQLite file per source in state_dir maps path -> (size, mtime, ctime, inode, ids, tag).
It is a hint, never trusted over the repository (README, "Deduplicated"): a cached entry
is used only when

- its ``tag`` verifies: a keyed BLAKE3 (key derived from the writer key) of the path, the
  stat fields and the ids, so a flipped bit anywhere in the row, or ids moved from one
  row to another, do not pass; and
- each of its blob ids is in the index this backup loaded (a lookup in memory, no I/O), so
  a blob pruned since, or an id damaged into one that no pack holds, is never referenced;

else the file is read again. A cache that cannot be opened or read (not an SQLite file,
truncated, another layout, a damaged page met mid-walk) is moved aside to
``<name>.damaged`` and rebuilt, with one warning. The new table is written by ``commit``
only after the snapshot commits, so a failed run leaves the previous cache; losing the
cache only costs time.

Rows are keyed by the path with ``/`` mapped to ``\\0``: that orders them exactly as the
walk visits files (depth-first, names in byte order), so one cursor read in step with
the walk answers every lookup, with no query per file and flat memory.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3

ID = 32
TAG = 16
VERSION = 3  # 3: rows carry a tag
TAG_CONTEXT = "emberkeep files cache 2026-11 row tag"
_STAT = struct.Struct("<IQqqQ")  # key length, size, mtime_ns, ctime_ns, inode
# SQLite result codes that mean the file is not a cache we can read: damaged, not SQLite,
# or of another layout (a missing table or column is SQLITE_ERROR). Others (busy, locked,
# full, I/O, read-only) say nothing about the file and leave it where it is.
_DAMAGE_CODES = frozenset(
    {sqlite3.SQLITE_ERROR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT}
)
_SELECT = "SELECT key, size, mtime, ctime, inode, ids, tag FROM files ORDER BY key"

Row = tuple[bytes, Any, Any, Any, Any, Any, Any]  # as read: any column may be damaged
_Row = tuple[bytes, int, int, int, int, bytes, bytes]  # as written


def walk_key(path: str) -> bytes:
    return os.fsencode(path).replace(b"/", b"\0")


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error says the file itself is unreadable (not busy, full, I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # no code: a type or shape the module itself found wrong
        return isinstance(exc, sqlite3.DatabaseError)
    return code & 0xFF in _DAMAGE_CODES


class FilesCache:
    """One source's cache; ``warnings`` says what was found damaged (one line each)."""

    def __init__(self, path: Path, writer_mac_key: bytes) -> None:
        self.path = path
        self.warnings: list[str] = []
        self.rejected = 0  # entries whose tag did not verify: damaged, re-read
        self._key = blake3.blake3(writer_mac_key, derive_key_context=TAG_CONTEXT).digest()
        self._db: sqlite3.Connection | None = None
        self._rows: Iterator[Row] = iter(())
        self._row: Row | None = None
        # What commit writes: a file read this run (its row is made at commit, once its ids
        # are known), or the row of a verified hit, kept as it is.
        self._seen: list[tuple[bytes, os.stat_result, list[bytes]] | _Row] = []
        self._hit: tuple[list[bytes], _Row] | None = None  # the last hit, for remember()
        self._fresh = 0  # files noted with a row of their own (not a hit kept as it was)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = self._open()
            self._rows = iter(self._db.execute(_SELECT))
            self._row = self._next()
        except sqlite3.Error as exc:
            self._unreadable(exc)

    # -- reading -------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path)
        try:
            os.chmod(self.path, 0o600)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != VERSION:  # an older layout: start afresh, it costs one slower run
                db.execute("DROP TABLE IF EXISTS files")
                db.execute("DROP TABLE IF EXISTS meta")
                db.execute(f"PRAGMA user_version = {VERSION}")
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (key BLOB PRIMARY KEY, size INTEGER, "
                "mtime INTEGER, ctime INTEGER, inode INTEGER, ids BLOB, tag BLOB) WITHOUT ROWID"
            )
        except BaseException:
            db.close()
            raise
        return db

    def _next(self) -> Row | None:
        """The next row whose key is a path; rows damaged into other types are skipped."""
        for row in self._rows:
            if isinstance(row[0], bytes):
                return row
            self.rejected += 1
        return None

    def _unreadable(self, exc: sqlite3.Error) -> None:
        """Stop reading; a damaged file is moved aside and a new one started (one warning)."""
        self._rows, self._row = iter(()), None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if not is_damage(exc):
            self._warn(f"cannot be read ({exc}); this backup reads every file again")
            return
        aside = self.path.with_name(self.path.name + ".damaged")
        try:
            os.replace(self.path, aside)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}-journal")  # a rollback journal of the damaged file
            self._db = self._open()
        except (OSError, sqlite3.Error) as again:
            self._warn(f"is damaged ({exc}) and could not be replaced ({again})")
            return
        self._warn(
            f"is damaged ({exc}): moved aside to {aside.name} and rebuilt; this backup "
            "reads every file again"
        )

    def _warn(self, text: str) -> None:
        if not self.warnings:  # one warning per run: the first problem explains the rest
            self.warnings.append(f"files cache {self.path} {text}")

    def problem(self) -> str | None:
        """One line for the run's warnings: what was found damaged, if anything."""
        if self.warnings:
            return self.warnings[0]
        if self.rejected:
            return (
                f"files cache {self.path}: {self.rejected} entries did not verify (damaged); "
                "their files were read again"
            )
        return None

    def _find(self, key: bytes) -> Row | None:
        try:
            while self._row is not None and self._row[0] < key:
                self._row = self._next()
        except sqlite3.Error as exc:  # a damaged page met mid-walk
            self._unreadable(exc)
        return self._row if self._row is not None and self._row[0] == key else None

    def _tag(self, key: bytes, st: os.stat_result, ids: bytes) -> bytes:
        fields = _STAT.pack(len(key), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        return blake3.blake3(key + fields + ids, key=self._key).digest(length=TAG)

    def lookup(
        self, path: str, st: os.stat_result, known: Callable[[bytes], bool]
    ) -> list[bytes] | None:
        """The ids stored for ``path`` if it is unchanged and they verify; in walk order."""
        key = walk_key(path)
        row = self._find(key)
        if row is None or row[1:5] != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return None
        raw, tag = row[5], row[6]
        if not (
            isinstance(raw, bytes)
            and isinstance(tag, bytes)
            and len(raw) % ID == 0
            and hmac.compare_digest(tag, self._tag(key, st, raw))
        ):
            self.rejected += 1
            return None
        ids = [raw[i : i + ID] for i in range(0, len(raw), ID)]
        if not all(map(known, ids)):
            return None
        self._hit = (ids, (key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, raw, tag))
        return ids

    # -- writing -------------------------------------------------------------------------

    def remember(self, path: str, st: os.stat_result, ids: list[bytes]) -> None:
        """Note a file for the next run; ``ids`` may still be filling in."""
        if self._hit is not None and self._hit[0] is ids:  # what lookup just gave: as it was
            self._seen.append(self._hit[1])
        else:
            self._seen.append((walk_key(path), st, ids))
            self._fresh += 1
        self._hit = None

    def commit(self) -> None:
        """Write the files noted for the next run, replacing the table.

        Raises ``sqlite3.Error`` or ``OSError`` (a full disk, most likely): the caller has
        committed its snapshot by then and reports it as a warning. A file found damaged
        only now is moved aside and the table written to a new one.
        """
        self._rows, self._row = iter(()), None
        try:
            if not self._unchanged():
                self._write()
        except sqlite3.Error as exc:
            if not is_damage(exc):
                raise
            self._unreadable(exc)
            self._write()
        self._seen.clear()
        self._fresh = 0

    def _unchanged(self) -> bool:
        """Whether the table would be written as it is: every file noted is a hit, a row
        read and verified from this table, and the table holds no other row (a file gone,
        a row rejected). A no-change backup of many files then skips rewriting them all."""
        if self._fresh or self._db is None or self.warnings:
            return False
        (rows,) = self._db.execute("SELECT COUNT(*) FROM files").fetchone()
        return bool(rows == len(self._seen))

    def _write(self) -> None:
        if self._db is None:
            self._db = self._open()
        rows = (seen if len(seen) == 7 else self._row_of(*seen) for seen in self._seen)
        with self._db:
            self._db.execute("DELETE FROM files")
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _row_of(self, key: bytes, st: os.stat_result, ids: list[bytes]) -> _Row:
        raw = b"".join(ids)
        tag = self._tag(key, st, raw)
        return (key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, raw, tag)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
