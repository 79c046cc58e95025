"""The files cache (engine/filescache.py) rewrites its table only when a run changed it: a
no-change backup of many files skips writing every row again, and any difference (a file
gone, a file changed, a row that did not verify) still gives the table this run saw."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from emberkeep.engine.filescache import FilesCache

KEY = bytes(range(32))


def _run(cache_path: Path, files: list[Path]) -> None:
    """One backup's use of the cache: look each file up in walk order, note it, commit."""
    cache = FilesCache(cache_path, KEY)
    for number, path in enumerate(sorted(files)):
        st = os.lstat(path)
        ids = cache.lookup(str(path), st, lambda blob_id: True)
        cache.remember(str(path), st, ids or [bytes([number]) * 32])
    cache.commit()
    cache.close()


def _change_counter(cache_path: Path) -> int:
    """SQLite's file change counter (header bytes 24..27): bumped by every write."""
    return int.from_bytes(cache_path.read_bytes()[24:28], "big")


def _rows(cache_path: Path) -> int:
    with sqlite3.connect(cache_path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM files").fetchone()
    return int(count)


def test_the_table_is_rewritten_only_when_the_run_changed_it(tmp_path: Path) -> None:
    files = []
    for i in range(5):
        path = tmp_path / "src" / f"f{i}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * i)
        files.append(path)
    cache_path = tmp_path / "state" / "files.sqlite"
    _run(cache_path, files)
    assert _rows(cache_path) == 5
    written = _change_counter(cache_path)

    _run(cache_path, files)  # nothing changed: the table is left as it was
    assert _change_counter(cache_path) == written

    _run(cache_path, files[:-1])  # the last file is gone: its row goes
    assert _rows(cache_path) == 4
    assert _change_counter(cache_path) != written
    written = _change_counter(cache_path)

    files[1].write_bytes(b"changed")  # a changed file: a row of its own
    _run(cache_path, files[:-1])
    assert _change_counter(cache_path) != written
    written = _change_counter(cache_path)
    _run(cache_path, files[:-1])
    assert _change_counter(cache_path) == written

    with sqlite3.connect(cache_path) as db:  # a row that no longer verifies
        db.execute("UPDATE files SET tag = zeroblob(16) WHERE key = (SELECT MIN(key) FROM files)")
    damaged = _change_counter(cache_path)
    _run(cache_path, files[:-1])
    assert _change_counter(cache_path) != damaged
    cache = FilesCache(cache_path, KEY)
    st = os.lstat(min(files[:-1]))
    assert cache.lookup(str(min(files[:-1])), st, lambda blob_id: True) is not None
    cache.close()
