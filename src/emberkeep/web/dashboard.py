"""What every request of the dashboard needs: the site, the token, the CSRF token, and
its one job at a time (run through the scheduler's ``run_job``, recorded in jobstate.py)."""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import clock
from ..errors import error_text
from ..site import Site
from .jobstate import JobState


class Jobs:
    """One job at a time, each in its own thread, through the scheduler's ``run_job``."""

    def __init__(self, make_site: Callable[[], Site]) -> None:
        self.make_site = make_site
        self.lock = threading.Lock()
        self.current: JobState | None = None
        self.thread: threading.Thread | None = None
        self.count = 0
        # held while a job runs; `run --web` shares it with the scheduler's jobs
        self.run_lock: contextlib.AbstractContextManager[Any] = threading.Lock()

    def state(self) -> JobState | None:
        with self.lock:
            return None if self.current is None else JobState(**asdict(self.current))

    def start(self, kind: str, name: str) -> JobState | None:
        """Start ``kind`` (backup, drill: a source; check: a target); None while another
        job runs."""
        with self.lock:
            if self.current is not None and self.current.state == "running":
                return None
            self.count += 1
            job = JobState(self.count, kind, name, "running", clock.iso(clock.now()))
            self.current = job
            self.thread = threading.Thread(target=self._run, args=(job,), name=f"{kind} {name}")
            self.thread.start()
            return JobState(**asdict(job))

    def start_backup(self, source: str) -> JobState | None:
        return self.start("backup", source)

    def _run(self, job: JobState) -> None:
        from ..engine.backup import Progress
        from ..policy.schedule import Job
        from ..runner.scheduler import run_job

        def on_file(path: str, size: int) -> None:
            with self.lock:
                job.files += 1
                job.bytes += size

        try:
            site = self.make_site()
            schedule = ""
            if job.kind == "backup":
                schedule = site.config.source(job.source).schedule or ""
            with self.run_lock:
                summary = run_job(
                    site, Job(f"{job.kind}:{job.source}", schedule), progress=Progress(on_file)
                )
        except BaseException as exc:  # the journal has it too; the page shows it
            with self.lock:
                job.state, job.error = "failed", error_text(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            with self.lock:
                job.state, job.summary = "ok", summary

    def join(self) -> None:
        thread = self.thread
        if thread is not None:
            thread.join()


class Dashboard:
    """What every request needs: the site, the token, the CSRF token, the jobs."""

    def __init__(
        self,
        config_file: str | None,
        identity_file: Path | None,
        *,
        token: str | None,
        host: str,
        loopback: bool,
        tls: bool = False,
        actions: bool = True,
    ) -> None:
        self.config_file = config_file
        self.identity_file = identity_file
        self.token = token
        self.host = host
        self.loopback = loopback
        self.tls = tls
        self.actions = actions
        self.csrf = secrets.token_urlsafe(32)
        self.jobs = Jobs(self.site)

    def site(self) -> Site:
        """A site loaded afresh: each request and job sees the config as it is now."""
        from .. import config

        return Site(config.load(self.config_file), identity_file=self.identity_file)

    def redact(self, text: str) -> str:
        text = re.sub(r"token=[^&\s'\"]*", "token=***", text)
        return text.replace(self.token, "***") if self.token else text
