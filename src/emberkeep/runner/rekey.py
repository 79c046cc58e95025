"""``emberkeep keys``: who can read a site's backups, changed without touching a pack.

Each target's ``keys/recipients`` record is the source of truth (README, "Keys and team
changes"): ``keys add`` and ``keys remove`` change it in every target, then the config's
``[keys] recipients`` must name the same set, as every backup checks
(repository/recipients.py). ``--update-config`` rewrites that line of the config file;
without it the command prints the line to put there, and backups are refused until then.

Every change takes the exclusive lease (no backup or prune runs meanwhile) and writes in
the order ``repository/epochs.py`` gives: epoch files and the writer key's copy first,
the record last; running the same command again after a crash completes the change.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pyrage

from .. import clock, keys
from ..crashpoints import crash_point
from ..errors import NotFound, RepositoryError, UsageError
from ..repository import epochs, keyfiles, layout, writerchain
from ..repository import recipients as recipient_set
from ..repository.lease import Lease
from ..repository.repo import Repository
from ..site import Site
from ..storage.base import ObjectLocked
from .keyconfig import config_line as config_line  # the config's line: keyconfig.py
from .keyconfig import store_site_config as store_site_config
from .keyconfig import update_config as update_config
from .maintenance import lease_watch


@dataclass
class Change:
    """What a key command did in one target: what it wrote, in how long."""

    target: str
    message: str
    objects_written: list[str] = field(default_factory=list)
    bytes_written: int = 0
    seconds: float = 0.0
    recipients: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # recipient -> label, as recorded

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "message": self.message,
            "objects_written": self.objects_written,
            "bytes_written": self.bytes_written,
            "seconds": round(self.seconds, 4),
            "recipients": self.recipients,
            "labels": self.labels,
        }


class _Counting:
    """The target's storage, counting what is put (the cost a key change reports)."""

    def __init__(self, storage: Any, change: Change) -> None:
        self._storage, self._change = storage, change

    def put(self, name: str, data: Any, **kwargs: Any) -> Any:
        size = len(data) if isinstance(data, (bytes, bytearray)) else sum(len(p) for p in data)
        crash_point(f"put-{len(self._change.objects_written)}")  # tests kill here
        self._change.objects_written.append(name)
        self._change.bytes_written += size
        return self._storage.put(name, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def parse_recipient(text: str) -> str:
    try:
        return str(pyrage.x25519.Recipient.from_str(text.strip()))
    except Exception as exc:
        raise UsageError(
            f"{text!r} is not an age recipient (age1…); `emberkeep keygen` prints one"
        ) from exc


# -- the changes -------------------------------------------------------------------------


LABEL = re.compile(r"[a-z0-9._-]{1,32}")  # as config/schema.py LABEL


def parse_label(text: str) -> str:
    if not LABEL.fullmatch(text) or text.startswith("age1"):
        raise UsageError(
            f"label {text!r} is not a short name: use 1-32 lower-case letters, digits, '.', "
            "'_' or '-' (e.g. dba or alice), not starting with age1"
        )
    return text


def add(
    site: Site, recipient: str, target: str | None = None, label: str | None = None
) -> list[Change]:
    """``keys add``; with ``label``, the recipient is recorded with it (an existing one too:
    that only relabels it)."""
    wanted = parse_recipient(recipient)
    labels = {wanted: parse_label(label)} if label is not None else {}

    def run(repo: Repository, change: Change) -> None:
        _change_set(repo, change, add=frozenset({wanted}), labels=labels)

    return _each(site, target, run)


def remove(site: Site, recipient: str, target: str | None = None) -> list[Change]:
    """``keys remove age1…|LABEL``: a label is looked up in each target's record."""

    def run(repo: Repository, change: Change) -> None:
        unwanted = _resolve(_record(repo), recipient, change.target)
        _change_set(repo, change, drop=frozenset({unwanted}))

    return _each(site, target, run)


def _resolve(record: recipient_set.Record, text: str, target: str) -> str:
    """An ``age1…`` recipient as given, or the recipient a label names in the record."""
    if text.strip().startswith("age1"):
        return parse_recipient(text)
    for key, label in record.labels.items():
        if label == text:
            return key
    known = ", ".join(sorted(record.labels.values())) or "none"
    raise UsageError(
        f"target {target}: no recipient is labelled {text!r} (labels: {known}); give its "
        "age1… recipient, or see `emberkeep keys list`"
    )


def rotate(site: Site, target: str | None = None) -> list[Change]:
    return _each(site, target, _rotate, identity=False)


def convert(site: Site, target: str | None = None) -> list[Change]:
    def run(repo: Repository, change: Change) -> None:
        if not _convert(repo, change):
            change.message = "already uses key epochs: nothing to convert"

    return _each(site, target, run)


def replaceable_keys(storage: Any) -> None:
    """Refuse a key change, before it changes anything, in a target that cannot replace
    its key objects: an S3 bucket with Object Lock and no versioning refuses every
    overwrite of a locked object, and each key change replaces ``keys/recipients``. The
    record is written again as it is, which changes nothing anywhere else (on a versioned
    bucket it adds a version)."""
    try:
        raw = storage.get(layout.RECIPIENTS)
    except NotFound:
        return
    try:
        storage.put(layout.RECIPIENTS, raw, overwrite=True)
    except ObjectLocked as exc:
        until = f" until {exc.until:%Y-%m-%d %H:%M}Z" if exc.until else ""
        raise RepositoryError(
            f"target {storage.label}: a key change replaces {layout.RECIPIENTS}, the key "
            f"epoch files and {layout.WRITER_KEY}, and S3 Object Lock protects them{until} "
            "in a bucket that keeps no old versions, so the server refuses; nothing was "
            "changed. Use a versioned bucket for a locked target (AWS requires versioning "
            "for Object Lock; each replaced key object is kept there as a locked old "
            "version until its retention ends), or `emberkeep replicate` into a new "
            "repository made with the new recipients"
        ) from exc


def _each(site: Site, target: str | None, run: Any, *, identity: bool = True) -> list[Change]:
    done = []
    for name in site.target_names(target):
        change = Change(name, "")
        repo = site.repository(name, read=identity)
        counted = _Counting(repo.storage, change)
        repo.storage = counted
        started = time.perf_counter()
        with Lease(counted._storage, "exclusive", lease_watch(site)):
            replaceable_keys(counted._storage)
            repo.forget_keys()  # read under the lease: another change may have just ended
            run(repo, change)
        change.seconds = time.perf_counter() - started
        record = repo.key_record()
        change.recipients = list(record.recipients) if record else []
        change.labels = dict(record.labels) if record else {}
        done.append(change)
    return done


def _record(repo: Repository) -> recipient_set.Record:
    record = repo.key_record()
    return record or recipient_set.Record(recipient_set.names(repo.recipients))


def _convert(repo: Repository, change: Change) -> bool:
    """A repository from before epochs, given them in place (``epochs.py``): its packs'
    data keys read with the identity into ``keys/legacy.age``. False: nothing to do."""
    record = _record(repo)
    if record.epochs:
        return False
    recipients = keys.parse_recipients(record.recipients)
    storage = repo.storage
    index = repo.reload_index()
    legacy = sorted(name for name, p in index.packs.items() if p.epoch == epochs.LEGACY)
    pack_keys = {name: repo.pack_key(name) for name in legacy}
    record, legacy_key = epochs.new_epoch(storage, record, recipients, legacy=True)
    crash_point("convert-legacy-epoch")
    epochs.write_legacy(storage, str(legacy_key.to_public()), pack_keys)
    crash_point("convert-legacy-table")
    record, _ = epochs.new_epoch(storage, record, recipients)
    crash_point("convert-epoch")
    recipient_set.write(storage, repo.writer_key, record)
    repo.forget_keys()
    change.message = (
        f"converted to key epochs: the data keys of {len(legacy)} packs written before them "
        f"are in {epochs.LEGACY_TABLE}; new data uses epoch 1"
    )
    return True


def _change_set(
    repo: Repository,
    change: Change,
    *,
    add: frozenset[str] = frozenset(),
    drop: frozenset[str] = frozenset(),
    labels: dict[str, str] | None = None,
) -> None:
    for key, label in (labels or {}).items():  # before anything changes
        taken = _record(repo).labels
        holder = next((k for k, v in taken.items() if v == label and k != key), None)
        if holder is not None:
            raise UsageError(
                f"target {change.target}: label {label!r} is {holder}'s already; choose "
                "another, or `emberkeep keys list` to see the labels"
            )
    converted = _convert(repo, change)
    record = _record(repo)
    names = sorted((set(record.recipients) | add) - drop)
    if not names:
        raise UsageError("that would leave no recipient: nobody could read the backups")
    missing = drop - set(record.recipients)
    if missing:
        known = ", ".join(sorted(record.labels.values())) or "none"
        raise UsageError(
            f"target {change.target}: {', '.join(missing)} is not a recipient "
            f"({len(record.recipients)} are, labels: {known}; `emberkeep keys list` shows them)"
        )
    ring = repo.keyring()
    unread = [e for e in record.epochs if e.tag not in ring.secrets]
    if unread:
        raise UsageError(
            f"target {change.target}: the identity given cannot read key epoch "
            f"{unread[0].number} ({ring.why_not(unread[0].tag)}); a key change needs the "
            "identity of a current recipient (--identity FILE)"
        )
    recipients = keys.parse_recipients(names)
    epochs.rewrap(repo.storage, record, ring.secrets, recipients)
    crash_point("change-epochs")
    digest = keyfiles.put_writer_key(repo.storage, repo.writer_key, recipients)
    crash_point("change-writer-key")
    configs = _rewrap_site_configs(repo, recipients)
    history = record.removed
    if drop:  # what they could read until now (keys check), then a key they never had
        when = clock.iso(clock.now())
        history += tuple(
            recipient_set.Removed(key, record.labels.get(key), when,
                                  tuple(e.tag for e in record.epochs))
            for key in sorted(drop)
        )  # fmt: skip
        record, _ = epochs.new_epoch(repo.storage, record, recipients)
        crash_point("change-new-epoch")
    kept = {k: v for k, v in {**record.labels, **(labels or {})}.items() if k in names}
    record = replace(
        record, recipients=names, writer_key_sha256=digest, labels=kept, removed=history
    )
    recipient_set.write(repo.storage, repo.writer_key, record)
    repo.forget_keys()
    verb = "added" if add else "removed"
    shown = {**{r.key: r.label for r in history if r.label}, **kept}
    who = [f"{k} ({shown[k]})" if k in shown else k for k in sorted(add or drop)]
    change.message = (
        f"{'converted to key epochs; ' if converted else ''}{verb} "
        f"{', '.join(who)}: {len(names)} recipients; "
        f"{len(record.epochs)} epoch keys, the writer key and {configs} stored site "
        "configs re-encrypted, no pack touched"
    )
    if drop:
        change.message += (
            f"; new data uses epoch {record.current_epoch().number}. A removed recipient who "  # type: ignore[union-attr]
            "kept a copy of an older epoch key can still read what was written before "
            "(`emberkeep keys check` says what); to shut them out of that too, "
            "`emberkeep replicate --target NEW --re-encrypt` into a new repository"
        )


def _rewrap_site_configs(repo: Repository, recipients: list[pyrage.x25519.Recipient]) -> int:
    """Every stored site config the identity opens, encrypted to the new set in place (its
    sealed content unchanged), so that ``recover`` by a new recipient reads the site's
    history and shows what changed (runner/recover_review.py). One the identity does not
    open is left as it is (recover refuses it by name); one under Object Lock too."""
    done = 0
    for info in list(repo.storage.list(f"{layout.SITE_CONFIG}/")):
        try:
            plain = pyrage.decrypt(repo.storage.get(info.name), repo.identities)
        except (pyrage.DecryptError, NotFound):
            continue
        try:
            repo.storage.put(info.name, keys.wrap(plain, recipients), overwrite=True)
        except ObjectLocked:
            continue
        done += 1
    return done


def _rotate(repo: Repository, change: Change) -> None:
    record = repo.key_record()
    if record is None or not record.epochs:
        raise UsageError(
            f"target {change.target} was written before key epochs: run `emberkeep keys "
            "convert` (with an identity) first"
        )
    recipients = keys.parse_recipients(record.recipients)
    record, _ = epochs.new_epoch(repo.storage, record, recipients)
    crash_point("rotate-epoch")
    recipient_set.write(repo.storage, repo.writer_key, record)
    repo.forget_keys()
    change.message = f"new key epoch {record.current_epoch().number}: new data uses it"  # type: ignore[union-attr]


# -- listing -----------------------------------------------------------------------------


def describe(repo: Repository) -> dict[str, Any]:
    """Recipients, epochs and which snapshots need each, the writer key (``keys list``)."""
    record = repo.key_record()
    index = repo.index
    needs: dict[int, list[str]] = {}
    packs: dict[int, int] = {}
    for listed_pack in index.packs.values():
        packs[listed_pack.epoch] = packs.get(listed_pack.epoch, 0) + 1
    for snapshot in repo.snapshots():
        for tag in index.epochs_of(snapshot.blob_ids()):
            needs.setdefault(tag, []).append(snapshot.id)
    listed = []
    for epoch in record.epochs if record else ():
        listed.append(
            {
                "number": epoch.number,
                "tag": f"{epoch.tag:08x}",
                "object": epochs.epoch_object(epoch.tag),
                "created": epoch.created,
                "current": epoch.tag == record.current,  # type: ignore[union-attr]
                "legacy": epoch.tag == epochs.LEGACY,
                "packs": packs.get(epoch.tag, 0),
                "encrypted_to": _stanzas(repo, epochs.epoch_object(epoch.tag)),
                "snapshots": sorted(needs.get(epoch.tag, [])),
            }
        )
    unconverted = not record or not record.epochs
    numbers = {e.tag: e.number for e in record.epochs} if record else {}
    return {
        "recipients": list(record.recipients) if record else [],
        "labels": dict(sorted(record.labels.items())) if record else {},
        "removed": [
            {
                "recipient": r.key,
                "label": r.label,
                "removed": r.when,
                "epochs": sorted(numbers[t] for t in r.epochs if t in numbers),
            }
            for r in (record.removed if record else ())
        ],
        "epochs": sorted(listed, key=lambda e: e["number"]),
        "converted": not unconverted,
        "legacy_packs": packs.get(epochs.LEGACY, 0) if unconverted else 0,
        "writer_key": {
            "fingerprint": repo.writer_key.fingerprint,
            "object": layout.WRITER_KEY,
            "generation": repo.writer_key.generation,
            "current": True,
        },
        "writer_keys": _writer_keys(repo),
    }


def _writer_keys(repo: Repository) -> list[dict[str, Any]]:
    """The writer key generations, current last: what each retired one sealed before it
    was retired is still read (repository/writerchain.py), nothing else it seals."""
    listed = {r.fingerprint: r for r in repo.chain.retired}
    found = []
    for key in (*repo.writer_key.retired, repo.writer_key):
        entry = listed.get(key.fingerprint)
        found.append(
            {
                "generation": key.generation,
                "fingerprint": key.fingerprint,
                "current": key is repo.writer_key,
                "retired": key is not repo.writer_key,
                "objects_sealed_before_retired": len(entry.objects) if entry else None,
            }
        )
    return found


def _stanzas(repo: Repository, obj: str) -> int | None:
    """How many recipients an epoch file is encrypted to (age names none of them): the
    recipient count, unless a key change was cut short (then run it again). None: missing."""
    try:
        data = repo.storage.get(obj)
    except NotFound:
        return None
    header = data.split(b"\n---", 1)[0]
    return header.count(b"\n-> X25519 ")


def list_keys(site: Site, target: str | None = None) -> dict[str, Any]:
    return {name: describe(site.repository(name)) for name in site.target_names(target)}


# -- a new writer key ------------------------------------------------------------------


def rotate_writer(site: Site, target: str | None = None) -> list[Change]:
    """``keys rotate --writer`` (repository/writerchain.py): a new key epoch and a new
    writer key generation in every target, then on this host. The next key is kept in
    ``writer.key.next`` until every target took it, so running the command again after a
    crash completes the same rotation; each target's ``config`` is its commit point."""
    if target is not None:
        raise UsageError(
            "the writer key is the site's, shared by every target (replicate copies between "
            "them): `keys rotate --writer` changes it in all of them; leave out --target"
        )
    current = site.writer_key()
    if current is None:
        raise UsageError(
            f"this host has no writer key ({site.writer_key_path}): rotate it on a backup "
            "host, or run `emberkeep init --identity FILE` here first"
        )
    pending = site.pending_writer_key_path
    if pending.exists():
        new = keys.WriterKey.load(pending)
        if new.fingerprint == current.fingerprint:  # cut short after the host took it
            pending.unlink()
            return [
                Change(n, "writer key rotation already complete") for n in site.target_names(None)
            ]
        if new.generation_of(current.fingerprint) != current.without_chain() or (
            new.generation != current.generation + 1
        ):
            raise UsageError(
                f"{pending} is not the successor of this host's writer key "
                f"({site.writer_key_path}): it is left from another key; move it away"
            )
    else:
        for name in site.target_names(None):  # before anything changes
            storage = site.storage(name)
            with Lease(storage, "exclusive", lease_watch(site)):
                replaceable_keys(storage)
        new = current.rotated()
        new.save(pending)
    crash_point("writer-pending")
    done = []
    for name in site.target_names(None):
        change = Change(name, "")
        storage = site.storage(name)
        counted = _Counting(storage, change)
        started = time.perf_counter()
        with Lease(storage, "exclusive", lease_watch(site)):
            repo = _rotate_writer_in(site, counted, current, new, change)
        change.seconds = time.perf_counter() - started
        record = repo.key_record()
        change.recipients = list(record.recipients) if record else []
        done.append(change)
    new.save(site.writer_key_path)  # from here on this host writes with the new key
    crash_point("writer-host-key")
    pending.unlink()
    return done


def _rotate_writer_in(
    site: Site, storage: Any, old: keys.WriterKey, new: keys.WriterKey, change: Change
) -> Repository:
    """One target: a new key epoch (as ``keys rotate``), then the new key's copy, then
    ``config`` naming it and listing what the old key sealed (the commit point), then the
    recipient record sealed with it. A target that committed already gets the last two."""
    raw = keyfiles.read_config_bytes(storage)
    taken = writerchain.peek(keyfiles.peek_config(raw, storage.label))
    if taken.fingerprint != new.fingerprint:
        repo = Repository.open(storage, writer_key=old, recipients=site.recipients)
        _rotate(repo, change)
        record = _record(repo)
        retired = writerchain.freeze(storage, old, repo.chain)
        recipients = keys.parse_recipients(record.recipients)
        keyfiles.put_writer_key(storage, new, recipients)
        crash_point("writer-copy")
        keyfiles.write_config(storage, new, overwrite=True, retired=retired)
        crash_point("writer-config")
    repo = Repository.open(storage, writer_key=new, recipients=site.recipients)
    record = _record(repo)  # sealed with the old key until the next line (writerchain.py)
    digest = keyfiles.put_writer_key(storage, new, keys.parse_recipients(record.recipients))
    recipient_set.write(storage, new, replace(record, writer_key_sha256=digest))
    repo.forget_keys()
    number = repo.key_record().current_epoch().number  # type: ignore[union-attr]
    change.message = (
        f"writer key generation {new.generation} (fingerprint {new.fingerprint}) and key "
        f"epoch {number}: the next backup reads and uploads all data again (nothing "
        "deduplicates against the old key), and a host holding only the old key is refused "
        "until `emberkeep init --identity FILE` there fetches the new one"
    )
    return repo
