"""The journal: every run of every job, in a SQLite database in the state directory.

``state_dir/journal.sqlite`` (mode 0600, WAL, so a status or log read never waits for a
running backup) holds one row per run of a job: backup, replicate, prune, check, drill,
restore, plus one per notification sent or failed (kind ``notify``). A row has the kind,
source and target (None where the job has none), the start and end, the outcome (``ok``,
``failed``, ``running`` while it runs, ``interrupted`` when its process died), the snapshot,
bytes read / new / written, files, the error text and a JSON ``details`` object for what is
particular to the kind (documents, anomalies, RTO of a drill...). Rows older than
``[monitor] journal_keep`` (default 365d; remembered in the database, so a writer given only
the state directory keeps the same) are removed as new ones are written. Times come
from ``clock.now()``, so a simulated clock (EMBERKEEP_NOW) journals simulated times; the
end is the start plus the measured duration.

The same database holds the alert state (``alerts`` table) that ``monitor.notify`` uses to
rate-limit repeated alerts and to send a "resolved" message.

Recording a run is one call. ``where`` is a ``Site`` (then ``journal_keep`` comes from its
config) or a state directory::

    from emberkeep import journal

    # after the fact (e.g. a drill that measured its own time):
    journal.record(site, kind="drill", source="db", target="local", outcome="ok",
                   started=t0, snapshot=snap.id,
                   details={"rto_seconds": 812.4, "rto_ok": True})

    # or around the work: "ok" when the block ends, "failed" with the error when it raises
    # (the exception goes on); set entry.outcome = "failed" and entry.error to fail it
    # without raising:
    with journal.job(site, "drill", source="db", target="local") as entry:
        ...
        entry.snapshot = snap.id
        entry.details.update(rto_seconds=812.4, rto_ok=True)

``monitor.status`` reads a source's last drill from the newest ``drill`` row: its outcome,
``details["rto_seconds"]`` and ``details["rto_ok"]`` (computed from ``rto_seconds`` and the
source's RTO when absent). To also send the failure and RTO-breach alerts at once, run the
job inside ``monitor.jobs.watch(site, "drill", ...)`` instead, which journals the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from .. import clock
from ..errors import EmberkeepError, error_text, is_disk_full, state_dir_full
from ..fsutil import make_dirs, pid_alive

FILE = "journal.sqlite"
KINDS = (
    "backup", "replicate", "prune", "check", "drill", "restore", "recover", "import", "notify",
)  # fmt: skip
# ``log --kind recover``: the strategy's log of every restoration, recovers and restores
KIND_GROUPS = {"recover": ("recover", "restore")}
DEFAULT_KEEP = timedelta(days=365)
BUSY_TIMEOUT = 30.0  # seconds a writer waits for another (a backup and a status at once)
SCHEMA = 1
_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: text order is time order

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT,
    target TEXT,
    started TEXT NOT NULL,
    ended TEXT,
    seconds REAL,
    outcome TEXT NOT NULL,
    snapshot TEXT,
    bytes INTEGER,
    bytes_new INTEGER,
    bytes_written INTEGER,
    files INTEGER,
    error TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    pid INTEGER
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE INDEX IF NOT EXISTS runs_kind ON runs (kind, source, target, started);
CREATE TABLE IF NOT EXISTS alerts (
    kind TEXT NOT NULL,
    job TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    active INTEGER NOT NULL,
    since TEXT NOT NULL,
    last_sent TEXT,
    sent INTEGER NOT NULL DEFAULT 0,
    suppressed INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, job, source, target)
);
"""


def to_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME)


def from_text(text: str | None) -> datetime | None:
    # fromisoformat reads the fixed-width _TIME (Z suffix) several times faster than
    # strptime: the dashboard reads a year of rows per page
    return datetime.fromisoformat(text).astimezone(UTC) if text else None


@dataclass
class Entry:
    """One run of one job (the columns of ``runs``)."""

    kind: str
    source: str | None = None
    target: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    seconds: float | None = None
    outcome: str = "running"  # ok | failed | running | interrupted
    snapshot: str | None = None
    bytes: int | None = None  # read from the source (backup) or written (restore)
    bytes_new: int | None = None  # not in the repository before
    bytes_written: int | None = None  # stored in the target (after compression), or copied
    files: int | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = clock.iso(self.started) if self.started else None
        data["ended"] = clock.iso(self.ended) if self.ended else None
        return {"id": data.pop("id"), **data}


_COLUMNS = [f.name for f in fields(Entry) if f.name != "id"]


class SiteLike(Protocol):
    @property
    def state_dir(self) -> Path: ...

    config: Any


class Journal:
    """The open database. Use as a context manager, or ``close()`` it."""

    def __init__(self, path: Path, keep: timedelta | None = None) -> None:
        self.path = path
        try:
            if str(path) != ":memory:":
                _create_private(path)
            self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            if not self._has_schema():
                self.db.executescript(_SCHEMA_SQL)  # idempotent: IF NOT EXISTS throughout
                self.db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA),)
                )
        except (sqlite3.Error, OSError) as exc:
            if is_disk_full(exc, path.parent):  # the journal is fine: do not advise moving it
                raise EmberkeepError(
                    f"the journal {path} cannot be opened: {state_dir_full(path.parent)}"
                ) from exc
            if isinstance(exc, OSError):
                raise EmberkeepError(
                    f"the journal {path} cannot be opened ({exc.strerror}); check the state dir"
                ) from exc
            raise EmberkeepError(
                f"the journal {path} cannot be opened ({exc}); move it aside to start a new one"
            ) from exc
        self.keep = self._keep(keep)

    def _keep(self, keep: timedelta | None) -> timedelta:
        """``keep`` when given (and remembered), else the one a site's config last gave."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'keep_seconds'").fetchone()
        if keep is None:
            return timedelta(seconds=int(row[0])) if row else DEFAULT_KEEP
        value = str(int(keep.total_seconds()))
        if row is None or row[0] != value:
            with self.transaction():
                self.db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('keep_seconds', ?)", (value,)
                )
        return keep

    def _has_schema(self) -> bool:
        row = self.db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alerts'"
        ).fetchone()
        return bool(row[0])

    @classmethod
    def open(cls, where: Path | SiteLike) -> Journal:
        """The journal of a site (keep from its config) or of a state directory."""
        if isinstance(where, str | os.PathLike):
            return cls(Path(where) / FILE)
        monitor = getattr(where.config, "monitor", None)
        keep = monitor.journal_keep.delta if monitor is not None else None
        return cls(where.state_dir / FILE, keep)

    @classmethod
    def in_memory(cls) -> Journal:
        """A journal that forgets: for a job that must run when the real one cannot open."""
        return cls(Path(":memory:"))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- runs ------------------------------------------------------------------------------

    def add(self, entry: Entry) -> Entry:
        """Insert ``entry`` (its start defaults to now); expire what is older than ``keep``."""
        entry.started = entry.started or clock.now()
        if entry.outcome != "running" and entry.ended is None:
            entry.ended = entry.started + timedelta(seconds=entry.seconds or 0)
        values = self._values(entry)
        names = ", ".join([*_COLUMNS, "pid"])
        marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
        with self.transaction():
            cursor = self.db.execute(
                f"INSERT INTO runs ({names}) VALUES ({marks})", [*values, os.getpid()]
            )
            entry.id = cursor.lastrowid
            self.db.execute(
                "DELETE FROM runs WHERE started < ? AND outcome != 'running'",
                (to_text(clock.now() - self.keep),),
            )
        return entry

    def update(self, entry: Entry) -> None:
        sets = ", ".join(f"{name} = ?" for name in _COLUMNS)
        with self.transaction():
            self.db.execute(
                f"UPDATE runs SET {sets} WHERE id = ?", [*self._values(entry), entry.id]
            )

    def delete(self, entry: Entry) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM runs WHERE id = ?", (entry.id,))

    def jobs(self) -> list[tuple[str, str | None, str | None]]:
        """Every (kind, source, target) journaled, notifications aside."""
        rows = self.db.execute(
            "SELECT DISTINCT kind, source, target FROM runs WHERE kind != 'notify' "
            "ORDER BY kind, source, target"
        ).fetchall()
        return [tuple(row) for row in rows]

    def last_of(
        self, kind: str, source: str | None, target: str | None, *, ok: bool = False
    ) -> Entry | None:
        """The newest finished run of exactly this job (None source/target: none), or ok run."""
        outcomes = ("ok",) if ok else ("ok", "failed", "interrupted")
        marks = ", ".join("?" for _ in outcomes)
        row = self.db.execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM runs WHERE kind = ? AND source IS ? "
            f"AND target IS ? AND outcome IN ({marks}) ORDER BY started DESC, id DESC LIMIT 1",
            (kind, source, target, *outcomes),
        ).fetchone()
        return self._entry(row) if row else None

    def _values(self, entry: Entry) -> list[Any]:
        values: list[Any] = []
        for name in _COLUMNS:
            value = getattr(entry, name)
            if isinstance(value, datetime):
                value = to_text(value)
            elif name == "details":
                value = json.dumps(value, sort_keys=True, default=str)
            values.append(value)
        return values

    def entries(
        self,
        *,
        kind: str | tuple[str, ...] | None = None,
        source: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Entry]:
        """Runs matching every filter given, oldest first (or newest first, up to ``limit``);
        ``kind`` may be several kinds."""
        where: list[str] = []
        args: list[object] = []
        if isinstance(kind, tuple):
            where.append(f"kind IN ({', '.join('?' * len(kind))})")
            args.extend(kind)
            kind = None
        for column, value in (
            ("kind", kind),
            ("source", source),
            ("target", target),
            ("outcome", outcome),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("started >= ?")
            args.append(to_text(since))
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY started {'DESC' if newest_first else 'ASC'}, id"
        sql += " DESC" if newest_first else ""
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._entry(row) for row in self.db.execute(sql, args)]

    def last(self, kind: str, **filters: Any) -> Entry | None:
        """The newest run of ``kind`` matching ``filters`` (source, target, outcome)."""
        found = self.entries(kind=kind, limit=1, newest_first=True, **filters)
        return found[0] if found else None

    def _entry(self, row: tuple[Any, ...]) -> Entry:
        values = dict(zip(["id", *_COLUMNS], row, strict=True))
        values["started"] = from_text(values["started"])
        values["ended"] = from_text(values["ended"])
        values["details"] = json.loads(values["details"] or "{}")
        return Entry(**values)

    def mark_interrupted(self, kind: str, source: str | None, target: str | None) -> None:
        """Earlier runs of the same job still "running" whose process is gone: interrupted."""
        rows = self.db.execute(
            "SELECT id, pid FROM runs WHERE outcome = 'running' AND kind = ? "
            "AND source IS ? AND target IS ?",
            (kind, source, target),
        ).fetchall()
        for row_id, pid in rows:
            if pid != os.getpid() and not (pid and pid_alive(pid)):
                with self.transaction():
                    self.db.execute(
                        "UPDATE runs SET outcome = 'interrupted', "
                        "error = 'the process running it ended before it finished' "
                        "WHERE id = ?",
                        (row_id,),
                    )

    def first_seen(self, source: str) -> datetime:
        """When monitoring first saw ``source`` (now, the first time it is asked)."""
        key = f"first_seen:{source}"
        with self.transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, to_text(clock.now()))
            )
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        seen = from_text(row[0])
        assert seen is not None
        return seen

    # -- alert state (monitor.notify) --------------------------------------------------------

    def alert_state(self, key: tuple[str, str, str, str]) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT active, since, last_sent, sent, suppressed, message FROM alerts "
            "WHERE kind = ? AND job = ? AND source = ? AND target = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        names = ("active", "since", "last_sent", "sent", "suppressed", "message")
        state = dict(zip(names, row, strict=True))
        state["active"] = bool(state["active"])
        state["since"] = from_text(state["since"])
        state["last_sent"] = from_text(state["last_sent"])
        return state

    def set_alert_state(self, key: tuple[str, str, str, str], **state: Any) -> None:
        values = {k: to_text(v) if isinstance(v, datetime) else v for k, v in state.items()}
        values["active"] = int(bool(values.get("active")))
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO alerts (kind, job, source, target, active, since, "
                "last_sent, sent, suppressed, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *key,
                    values["active"],
                    values["since"],
                    values.get("last_sent"),
                    values.get("sent", 0),
                    values.get("suppressed", 0),
                    values.get("message", ""),
                ),
            )

    def active_alerts(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT kind, job, source, target, since, message FROM alerts WHERE active = 1 "
            "ORDER BY since"
        ).fetchall()
        names = ("kind", "job", "source", "target", "since", "message")
        return [dict(zip(names, row, strict=True)) for row in rows]


def _create_private(path: Path) -> None:
    """Create the database file mode 0600 before SQLite does (its -wal and -shm follow)."""
    make_dirs(path.parent)  # 0700 whatever the umask
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def record(
    where: Path | SiteLike,
    *,
    kind: str,
    outcome: str = "ok",
    source: str | None = None,
    target: str | None = None,
    started: datetime | None = None,
    ended: datetime | None = None,
    seconds: float | None = None,
    snapshot: str | None = None,
    bytes: int | None = None,
    bytes_new: int | None = None,
    bytes_written: int | None = None,
    files: int | None = None,
    error: str | None = None,
    details: dict[str, Any] | None = None,
) -> Entry:
    """Journal one finished run (module docstring); returns it with its ``id``."""
    if seconds is None and started is not None and ended is not None:
        seconds = (ended - started).total_seconds()
    entry = Entry(
        kind=kind,
        source=source,
        target=target,
        started=started,
        ended=ended,
        seconds=seconds,
        outcome=outcome,
        snapshot=snapshot,
        bytes=bytes,
        bytes_new=bytes_new,
        bytes_written=bytes_written,
        files=files,
        error=error,
        details=dict(details or {}),
    )
    with Journal.open(where) as journal:
        return journal.add(entry)


@contextlib.contextmanager
def job(
    where: Path | SiteLike, kind: str, *, source: str | None = None, target: str | None = None
) -> Iterator[Entry]:
    """Journal the run of the ``with`` block (module docstring); the entry is yielded."""
    with Journal.open(where) as journal:
        journal.mark_interrupted(kind, source, target)
        entry = journal.add(Entry(kind=kind, source=source, target=target))
        t0 = time.monotonic()
        try:
            yield entry
        except BaseException as exc:
            entry.outcome, entry.error = "failed", error_text(exc)
            raise
        else:
            if entry.outcome == "running":
                entry.outcome = "ok"
        finally:
            entry.seconds = round(time.monotonic() - t0, 3)
            assert entry.started is not None
            entry.ended = entry.started + timedelta(seconds=entry.seconds)
            journal.update(entry)
