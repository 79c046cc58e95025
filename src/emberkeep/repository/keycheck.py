"""The objects ``recover`` needs before any snapshot: ``config``, ``keys/recipients`` and
``keys/writer.age``. ``inspect`` says what is wrong with them (for ``check``); ``upkeep``
is what a host holding the writer key does before it writes (and ``check`` there): it
records the recipients, seals a config from before sealing, and writes the writer key's
copy again when it is missing, damaged, or not yet recorded, saying so each time.

Without an identity a host cannot decrypt ``keys/writer.age``, so it compares the copy's
SHA-256 with the one the writer recorded in the sealed ``keys/recipients`` (and looks at
its age header and length). With an identity, the copy is decrypted and must hold this
repository's writer key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .. import keys
from ..errors import IntegrityError, NotFound, UsageError, WrongIdentity
from ..storage.base import ObjectLocked, get_at_most
from . import epochs, keyfiles, layout
from . import recipients as recipient_set
from .repo import Repository


@dataclass(frozen=True)
class Finding:
    obj: str
    message: str
    error: bool = True  # False: a note, nothing is wrong


def inspect(repo: Repository) -> list[Finding]:
    """Every problem of the three objects, without changing anything."""
    findings = _config_findings(repo)
    record, record_findings = _record_findings(repo)
    findings += record_findings
    findings += _writer_key_findings(repo, record)
    findings += _epoch_findings(repo, record)
    return findings


def _epoch_findings(repo: Repository, record: recipient_set.Record | None) -> list[Finding]:
    """Each key epoch the record lists must have its file (README, "Keys and team changes"): the
    packs of a lost one are lost to every reader. With an identity, each must open."""
    if record is None or not record.epochs:
        return []
    findings = []
    ring = repo.keyring() if repo.identities else None
    for epoch in record.epochs:
        obj = epochs.epoch_object(epoch.tag)
        if repo.storage.stat(obj) is None:
            lost = f"missing: no reader can open the packs of key epoch {epoch.number}"
            findings.append(Finding(obj, lost))
        elif ring is not None and epoch.tag not in ring.secrets:
            findings.append(Finding(obj, ring.why_not(epoch.tag)))
        if epoch.tag == epochs.LEGACY and repo.storage.stat(epochs.LEGACY_TABLE) is None:
            lost = (
                "missing: packs from before key epochs open only with the identities of "
                "their day, not with recipients added since"
            )
            findings.append(Finding(epochs.LEGACY_TABLE, lost))
    return findings


def upkeep(repo: Repository, config_path: Path | None) -> list[Finding]:
    """Before a write: ``RecipientsChanged`` unless the config's recipients are the
    repository's (``IntegrityError`` for a damaged record: nothing is written over it);
    then ``config`` sealed and the writer key's copy the recorded one, repaired from this
    host's key where not. Returns what was repaired, as notes."""
    storage, writer_key = repo.storage, repo.writer_key
    record = recipient_set.ensure(
        storage, writer_key, repo.recipients, config_path, labels=repo.labels
    )
    repo.record = record
    done = []
    mismatch = recipient_set.label_mismatch(record, repo.labels)
    if mismatch:
        done.append(_note(layout.RECIPIENTS, mismatch))
    state = repo.config_state
    if state.damage or not state.sealed:
        done.append(_seal_config(repo))
    try:
        copy: bytes | None = get_at_most(storage, layout.WRITER_KEY, layout.WRITER_KEY_MAX)
    except NotFound:
        copy = None
    except IntegrityError:
        copy = b""  # too large to be one: damaged, written again below
    if copy is None or _sha256(copy) != record.writer_key_sha256:
        done.append(_write_copy_again(repo, record, copy))
    return done


def _seal_config(repo: Repository) -> Finding:
    damage = repo.config_state.damage
    if repo.writer_key.generation > 1 and damage:
        return _note(
            layout.CONFIG,
            f"{damage}; not written again: after `keys rotate --writer` it lists what the "
            "retired writer keys sealed, which the key alone does not imply (until it is "
            "whole, what they sealed is refused). Put back a copy of this target's "
            "`config` from before the damage, or `emberkeep replicate` into a new "
            "repository from another target of the site",
        )
    try:
        keyfiles.write_config(
            repo.storage, repo.writer_key, overwrite=True, retired=repo.chain.retired
        )
    except ObjectLocked as exc:
        return _note(layout.CONFIG, f"{damage or 'not sealed'}; not written again: {exc}")
    repo.config_state = keyfiles.ConfigState(sealed=True)
    if damage:
        return _note(layout.CONFIG, f"{damage}: written again from this host's writer key")
    return _note(layout.CONFIG, "sealed with the writer key (it was written before sealing)")


def _write_copy_again(
    repo: Repository, record: recipient_set.Record, copy: bytes | None
) -> Finding:
    """The writer key's copy written again, then its SHA-256 recorded; under Object Lock
    (``ObjectLocked``) what cannot be replaced yet is said, and the job goes on."""
    obj = layout.WRITER_KEY
    if copy is None:
        why = "was missing"
    elif record.writer_key_sha256 is None:
        why = "had no recorded SHA-256 (a repository from before that)"
    else:
        why = "was damaged or replaced (its SHA-256 is not the one recorded)"
    try:
        digest = keyfiles.put_writer_key(repo.storage, repo.writer_key, repo.recipients)
    except ObjectLocked as exc:
        return _note(obj, f"{why}; not written again: {exc}")
    try:
        recipient_set.record_writer_key(repo.storage, repo.writer_key, record, digest)
    except ObjectLocked as exc:
        return _note(
            obj,
            f"{why}: written again from this host's writer key, but its SHA-256 could not "
            f"be recorded ({exc}); check reports the copy until then",
        )
    return _note(
        obj,
        f"{why}: written again from this host's writer key, and its SHA-256 recorded, so "
        "that recover can use it and check can verify it",
    )


def _note(obj: str, message: str) -> Finding:
    return Finding(obj, message, error=False)


def _config_findings(repo: Repository) -> list[Finding]:
    state = repo.config_state
    if state.damage:
        return [Finding(layout.CONFIG, state.damage)]
    if not state.sealed:
        note = (
            "not sealed yet (written before sealing); it holds what the writer key implies, "
            "and the next backup seals it"
        )
        return [Finding(layout.CONFIG, note, error=False)]
    return []


def _record_findings(repo: Repository) -> tuple[recipient_set.Record | None, list[Finding]]:
    try:
        record = recipient_set.read(repo.storage, repo.writer_key)
    except IntegrityError as exc:
        return None, [Finding(layout.RECIPIENTS, exc.detail)]
    if record is None:
        missing = "missing (deleted?): the next backup records [keys] recipients again"
        return None, [Finding(layout.RECIPIENTS, missing)]
    wanted = recipient_set.names(repo.recipients)
    if record.recipients != wanted:
        differ = (
            "names other recipients than [keys] recipients in the config "
            f"({len(record.recipients)} recorded, {len(wanted)} configured, "
            f"{len(set(record.recipients) & set(wanted))} in both); backups are refused "
            "until the config names the ones the data is encrypted to"
        )
        return record, [Finding(layout.RECIPIENTS, differ)]
    mismatch = recipient_set.label_mismatch(record, repo.labels)
    return record, [Finding(layout.RECIPIENTS, mismatch, error=False)] if mismatch else []


def _writer_key_findings(repo: Repository, record: recipient_set.Record | None) -> list[Finding]:
    obj = layout.WRITER_KEY
    try:
        copy = get_at_most(repo.storage, obj, layout.WRITER_KEY_MAX)
    except NotFound:
        return [Finding(obj, "missing: recover cannot rebuild the writer key from this target")]
    except IntegrityError as exc:
        return [Finding(obj, exc.detail)]
    problem = keyfiles.copy_problem(copy, len(record.recipients) if record else None)
    if problem is not None:
        return [Finding(obj, f"damaged: {problem}")]
    findings = []
    recorded = record.writer_key_sha256 if record else None
    if recorded is not None and _sha256(copy) != recorded:
        findings.append(
            Finding(obj, "damaged or replaced: its SHA-256 is not the one the writer recorded")
        )
    elif record is not None and recorded is None:
        note = "no SHA-256 of it recorded yet (from before that): the next backup records one"
        findings.append(Finding(obj, note, error=False))
    if repo.identities and not any(f.error for f in findings):
        findings += _decrypted_findings(repo, copy, as_recorded=recorded is not None)
    return findings


def _decrypted_findings(repo: Repository, copy: bytes, *, as_recorded: bool) -> list[Finding]:
    """With an identity: the copy must decrypt to this repository's writer key.
    ``as_recorded``: its SHA-256 is the recorded one, so it is not damaged."""
    obj = layout.WRITER_KEY
    try:
        plain = keys.unwrap(copy, repo.identities, obj)
        found = keys.WriterKey.from_bytes(plain, obj)
    except WrongIdentity:
        if as_recorded:
            return [Finding(obj, "the identity given is not one of the recipients it is for")]
        return [
            Finding(
                obj,
                "cannot be decrypted with the identity given: the identity is not one of "
                "its recipients, or the copy is damaged",
            )
        ]
    except IntegrityError as exc:
        return [Finding(obj, exc.detail)]
    except UsageError as exc:  # decrypted, but not a writer key: the writer's own mistake
        return [Finding(obj, f"damaged: {exc}")]
    if found != repo.writer_key:
        return [
            Finding(
                obj,
                f"holds another writer key (fingerprint {found.fingerprint}) than this "
                f"repository's ({repo.writer_key.fingerprint}): replaced",
            )
        ]
    return []


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
