"""The browse jobs: ``ls``, ``find`` and ``diff`` over a target's snapshots (engine.browse).

Each needs the identity (trees are encrypted). Entries a snapshot's trees refuse to show
(``engine.tree``) are collected in ``refused``, path and reason, for the CLI to list and
exit 1, as ``restore`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..clock import iso
from ..engine import browse
from ..engine.tree import Node, shown
from ..repository.snapshot import Snapshot
from ..site import Site


@dataclass
class Browse:
    refused: list[dict[str, str]] = field(default_factory=list)

    def refuse(self, path: str, reason: str) -> None:
        self.refused.append({"path": shown(path), "reason": reason})


def entry_json(path: str, node: Node) -> dict[str, Any]:
    """A node as ``ls``/``find`` print it: no blob ids (they say nothing to a reader)."""
    out: dict[str, Any] = {
        "path": shown(path),
        "type": node["type"],
        "mode": f"{node['mode']:04o}",
        "uid": node["uid"],
        "gid": node["gid"],
        "mtime_ns": node["mtime_ns"],
    }
    if node["type"] == "file":
        out["size"] = node["size"]
    if node["type"] == "symlink":
        out["target"] = shown(node["target"])
    return out


def run_ls(
    site: Site,
    spec: str,
    path: str,
    *,
    target: str | None = None,
    source: str | None = None,
    recursive: bool = False,
) -> tuple[Snapshot, list[tuple[str, Node]], Browse]:
    repo = site.repository(target, read=True)
    snapshot = site.find_snapshot(repo, spec, source)
    seen = Browse()
    found = browse.list_path(repo, snapshot.tree, path, recursive=recursive, on_refused=seen.refuse)
    return snapshot, found, seen


def run_find(
    site: Site, pattern: str, *, target: str | None = None, source: str | None = None
) -> tuple[list[dict[str, Any]], Browse]:
    """Every snapshot (oldest first) with the paths in it matching ``pattern``."""
    if source is not None:
        site.config.source(source)  # a typo names the configured sources
    repo = site.repository(target, read=True)
    seen = Browse()
    out = []
    for snapshot in repo.snapshots():
        if source is not None and snapshot.source != source:
            continue
        hits = [entry_json(p, n) for p, n in browse.find(repo, snapshot.tree, pattern, seen.refuse)]
        if hits:
            out.append(
                {
                    "snapshot": snapshot.id,
                    "short_id": snapshot.short_id,
                    "time": iso(snapshot.time),
                    "source": snapshot.source,
                    "matches": hits,
                }
            )
    return out, seen


def run_diff(
    site: Site, spec_a: str, spec_b: str, *, target: str | None = None, source: str | None = None
) -> tuple[Snapshot, Snapshot, list[browse.Change], Browse]:
    repo = site.repository(target, read=True)
    a = site.find_snapshot(repo, spec_a, source)
    b = site.find_snapshot(repo, spec_b, source)
    seen = Browse()
    return a, b, browse.diff(repo, a.tree, b.tree, seen.refuse), seen
