"""`emberkeep schedule --print cron|systemd`: the schedules for an outside scheduler.

cron: one crontab line per job. Schedules are in ``[site] timezone`` (UTC by default), so
the crontab starts with ``CRON_TZ=<zone>`` (cronie and systemd-cron honour it, and handle
the DST changes as `emberkeep run` does; Debian's cron does not: run that one on a host
whose clock is in that zone, or use the systemd units). systemd timers name the zone at the
end of each ``OnCalendar=``.

systemd: per job a oneshot ``.service`` and a ``.timer`` whose ``OnCalendar=`` lines are
translated from the cron expression (policy.schedule.on_calendar: lists, ranges and steps
are expanded; cron's day-of-month OR weekday becomes two OnCalendar lines; ``L`` and ``#``
cannot be translated and are reported). ``Persistent=true`` gives the catch-up-once of
`emberkeep run`. Also printed: ``emberkeep.service``, which runs `emberkeep run` itself,
for those who prefer the built-in scheduler (use it or the timers, not both).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from ..config import Config
from ..errors import UsageError
from ..policy.schedule import Job, expression, on_calendar, skipped_wall_times
from .scheduler import jobs_of


def executable() -> str:
    """The emberkeep command to put in the files: this install's script when it has one."""
    beside = Path(sys.executable).parent / "emberkeep"
    if beside.exists():
        return str(beside)
    return shutil.which("emberkeep") or "emberkeep"


def command(config: Config, job: Job, program: str) -> str:
    """The command line that runs ``job`` once."""
    path = str(Path(config.path or "emberkeep.toml").resolve())
    base = [program, "-c", path]
    if job.name.startswith("backup:"):
        args = ["backup", job.name.removeprefix("backup:")]
    elif job.name == "check":
        subset = config.check.read_data_subset
        args = ["check", *(["--read-data-subset", subset] if subset else [])]
    else:
        args = [job.name]
    return shlex.join([*base, *args, "-q"])


def render(config: Config, fmt: str, program: str) -> str:
    jobs = jobs_of(config)
    if not jobs:
        raise UsageError(
            f"{config.path}: no source, [prune] or [check] has a schedule; nothing to print"
        )
    return _crontab(config, jobs, program) if fmt == "cron" else _systemd(config, jobs, program)


def _crontab(config: Config, jobs: list[Job], program: str) -> str:
    lines = [
        f"# emberkeep schedules for site {config.site.name} (times are {config.site.timezone})",
        f"CRON_TZ={config.site.timezone}",
    ]
    for job in jobs:  # cron reads a bare % as a newline
        lines.append(
            f"{expression(job.schedule)} {command(config, job, program)}".replace("%", "\\%")
        )
    return "\n".join(lines) + "\n"


def _gap_note(job: Job) -> str:
    """A warning in the timer when a slot falls in a DST gap: systemd skips it."""
    from .. import clock

    skipped = skipped_wall_times(job.schedule, job.zone, clock.now())
    if not skipped:
        return ""
    return (
        f"# {skipped[0]} does not exist in {job.zone} (the clocks go forward): systemd skips "
        "that run, where `emberkeep run` and cronie run it when the gap ends; schedule it "
        "outside the changeover hour to keep every night\n"
    )


def _specifiers(text: str) -> str:
    """Escape systemd's % specifiers."""
    return text.replace("%", "%%")


def _unit_name(job: Job) -> str:
    return "emberkeep-" + job.name.replace(":", "-")


def _systemd(config: Config, jobs: list[Job], program: str) -> str:
    parts = []
    for job in jobs:
        try:
            calendars = on_calendar(job.schedule, job.zone)
        except ValueError as exc:
            raise UsageError(f"{job.name}: {exc}; use the crontab or `emberkeep run`") from None
        name = _unit_name(job)
        parts.append(
            f"# {name}.service\n[Unit]\nDescription=emberkeep {job.name}\n\n"
            f"[Service]\nType=oneshot\nExecStart={_specifiers(command(config, job, program))}\n"
        )
        on = "".join(f"OnCalendar={c}\n" for c in calendars) + _gap_note(job)
        parts.append(
            f"# {name}.timer\n[Unit]\nDescription=emberkeep {job.name} "
            f"({job.schedule})\n\n[Timer]\n{on}Persistent=true\n\n"
            "[Install]\nWantedBy=timers.target\n"
        )
    path = shlex.quote(str(Path(config.path or "emberkeep.toml").resolve()))
    parts.append(
        "# emberkeep.service (the alternative: the built-in scheduler; not with the timers)\n"
        "[Unit]\nDescription=emberkeep scheduler\nAfter=network-online.target\n\n"
        f"[Service]\nExecStart={_specifiers(f'{shlex.quote(program)} -c {path} run')}\n"
        "Restart=on-failure\n"
        "# the first SIGTERM lets a running backup finish: give it time\n"
        "TimeoutStopSec=1h\n\n[Install]\nWantedBy=multi-user.target\n"
    )
    return "\n".join(parts)
