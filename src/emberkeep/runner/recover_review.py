"""What ``recover`` shows before it runs anything: the stored config's recipients, targets,
sources and hooks, and what changed since the config stored before it and since the one
this host last recovered from.

A config a writer host stored may still be hostile (README, "How it keeps data safe": a
compromised backup host holds the writer key and can seal what it likes), so the operator
sees what it will do, hooks first, before approving it. The record of what this host
recovered from is ``state_dir/recover-seen.json`` (0600), per repository id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .. import clock, statefile
from ..config import Config, Source
from ..fsutil import write_atomic
from ..redact import redact_url
from . import kinds

SEEN_FILE = "recover-seen.json"
HOOKS = ("before_restore", "after_restore", "before_backup", "after_backup")
RESTORE_HOOKS = ("before_restore", "after_restore")


def summarize(cfg: Config) -> dict[str, Any]:
    """What of a config decides what a recovered site does and who can read it."""
    return {
        "recipients": sorted(cfg.keys.recipient_keys),
        "labels": dict(sorted(cfg.keys.labels.items())),
        "targets": {t.name: redact_url(t.url) for t in cfg.targets},
        "sources": {s.name: _where(s) for s in cfg.sources},
        "hooks": {
            f"{s.name}.{which}": command
            for s in cfg.sources
            if s.hooks is not None
            for which in HOOKS
            if (command := getattr(s.hooks, which))
        },
    }


def restore_hooks(summary: dict[str, Any], sources: list[str]) -> dict[str, str]:
    """The hooks a recover of ``sources`` would run now."""
    return {
        key: command
        for key, command in summary["hooks"].items()
        if key.split(".", 1)[0] in sources and key.rsplit(".", 1)[1] in RESTORE_HOOKS
    }


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Line by line, what ``new`` changes from ``old`` (summaries of ``summarize``)."""
    lines = []
    was, now = set(old.get("recipients", [])), set(new["recipients"])
    labels = {**old.get("labels", {}), **new.get("labels", {})}

    def named(r: str) -> str:
        return f"{r} ({labels[r]})" if r in labels else r

    lines += [f"recipient {named(r)} added" for r in sorted(now - was)]
    lines += [f"recipient {named(r)} removed" for r in sorted(was - now)]
    for section, what in (("targets", "target"), ("sources", "source"), ("hooks", "hook")):
        before, after = old.get(section, {}), new[section]
        for key in sorted(set(before) | set(after)):
            if key not in before:
                lines.append(f"{what} {key} added: {after[key]}")
            elif key not in after:
                lines.append(f"{what} {key} removed (was: {before[key]})")
            elif before[key] != after[key]:
                lines.append(f"{what} {key} changed: {before[key]} (was: {before[key]!r})")
                lines[-1] = f"{what} {key} changed: {after[key]} (was: {before[key]})"
    return lines


def read_seen(
    state_dir: Path, warn: Callable[[str], None], *, move_aside: bool = False
) -> dict[str, Any]:
    """Repository id -> what this host recorded when it last recovered from it. A damaged
    file is reported (``statefile``); only ``remember``, which writes it anew, moves it
    aside: a plan writes nothing."""
    path = state_dir / SEEN_FILE

    def decode(data: bytes) -> dict[str, Any]:
        msgspec.json.decode(data, type=dict[str, _Seen])  # every type used, checked
        return dict(json.loads(data))

    return statefile.load(
        path, decode, dict, warn, what="a record of recoveries", move_aside=move_aside,
        then="nothing to compare the stored config with",
    )  # fmt: skip


def last_seen(record: dict[str, Any], repository_id: str) -> dict[str, Any] | None:
    """What this host recorded when it last recovered from this repository, if it did."""
    entry = record.get(repository_id)
    return entry if isinstance(entry, dict) else None


def other_repository_at(record: dict[str, Any], url: str, repository_id: str) -> str | None:
    """The id of another repository this host recovered from at the same URL, if any."""
    for key, entry in record.items():
        if key != repository_id and entry.get("from") == url:
            return key
    return None


def remember(
    state_dir: Path, repository_id: str, entry: dict[str, Any], warn: Callable[[str], None]
) -> None:
    record = read_seen(state_dir, warn, move_aside=True)
    record[repository_id] = {**entry, "recovered_at": clock.iso(clock.now())}
    write_atomic(state_dir / SEEN_FILE, json.dumps(record, indent=1).encode(), mode=0o600)


class _Summary(msgspec.Struct, kw_only=True):
    recipients: list[str]
    targets: dict[str, str]
    labels: dict[str, str] = {}
    sources: dict[str, str]
    hooks: dict[str, str]


class _Seen(msgspec.Struct):
    """One repository's entry of ``recover-seen.json`` (what ``remember`` writes)."""

    summary: _Summary
    from_: str = msgspec.field(name="from", default="")
    recovered_at: str = ""


def _where(source: Source) -> str:
    return kinds.kind_for(source).describe(source)
