"""What every job function shares: the progress display it is given, warnings."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

Warn = Callable[[str], None]
OnBytes = Callable[[str, int], None]  # a file (or pack) done: its name, its size
OnTotal = Callable[[int], None]


def silent(text: str) -> None:
    """Warnings of a run nobody watches go to the journal only."""


class Bar(Protocol):
    """A progress display (the CLI's ``ui.ByteProgress``), shown while one step runs."""

    enabled: bool

    def advance(self, name: str, size: int) -> None: ...

    def set_total(self, total_bytes: int) -> None: ...

    def shown(self) -> AbstractContextManager[object]: ...


def shown_while(bar: Bar | None) -> AbstractContextManager[object]:
    return bar.shown() if bar is not None else contextlib.nullcontext()


def _none(name: str, size: int) -> None:
    pass


def _no_total(size: int) -> None:
    pass


def byte_feed(bar: Bar | None) -> tuple[OnBytes, OnTotal]:
    """The bar's ``advance`` and ``set_total``, or nothing to feed."""
    return (bar.advance, bar.set_total) if bar is not None else (_none, _no_total)


def copy_feed(bar: Bar | None) -> tuple[OnBytes, OnTotal]:
    """``on_pack``/``on_total`` for one bar over every copy of a run: each copy adds the
    bytes it is about to send."""
    if bar is None:
        return _none, _no_total
    total = 0

    def add_total(size: int) -> None:
        nonlocal total
        total += size
        bar.set_total(total)

    return bar.advance, add_total
