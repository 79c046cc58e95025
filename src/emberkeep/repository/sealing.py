"""Sealed documents: the small JSON objects ``recover`` and writers trust.

The storage side (README, "How it keeps data safe": S) can add and replace objects and
knows the recipients, so anything merely encrypted to the recipients, or stored in the
clear, may be its work. What the repository's own code decides by (``config``,
``keys/recipients``, each stored site config) therefore carries a *seal*: a keyed BLAKE3
MAC under a key derived from the writer key's index key, which the storage side never
has. A writer host holds the writer key; a reader gets it from ``keys/writer.age`` with
an identity. One helper serves all of them; ``kind`` keeps a seal of one kind from
passing for another.

A sealed document is the JSON object with one more member, ``seal``, written in one
canonical form: any byte changed, formatting included, fails. A document without a
``seal`` is from an emberkeep before sealing: ``unseal`` says so (``sealed`` False) and
each caller decides what such a document may still be trusted for. A document that the
storage side should not even read (the recipient set) is sealed *secret*: the same JSON,
AES-256-GCM encrypted with the index key, ``kind`` in the associated data, as index files
and snapshot headers are.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

import blake3

from .. import crypto, keys
from ..errors import IntegrityError

FIELD = "seal"
_CONTEXT = b"emberkeep seal v1"


@dataclass(frozen=True)
class Unsealed:
    body: dict[str, Any]  # the document without its seal
    sealed: bool  # False: written before sealing (no seal member); not authenticated


def seal(writer_key: keys.WriterKey, kind: str, body: dict[str, Any]) -> bytes:
    """``body`` with its seal, as the bytes to store."""
    return _render({**body, FIELD: _mac(writer_key, kind, body)})


def parse(raw: bytes, obj: str) -> dict[str, Any]:
    """The JSON object in ``raw`` (no key needed, nothing verified)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(obj, "not valid JSON (damaged)") from exc
    if not isinstance(doc, dict):
        raise IntegrityError(obj, "not a JSON object (damaged)")
    return doc


def unseal(writer_key: keys.WriterKey, kind: str, raw: bytes, obj: str) -> Unsealed:
    """Verify a stored document; ``IntegrityError`` naming ``obj`` when its seal fails."""
    doc = parse(raw, obj)
    if FIELD not in doc:
        return Unsealed(doc, sealed=False)
    found = doc.pop(FIELD)
    expected = _mac(writer_key, kind, doc)
    if not isinstance(found, str) or not hmac.compare_digest(found, expected):
        raise IntegrityError(
            obj, "its seal does not verify with the repository's writer key (altered or damaged)"
        )
    if raw != _render({**doc, FIELD: found}):
        raise IntegrityError(obj, "it is not in the form it was sealed in (damaged)")
    return Unsealed(doc, sealed=True)


def seal_secret(writer_key: keys.WriterKey, kind: str, body: dict[str, Any]) -> bytes:
    """``body`` encrypted and authenticated with the index key."""
    return crypto.encrypt(writer_key.index_key, _aad(kind), _render(body))


def unseal_secret(writer_key: keys.WriterKey, kind: str, raw: bytes, obj: str) -> dict[str, Any]:
    """The body of a secret sealed document; ``IntegrityError`` naming ``obj`` when it does
    not decrypt with the writer key (damaged, forged, or another repository's)."""
    try:
        plain = crypto.decrypt(writer_key.index_key, _aad(kind), raw)
    except (crypto.InvalidTag, ValueError) as exc:
        raise IntegrityError(
            obj, "it does not authenticate with the repository's writer key (altered or damaged)"
        ) from exc
    return parse(plain, obj)


def _aad(kind: str) -> bytes:
    return f"emberkeep {kind} v1".encode()


def _render(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=True).encode() + b"\n"


def _mac(writer_key: keys.WriterKey, kind: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    key = blake3.blake3(_CONTEXT, key=writer_key.index_key).digest()
    return blake3.blake3(kind.encode() + b"\0" + canonical.encode(), key=key).hexdigest()
