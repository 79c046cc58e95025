"""Every job, each in one function: what runs, in what order, and how it is journaled.

The CLI, the scheduler (``scheduler.run_job``) and the dashboard (web/dashboard.py, through
``run_job``) start a job by calling its function here and only show the result. A function
runs its job inside ``monitor.jobs.watch`` (the journal row and the alerts) and returns a
result that knows its own journal fields (``journal_fields()``), its ``summary()`` (the
scheduler's one line, raising when the job failed) and holds what the caller prints.

A job over several targets or sources (prune, check, drill) yields each one's result as
its run ends, journaled: the CLI prints it before the next starts.

Progress is the caller's: a ``Bar`` (the CLI's ``ui.ByteProgress``) is shown while its
step runs and fed the bytes; the jobs print nothing themselves. Runner modules are
imported when their job runs (a no-change backup from cron need not load check or prune).
"""

from __future__ import annotations

from .backups import BackedUp, Replicated, backup, import_dump, replicate
from .base import Bar
from .drills import Drilled, drill, drills_summary
from .maintenance import Checked, Pruned, check, prune
from .restores import Recovered, Restored, RestoredMongo, recover, restore, restore_mongodb

__all__ = [
    "BackedUp",
    "Bar",
    "Checked",
    "Drilled",
    "Pruned",
    "Recovered",
    "Replicated",
    "Restored",
    "RestoredMongo",
    "backup",
    "check",
    "drill",
    "drills_summary",
    "import_dump",
    "prune",
    "recover",
    "replicate",
    "restore",
    "restore_mongodb",
]
