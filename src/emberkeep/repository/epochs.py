"""Key epochs: what a pack's data key is wrapped to (README, "Keys and team changes").

A pack's data key is wrapped to one *epoch key* (an age X25519 key pair made by
emberkeep), not to every recipient. The epoch key's secret is age-encrypted to the
recipients in one small object, ``keys/epoch-<tag>.age``; its public half, a number and
the time it began are listed in the sealed ``keys/recipients`` record, which a writer
reads with its writer key. So adding or removing a recipient re-encrypts the epoch files
(one per epoch still needed) and the writer key's copy, never a pack; ``keys rotate``
starts a new epoch, which new packs use from then on.

Each pack's index record names its epoch by *tag* (the first four bytes of the SHA-256
of the epoch key's public half), so the targets of one site, each with its own epochs,
never mistake one epoch for another, and a snapshot copied to another target brings its
epochs along (``share``). Tag 0 is *legacy*: packs written before epochs, wrapped to the
recipients of their day. Converting such a repository (``convert``) reads each legacy
pack's data key once, with an identity, and stores them all in ``keys/legacy.age``,
encrypted to a legacy epoch key: from then on legacy packs are read, and their readers
changed, like any epoch's.

Order of writes, for crash safety: an epoch file is written before the record that lists
it, and the record (the commit point) last; a file the record does not list is ignored,
and written again by the next run. Every object a change writes is encrypted either to
the old recipient set or to the new one, so whoever holds the identities common to both
reads every snapshot at every moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass, field, replace

import pyrage

from .. import clock, keys
from ..crashpoints import crash_point
from ..errors import IntegrityError, NotFound, WrongIdentity
from ..storage.base import Storage
from . import recipients as recipient_set

LEGACY = 0
LEGACY_TABLE = "keys/legacy.age"
EPOCH_PREFIX = "keys/epoch-"


def tag_of(public: str) -> int:
    """An epoch's tag: never 0 (``LEGACY``)."""
    digest = hashlib.sha256(b"emberkeep epoch\0" + public.encode()).digest()
    return int.from_bytes(digest[:4], "big") or 1


def epoch_object(tag: int) -> str:
    return f"{EPOCH_PREFIX}{tag:08x}.age"


def new_epoch(
    storage: Storage,
    record: recipient_set.Record,
    recipients: list[pyrage.x25519.Recipient],
    *,
    legacy: bool = False,
) -> tuple[recipient_set.Record, pyrage.x25519.Identity]:
    """A new epoch key, its file written (encrypted to ``recipients``); returns the record
    that lists it as current (for the caller to write: the commit point) and the key."""
    identity = keys.new_identity()
    public = str(identity.to_public())
    tag = LEGACY if legacy else tag_of(public)
    number = 1 + max((e.number for e in record.epochs), default=-1 if legacy else 0)
    storage.put(epoch_object(tag), keys.wrap(str(identity).encode(), recipients), overwrite=True)
    epoch = recipient_set.Epoch(tag, number, public, clock.iso(clock.now()))
    others = [e for e in record.epochs if e.tag != tag]
    current = record.current if legacy else tag
    return replace(record, epochs=tuple([*others, epoch]), current=current), identity


def rewrap(
    storage: Storage,
    record: recipient_set.Record,
    secrets_by_tag: dict[int, str],
    recipients: list[pyrage.x25519.Recipient],
) -> int:
    """Every listed epoch's file encrypted to ``recipients``; returns the bytes written."""
    written = 0
    for epoch in record.epochs:
        data = keys.wrap(secrets_by_tag[epoch.tag].encode(), recipients)
        storage.put(epoch_object(epoch.tag), data, overwrite=True)
        written += len(data)
        crash_point("rewrap-epoch")
    return written


@dataclass
class Keyring:
    """What a reader holds: the epoch keys it could open, and the legacy packs' keys."""

    record: recipient_set.Record | None
    identities: list[pyrage.x25519.Identity] = field(default_factory=list)
    secrets: dict[int, str] = field(default_factory=dict)  # tag -> AGE-SECRET-KEY…
    legacy: dict[str, bytes] = field(default_factory=dict)  # legacy pack -> data key
    unreadable: dict[int, str] = field(default_factory=dict)  # tag -> why

    def epoch(self, tag: int) -> recipient_set.Epoch | None:
        if self.record is None:
            return None
        return next((e for e in self.record.epochs if e.tag == tag), None)

    def why_not(self, tag: int) -> str:
        """Why a pack of epoch ``tag`` does not open, for the error message."""
        epoch = self.epoch(tag)
        if epoch is None:
            if tag == LEGACY:
                return "it was written before key epochs, to recipients the identity is not"
            return "its key epoch is not listed in keys/recipients (damaged, or pruned)"
        name = f"epoch {epoch.number} ({epoch_object(tag)})"
        reason = self.unreadable.get(tag)
        if reason is None:
            return f"its data key is not wrapped to key {name} (damaged)"
        return f"the identity given is not a recipient of key {name}: {reason}"


def load(
    storage: Storage,
    record: recipient_set.Record | None,
    identities: list[pyrage.x25519.Identity],
) -> Keyring:
    """Open every epoch key with ``identities``. With the sealed record, only the epochs it
    lists, each of which must hold the public key it lists (the storage side may have
    replaced the file); without it (a repository from before epochs, or a damaged record),
    every epoch file whose key matches its name: reading never depends on the record, and
    a planted key opens nothing (every blob is authenticated under its pack's data key)."""
    ring = Keyring(record)
    if record is not None and record.epochs:
        wanted = {e.tag: e.public for e in record.epochs}
    else:
        wanted = {}
        for info in storage.list("keys/"):
            tag = _tag_of_object(info.name)
            if tag is not None:
                wanted[tag] = ""
    for tag, public in sorted(wanted.items()):
        obj = f"{storage.label}/{epoch_object(tag)}"
        try:
            secret = keys.unwrap(storage.get(epoch_object(tag)), identities, obj).decode()
            identity = pyrage.x25519.Identity.from_str(secret.strip())
        except NotFound:
            ring.unreadable[tag] = f"{obj} is missing"
            continue
        except WrongIdentity:
            ring.unreadable[tag] = "it was removed, or never was one"
            continue
        except (IntegrityError, UnicodeDecodeError, ValueError, pyrage.IdentityError) as exc:
            ring.unreadable[tag] = f"{obj} is damaged ({exc})"
            continue
        found = str(identity.to_public())
        if found != public and (public or (tag != LEGACY and tag_of(found) != tag)):
            ring.unreadable[tag] = f"{obj} holds another key than the one recorded (forged)"
            continue
        ring.secrets[tag] = secret.strip()
        ring.identities.append(identity)
        if tag == LEGACY:
            ring.legacy = _read_legacy(storage, identity)
    return ring


def _tag_of_object(name: str) -> int | None:
    if not (name.startswith(EPOCH_PREFIX) and name.endswith(".age")):
        return None
    try:
        return int(name[len(EPOCH_PREFIX) : -len(".age")], 16)
    except ValueError:
        return None


def _read_legacy(storage: Storage, identity: pyrage.x25519.Identity) -> dict[str, bytes]:
    obj = f"{storage.label}/{LEGACY_TABLE}"
    try:
        plain = keys.unwrap(storage.get(LEGACY_TABLE), [identity], obj)
        table = json.loads(plain)
        return {str(name): bytes.fromhex(key) for name, key in table["packs"].items()}
    except NotFound:
        return {}
    except (WrongIdentity, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(obj, f"not the legacy key table ({exc}): damaged") from exc


def write_legacy(storage: Storage, public: str, pack_keys: dict[str, bytes]) -> int:
    """The legacy packs' data keys in one object encrypted to the legacy epoch key."""
    body = {"format": 1, "packs": {name: key.hex() for name, key in sorted(pack_keys.items())}}
    data = keys.wrap(json.dumps(body).encode(), [pyrage.x25519.Recipient.from_str(public)])
    storage.put(LEGACY_TABLE, data, overwrite=True)
    return len(data)


def share(src: Storage, src_record: recipient_set.Record, dst: Storage, writer_key: keys.WriterKey,
          tags: set[int]) -> None:  # fmt: skip
    """Before packs of epochs ``tags`` are copied from ``src`` into ``dst`` (replicate):
    ``dst`` gets those epochs' files, verbatim (encrypted to the same recipients), and its
    record lists them; no identity is needed."""
    dst_record = recipient_set.read(dst, writer_key)
    if dst_record is None:
        return  # a repository from before epochs: packs of epochs it lacks are refused below
    have = {e.tag for e in dst_record.epochs}
    wanted = [e for e in src_record.epochs if e.tag in tags and e.tag not in have]
    if not wanted:
        return
    for epoch in wanted:
        dst.put(epoch_object(epoch.tag), src.get(epoch_object(epoch.tag)), overwrite=True)
        if epoch.tag == LEGACY:
            with contextlib.suppress(NotFound):
                dst.put(LEGACY_TABLE, src.get(LEGACY_TABLE), overwrite=True)
    number = max((e.number for e in dst_record.epochs), default=0)
    added = tuple(replace(e, number=number + i + 1) for i, e in enumerate(wanted))
    recipient_set.write(dst, writer_key, replace(dst_record, epochs=dst_record.epochs + added))


class LazyKeyring:
    """A repository's keyring, loaded once on first need however many threads ask."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ring: Keyring | None = None

    def get(self, load_ring: object) -> Keyring:
        with self._lock:
            if self._ring is None:
                self._ring = load_ring()  # type: ignore[operator]
            return self._ring

    def reset(self) -> None:
        with self._lock:
            self._ring = None
