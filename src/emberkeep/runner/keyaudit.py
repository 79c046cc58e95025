"""``emberkeep keys check``: in each target, every pack's data key opens under the identity
given (``repository/packkeys.py``: only each pack's wrapped key is read), and what each
recipient ``keys remove`` took out can still read (README, "Keys and team changes").

A removed recipient never gets a key epoch started after its removal, but the epoch files
of before were encrypted to it: whoever kept a copy of one, or of the packs, reads what
was written under it. The record lists, per removed recipient, those epochs
(``repository/recipients.py``); from the index and the snapshots this says which snapshots
lie wholly under them and which later ones reuse (by deduplication) some of their packs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import clock
from ..repository import packkeys
from ..repository.recipients import Record, Removed
from ..repository.repo import Repository
from ..site import Site

SHOWN = 10  # packs named one by one; the rest are counted


@dataclass
class Exposure:
    """What one removed recipient can still read in one target."""

    removed: Removed
    epochs: list[int]  # the numbers of those epochs still listed
    before_epoch: int | None  # the first epoch it never had
    snapshots: list[tuple[str, str]] = field(default_factory=list)  # wholly: (id, time)
    partly: int = 0  # later snapshots that reuse some of those packs

    def message(self, target: str) -> str:
        who = f"{self.removed.label} ({self.removed.key})" if self.removed.label else (
            self.removed.key)  # fmt: skip
        head = f"{who} removed {self.removed.when}: "
        if not self.snapshots and not self.partly:
            return head + "no snapshot left uses the key epochs it had; nothing to read"
        began = f"epoch {self.before_epoch} began" if self.before_epoch else "its removal"
        span = (
            f"{len(self.snapshots)} snapshots, from {self.snapshots[0][1]} to "
            f"{self.snapshots[-1][1]}" if self.snapshots else "0 snapshots"
        )  # fmt: skip
        text = (
            f"{head}can still read every snapshot written before {began} ({span}) if they "
            "kept a copy of the epoch key or of the packs"
        )
        if self.partly:
            text += (
                f", and parts of {self.partly} later snapshots, which reuse packs of those "
                "epochs (deduplication)"
            )
        return text + (
            ". New data is under a key they never had (`emberkeep keys rotate` starts another "
            "epoch if in doubt). To shut them out of the old data too: `emberkeep replicate "
            f"--target NEW --re-encrypt` into a new repository, then remove target {target}"
        )

    def to_json(self, target: str) -> dict[str, Any]:
        return {
            "recipient": self.removed.key,
            "label": self.removed.label,
            "removed": self.removed.when,
            "epochs": self.epochs,
            "before_epoch": self.before_epoch,
            "snapshots": [s for s, _ in self.snapshots],
            "first": self.snapshots[0][1] if self.snapshots else None,
            "last": self.snapshots[-1][1] if self.snapshots else None,
            "partly_readable_snapshots": self.partly,
            "message": self.message(target),
        }


@dataclass
class Audit:
    target: str
    keys: packkeys.PackKeys
    exposures: list[Exposure]
    history: bool  # the record can hold removed recipients (it has key epochs)

    @property
    def ok(self) -> bool:
        return not self.keys.failures

    def reads(self) -> str:
        return (
            f"{self.keys.reads} ranged reads, {self.keys.bytes_read} bytes: per pack its "
            "8-byte trailer and the wrapped data key at the head of its table, no blob"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "packs": self.keys.packs,
            "epochs": [
                {"number": e.number, "tag": f"{e.tag:08x}", "packs": e.packs, "opened": e.opened}
                for e in sorted(self.keys.epochs.values(), key=lambda e: (e.number or 0, e.tag))
            ],
            "failed": [
                {"pack": f.pack, "tag": f"{f.tag:08x}", "reason": f.reason}
                for f in self.keys.failures
            ],
            "reads": self.keys.reads,
            "bytes_read": self.keys.bytes_read,
            "read": self.reads(),
            "removed": [x.to_json(self.target) for x in self.exposures],
        }


def check(site: Site, target: str | None = None) -> list[Audit]:
    audits = []
    for name in site.target_names(target):
        repo = site.repository(name, read=True)
        found = packkeys.check(repo)
        record = repo.key_record()
        exposures = exposure(repo, record) if record else []
        audits.append(Audit(name, found, exposures, bool(record and record.epochs)))
    return audits


def exposure(repo: Repository, record: Record) -> list[Exposure]:
    """For each removed recipient not a recipient again: the snapshots it can read."""
    index = repo.index
    needs: list[tuple[str, str, set[int]]] = []
    for snapshot in sorted(repo.snapshots(), key=lambda s: s.time):
        needs.append((snapshot.id, clock.iso(snapshot.time), index.epochs_of(snapshot.blob_ids())))
    found = []
    for removed in record.removed:
        if removed.key in record.recipients:
            continue  # added again since: it reads everything anyway
        had = [e for e in record.epochs if e.tag in removed.epochs]
        later = [e.number for e in record.epochs if e.tag not in removed.epochs]
        tags = {e.tag for e in had}
        item = Exposure(removed, sorted(e.number for e in had), min(later, default=None))
        for snapshot_id, when, used in needs:
            if used and used <= tags:
                item.snapshots.append((snapshot_id, when))
            elif used & tags:
                item.partly += 1
        found.append(item)
    return found


def text(audit: Audit) -> list[str]:
    """What ``keys check`` prints for one target."""
    counts = ", ".join(
        f"epoch {e.number if e.number is not None else f'{e.tag:08x} (unlisted)'}: "
        f"{e.opened} of {e.packs} packs"
        for e in sorted(audit.keys.epochs.values(), key=lambda e: (e.number or 0, e.tag))
    )
    t = audit.target
    if audit.ok:
        lines = [
            f"target {t}: all {audit.keys.packs} packs' data keys open ({counts or 'no packs'})"
        ]
    else:
        failed = audit.keys.failures
        lines = [
            f"target {t}: {len(failed)} of {audit.keys.packs} packs' data keys do not open under "
            f"the identity given ({counts}):"
        ]
        lines += [f"  {f.pack}: {f.reason}" for f in failed[:SHOWN]]
        if len(failed) > SHOWN:
            lines.append(f"  … and {len(failed) - SHOWN} more (--json lists every one)")
        lines.append(
            "  the snapshots that use them do not restore with this identity: give the "
            "identity of a current recipient, or `emberkeep check --read-data` for the damage"
        )
    lines.append(f"  {audit.reads()}")
    for item in audit.exposures:
        lines.append(f"  {item.message(t)}")
    if not audit.exposures:
        lines.append(
            "  no removed recipient is recorded"
            + (
                " (removals made before the record kept them are not known)"
                if audit.history
                else ": this repository has no key epochs yet (`emberkeep keys convert`)"
            )
        )
    return lines
