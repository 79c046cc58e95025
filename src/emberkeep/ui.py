"""Terminal output: progress bars on a terminal, plain lines elsewhere, JSON on request."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.text import Text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def line(text: str, *, label: str = "", style: str = "", stderr: bool = False) -> None:
    """Print user-facing text literally (never as markup), after an optional styled label."""
    console = err if stderr else out
    console.print(Text.assemble((label, style), text) if label else Text(text, style=style))


def error(text: str) -> None:
    line(text, label="error: ", style="red", stderr=True)


def warning(text: str) -> None:
    line(text, label="warning: ", style="yellow", stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ByteProgress:
    """A progress bar of files and bytes; silent unless stderr is a terminal."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.enabled = enabled and err.is_terminal
        self._files = 0
        self._lock = threading.Lock()
        if not self.enabled:
            return
        from rich import progress  # only when a bar is shown: it is slow to import

        self._bar = progress.Progress(
            progress.TextColumn(f"[bold]{label}"),
            progress.BarColumn(),
            progress.DownloadColumn(),
            progress.TransferSpeedColumn(),
            progress.TextColumn("{task.fields[files]} files"),
            progress.TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self._task = self._bar.add_task(label, total=None, files=0)

    def set_total(self, total_bytes: int) -> None:
        if self.enabled:
            self._bar.update(self._task, total=total_bytes)

    def advance(self, _name: str, size: int) -> None:
        if self.enabled:
            with self._lock:
                self._files += 1
                self._bar.update(self._task, advance=size, files=self._files)

    @contextmanager
    def shown(self) -> Iterator[ByteProgress]:
        if not self.enabled:
            yield self
            return
        with self._bar:
            yield self


def in_background(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, daemon=True).start()


@contextmanager
def status(text: str, *, enabled: bool) -> Iterator[None]:
    """A spinner with ``text`` while a step without byte counts runs (terminal only)."""
    if not (enabled and err.is_terminal):
        yield
        return
    with err.status(Text(text)):
        yield
