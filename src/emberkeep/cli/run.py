"""`run` (the scheduler, in the foreground) and `schedule` (crontab or systemd units)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import memory, ui
from ..site import Site
from .common import Subparsers


def add_run(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="the scheduler: run due jobs (foreground)")
    p.add_argument(
        "--until",
        metavar="TIME",
        help="simulate: from EMBERKEEP_NOW, jump from due time to due time up to TIME; no sleeping",
    )
    p.add_argument("--once", action="store_true", help="run what is due now, then exit")
    p.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay each wake-up by a random 0..SECONDS",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (default [monitor] metrics_port)",
    )
    p.add_argument(
        "--metrics-textfile",
        type=Path,
        metavar="FILE",
        help="write the metrics to FILE after each batch of jobs, for node_exporter",
    )
    p.add_argument(
        "--web",
        nargs="?",
        const="",
        metavar="HOST:PORT",
        help="serve the dashboard meanwhile (default [web] listen; token and TLS from [web])",
    )
    p.set_defaults(handler=cmd_run)


def cmd_run(site: Site, args: argparse.Namespace) -> int:
    import contextlib
    import threading

    memory.return_large_buffers_promptly()
    from .. import clock
    from ..errors import UsageError
    from ..runner import scheduler

    if args.jitter < 0:
        raise UsageError(f"--jitter {args.jitter}: give a number of seconds >= 0")
    until = clock.parse_time(args.until) if args.until else None
    options = scheduler.Options(until=until, once=args.once, jitter=args.jitter)

    def show(event: scheduler.Event) -> None:
        if args.json:
            print(json.dumps(event.to_json()), flush=True)
        else:
            ui.line(event.text())

    from ..monitor.exporter import Exporter
    from ..runner import kinds

    monitor = site.config.monitor
    exporter = Exporter(
        site,
        kinds.kind_for,
        port=args.metrics_port or monitor.metrics_port,
        textfile=args.metrics_textfile or monitor.metrics_textfile,
        warn=ui.warning,
    )
    web: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    job_lock = threading.Lock()  # the dashboard's jobs and the scheduler's, one at a time
    if args.web is not None:
        from ..web.server import in_background

        web = in_background(
            str(site.config.path) if site.config.path else args.config,
            args.identity,
            listen=args.web or None,
            job_lock=job_lock,
            ready=lambda text: print(
                text, file=sys.stderr if args.json else sys.stdout, flush=True
            ),
            warn=ui.warning,
        )
    with exporter.serving(), web:
        return scheduler.Scheduler(
            site,
            options,
            on_event=show,
            after_jobs=exporter.refresh,
            warn=ui.warning,
            job_lock=job_lock,
        ).run()


def add_schedule(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "schedule", parents=[common], help="print a crontab or systemd units for the schedules"
    )
    p.add_argument("--print", choices=["cron", "systemd"], required=True, dest="format")
    p.set_defaults(handler=cmd_schedule)


def cmd_schedule(site: Site, args: argparse.Namespace) -> int:
    from ..runner import unitfiles

    print(unitfiles.render(site.config, args.format, unitfiles.executable()), end="")
    return 0
