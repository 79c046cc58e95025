"""The recipients a repository's data is encrypted to, and the check that a config still names them.

Every pack's data key is wrapped to the recipients of the config that wrote the pack, and
deduplication reuses packs whatever the recipients were then. So a backup run under a config
whose recipients changed would commit a snapshot (readable by the new recipients) whose data
only the old ones can read; with a recipient replaced, nobody could read it whole. The
repository therefore records its recipient set (``keys/recipients``, a secret sealed
document, ``sealing.py``: a writer reads it without an identity, the storage side can
neither read nor forge it) at
its first write, and every write checks the config against it before storing anything. The
record also holds the SHA-256 of the writer key's copy (``keys/writer.age``), so that
``check`` on a host without an identity can tell whether that copy is the one written.

It also keeps the recipients' labels (``keys add --label``; a record without them has none)
and, for each recipient ``keys remove`` took out, when, and the key epochs whose files were
encrypted to it until then: what it may still read (``keys check``). Only the keys are
compared with the config; a label that differs is a warning (``label_mismatch``), because
a label names a person for humans and changes nothing anybody can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyrage

from .. import keys
from ..errors import AlreadyExists, IntegrityError, NotFound, RepositoryError
from ..storage.base import Storage, get_at_most
from . import sealing
from .layout import RECIPIENTS, RECIPIENTS_MAX

FORMAT = 4  # 1 had no writer_key_sha256, 2 no epochs, 3 no labels or removed; sealed the same
KIND = "recipients"


class RecipientsChanged(RepositoryError):
    """The config's recipients are not the ones the repository's data is encrypted to."""


@dataclass(frozen=True)
class Epoch:
    """A key epoch (``epochs.py``): its tag, its number in this repository (0: legacy),
    the public half of its key, and when it began."""

    tag: int
    number: int
    public: str
    created: str

    def to_json(self) -> dict[str, object]:
        return {"tag": self.tag, "number": self.number, "public": self.public,
                "created": self.created}  # fmt: skip


@dataclass(frozen=True)
class Removed:
    """A recipient ``keys remove`` took out: its label then, when (ISO time), and the tags
    of the key epochs whose files were encrypted to it until then."""

    key: str
    label: str | None
    when: str
    epochs: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "label": self.label, "when": self.when,
                "epochs": list(self.epochs)}  # fmt: skip


@dataclass(frozen=True)
class Record:
    """What ``keys/recipients`` says: the recipient set, and the SHA-256 of the copy of the
    writer key (``keys/writer.age``) the writer last wrote, so that a host without an
    identity can tell a damaged or replaced copy (None in a record from before that); the
    key epochs (``epochs.py``; none in a repository from before them) and the tag of the
    current one, which new packs are wrapped to."""

    recipients: list[str]
    writer_key_sha256: str | None = None
    epochs: tuple[Epoch, ...] = ()
    current: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # recipient -> label
    removed: tuple[Removed, ...] = ()

    def current_epoch(self) -> Epoch | None:
        return next((e for e in self.epochs if e.tag == self.current), None)


def label_mismatch(record: Record, labels: dict[str, str]) -> str | None:
    """The recipients the config labels otherwise than the record does (a warning, not a
    refusal: the keys decide who reads), or None."""
    differ = [
        f"{_short(key)} is {labels[key]!r} in the config, {label!r} in the repository"
        for key, label in sorted(record.labels.items())
        if key in labels and labels[key] != label
    ]
    if not differ:
        return None
    return (
        f"recipient labels differ: {'; '.join(differ)}. The repository's labels are what "
        "`keys list` and `recover` show: put them in [keys] recipients, or record the "
        "config's with `emberkeep keys add KEY --label NAME`"
    )


def names(recipients: list[pyrage.x25519.Recipient]) -> list[str]:
    """The canonical ``age1…`` strings of a recipient set, sorted: what is recorded and compared."""
    return sorted({str(r) for r in recipients})


def ensure(
    storage: Storage,
    writer_key: keys.WriterKey,
    recipients: list[pyrage.x25519.Recipient],
    config_path: Path | None,
    *,
    writer_key_sha256: str | None = None,
    epochs: tuple[Epoch, ...] = (),
    labels: dict[str, str] | None = None,
) -> Record:
    """The repository's record, written when there is none (with ``writer_key_sha256``,
    the digest of the copy just written, from ``init``); ``RecipientsChanged`` when it
    names another set than ``recipients``.

    A repository made before this record existed gets the config's set at its next write."""
    wanted = names(recipients)
    recorded = read(storage, writer_key)
    if recorded is None:
        try:
            current = epochs[-1].tag if epochs else None
            kept = {k: v for k, v in (labels or {}).items() if k in wanted}
            record = Record(wanted, writer_key_sha256, epochs, current, kept)
            storage.put(RECIPIENTS, _seal(record, writer_key))
            return record
        except AlreadyExists:  # another writer recorded it first: compare with theirs
            recorded = read(storage, writer_key)
    if recorded is not None and recorded.recipients != wanted:
        raise RecipientsChanged(
            _changed_message(storage.label, recorded.recipients, wanted, config_path)
        )
    return recorded or Record(wanted)


def record_writer_key(
    storage: Storage, writer_key: keys.WriterKey, record: Record, digest: str
) -> None:
    """Record the SHA-256 of the writer key copy just written (replacing the record)."""
    write(storage, writer_key, replace(record, writer_key_sha256=digest))


def write(storage: Storage, writer_key: keys.WriterKey, record: Record) -> None:
    """Replace the record (a key change's commit point, ``epochs.py``)."""
    storage.put(RECIPIENTS, _seal(record, writer_key), overwrite=True)


def read(storage: Storage, writer_key: keys.WriterKey, chain: Any = None) -> Record | None:
    """The record, verified with the writer key; None when there is none. With the
    repository's writer ``chain`` (``writerchain.Chain``), also the record a rotation
    left sealed with the retired key when it was cut short (it lists its SHA-256)."""
    obj = f"{storage.label}/{RECIPIENTS}"
    try:
        raw = get_at_most(storage, RECIPIENTS, RECIPIENTS_MAX)
    except NotFound:
        return None
    except IntegrityError as exc:
        raise _damaged(obj, exc.detail) from None
    try:
        return _open(raw, writer_key, obj)
    except IntegrityError as exc:
        old = chain.retired_record_key(raw, writer_key) if chain is not None else None
        if old is not None:
            return _open(raw, old, obj)
        raise _damaged(obj, exc.detail) from exc


def _damaged(obj: str, detail: str) -> IntegrityError:
    return IntegrityError(
        obj,
        f"{detail}: damaged, or replaced by someone without this repository's "
        "writer key. If the repository is this site's and [keys] recipients are the "
        f"ones its data is encrypted to, delete {RECIPIENTS} from the target: the next "
        "backup records them",
    )


def _open(raw: bytes, writer_key: keys.WriterKey, obj: str) -> Record:
    body = sealing.unseal_secret(writer_key, KIND, raw, obj)
    try:
        recipients = sorted(str(r) for r in body["recipients"])
        digest = body.get("writer_key_sha256")
        epochs = tuple(
            Epoch(int(e["tag"]), int(e["number"]), str(e["public"]), str(e["created"]))
            for e in body.get("epochs", [])
        )
        current = body.get("current")
        current = None if current is None else int(current)
        labels = {str(k): str(v) for k, v in body.get("labels", {}).items()}
        removed = tuple(
            Removed(str(r["key"]), None if r.get("label") is None else str(r["label"]),
                    str(r["when"]), tuple(int(t) for t in r["epochs"]))
            for r in body.get("removed", [])
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IntegrityError(obj, "not a recipients record") from exc
    if current is not None and all(e.tag != current for e in epochs):
        raise IntegrityError(obj, "its current key epoch is not one it lists (damaged)")
    digest = None if digest is None else str(digest)
    return Record(recipients, digest, epochs, current, labels, removed)


def _seal(record: Record, writer_key: keys.WriterKey) -> bytes:
    body: dict[str, object] = {"format": FORMAT, "recipients": record.recipients}
    if record.writer_key_sha256 is not None:
        body["writer_key_sha256"] = record.writer_key_sha256
    if record.epochs:
        body["epochs"] = [e.to_json() for e in record.epochs]
        body["current"] = record.current
    if record.labels:
        body["labels"] = dict(sorted(record.labels.items()))
    if record.removed:
        body["removed"] = [r.to_json() for r in record.removed]
    return sealing.seal_secret(writer_key, KIND, body)


def _changed_message(
    label: str, recorded: list[str], wanted: list[str], config: Path | None
) -> str:
    parts = []
    for verb, which in (
        ("added", set(wanted) - set(recorded)),
        ("removed", set(recorded) - set(wanted)),
    ):
        if which:
            parts.append(f"{verb} {', '.join(_short(r) for r in sorted(which))}")
    change = "; ".join(parts)
    return (
        f"the recipients in {config or 'the config'} differ from those the data in {label} "
        f"is encrypted to ({change}). New snapshots would reuse data the new recipients "
        "cannot read, so nothing was written. To go on with this repository, put its "
        "recipients back in [keys] recipients (`emberkeep keys list` shows them). To give "
        "another set of people access, change the repository's set with `emberkeep keys "
        "add` or `keys remove` (an identity of a current recipient re-encrypts its keys, "
        "no data), or point the target at a new, empty location and run `emberkeep init` "
        "there."
    )


def _short(recipient: str) -> str:
    return f"{recipient[:12]}…{recipient[-6:]}"
