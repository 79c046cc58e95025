"""The writer key's generations in a repository (docs/design.md, "Writer key rotation").

``keys rotate --writer`` replaces the writer key (MAC key, index key, chunker seed) with
a new generation. The new key carries the ones it replaced (``keys.WriterKey.retired``),
so a host holding it still reads the snapshot headers, index files, prune records and
site configs the old ones sealed; a reader gets the same chain from ``keys/writer.age``
and verifies old chunk ids with the old MAC keys.

What a retired key sealed is trusted only if it was there when the key was retired: the
rotation lists those objects, and the SHA-256 of the recipient record, in ``config``
(format 2, sealed with the new key). An object a retired key opens that is not listed
was written after the rotation, by a host holding only the old key (lost, or not yet
given the new one): it is refused by name, never used. The config also names the current
generation's fingerprint, so a host whose key is retired is told so (``RetiredWriterKey``)
instead of writing what nobody would accept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import keys
from ..errors import NotFound
from ..storage.base import Storage, get_at_most
from . import layout

FROZEN_PREFIXES = (layout.SNAPSHOTS, layout.INDEX, layout.FORGOTTEN, layout.SITE_CONFIG)


@dataclass(frozen=True)
class Retired:
    """One retired generation as ``config`` lists it: what it sealed before it was retired."""

    generation: int
    fingerprint: str
    objects: frozenset[str] = frozenset()
    recipients_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "fingerprint": self.fingerprint,
            "objects": sorted(self.objects),
            "recipients_sha256": self.recipients_sha256,
        }


@dataclass(frozen=True)
class Chain:
    """What ``config`` says of the writer generations (empty in a format 1 config)."""

    generation: int = 1
    fingerprint: str | None = None
    retired: tuple[Retired, ...] = ()
    keys_by_object: dict[str, keys.WriterKey] = field(default_factory=dict)

    def key_for(self, name: str) -> keys.WriterKey | None:
        """The retired key that sealed ``name`` before it was retired; None: not listed."""
        return self.keys_by_object.get(name)

    def retired_record_key(self, raw: bytes, key: keys.WriterKey) -> keys.WriterKey | None:
        """The retired key that sealed the recipient record ``raw``, when ``raw`` is the
        one that was there at its rotation (a rotation cut short before re-sealing it)."""
        digest = hashlib.sha256(raw).hexdigest()
        for entry in self.retired:
            if entry.recipients_sha256 == digest:
                return key.generation_of(entry.fingerprint)
        return None


def body_part(key: keys.WriterKey, retired: Iterable[Retired]) -> dict[str, Any]:
    """The ``writer`` field of a format 2 config."""
    return {
        "generation": key.generation,
        "fingerprint": key.fingerprint,
        "retired": [r.to_json() for r in retired],
    }


def parse(body: dict[str, Any], key: keys.WriterKey | None) -> Chain:
    """The chain ``body`` (a config) names; with ``key``, which key sealed each listed
    object. Malformed: ``ValueError``."""
    writer = body.get("writer")
    if writer is None:
        return Chain()
    if not isinstance(writer, dict):
        raise ValueError("its writer field is not an object")
    retired = tuple(
        Retired(
            _generation(r["generation"]),
            str(r["fingerprint"]),
            frozenset(str(o) for o in r.get("objects", [])),
            None if r.get("recipients_sha256") is None else str(r["recipients_sha256"]),
        )
        for r in writer.get("retired", [])
    )
    by_object: dict[str, keys.WriterKey] = {}
    if key is not None:
        for entry in retired:
            old = key.generation_of(entry.fingerprint)
            if old is not None:
                by_object.update(dict.fromkeys(entry.objects, old))
    return Chain(_generation(writer["generation"]), str(writer["fingerprint"]), retired, by_object)


def peek(body: dict[str, Any]) -> Chain:
    """The chain an unverified config names, for deciding what to refuse or skip; a
    malformed one (the storage side may have written it) names none."""
    try:
        return parse(body, None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Chain()


def _generation(value: object) -> int:
    """A generation number as a config lists it: a JSON integer from 1 (not text, not a
    float: ``int(Infinity)`` would be an ``OverflowError``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"its writer generation {value!r} is not a whole number from 1")
    return value


def matches(chain: Chain, key: keys.WriterKey) -> bool:
    """Whether ``chain`` names exactly ``key``'s generations (current and retired)."""
    named = [(r.generation, r.fingerprint) for r in chain.retired]
    held = [(k.generation, k.fingerprint) for k in key.retired]
    return (chain.generation, chain.fingerprint) == (key.generation, key.fingerprint) and (
        named == held
    )


def freeze(storage: Storage, old: keys.WriterKey, before: Chain) -> tuple[Retired, ...]:
    """The retired list of the config that retires ``old``: the lists before, and what
    ``old`` sealed (every object under the sealed prefixes not already listed as another
    retired key's; the recipient record's SHA-256)."""
    earlier: set[str] = set()
    for entry in before.retired:
        earlier |= entry.objects
    names = set()
    for prefix in FROZEN_PREFIXES:
        names |= {i.name for i in storage.list(f"{prefix}/")} - earlier
    try:
        raw = get_at_most(storage, layout.RECIPIENTS, layout.RECIPIENTS_MAX)
        record = hashlib.sha256(raw).hexdigest()
    except NotFound:
        record = None
    mine = Retired(old.generation, old.fingerprint, frozenset(names), record)
    return (*before.retired, mine)
