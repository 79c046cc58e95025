"""The repository's ``config`` and its copy of the writer key (``keys/writer.age``): how
they are written, read and told from damaged or forged ones.

``config`` (format, repository id, chunker sizes) stays readable without a key, and is a
sealed document (``sealing.py``): the storage side cannot alter it unnoticed. One written
before sealing holds nothing a writer key does not imply, so it is verified by comparing
it with what that key implies, and sealed by the next writer (``keycheck.upkeep``).

``keys/writer.age`` is the writer key encrypted to the recipients: the one object a new
host needs to read anything. A reader who cannot decrypt it is told whether the identity
is not a recipient or the copy is damaged; the SHA-256 of the copy a writer wrote is in
``keys/recipients`` (``recipients.py``), for hosts without an identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pyrage

from .. import keys
from ..errors import (
    IntegrityError,
    NotFound,
    RepositoryError,
    RetiredWriterKey,
    UsageError,
    WrongIdentity,
)
from ..storage.base import Storage, get_at_most
from . import layout, sealing, writerchain
from . import recipients as recipient_set
from .snapshot import decode_snapshot

CONFIG_KIND = "config"
AGE_MAGIC = b"age-encryption.org/v1\n"
# A writer key's age payload: a 16-byte nonce, its JSON (about 180 bytes), a 16-byte tag.
# After rotations it carries the retired generations too, about 250 bytes each.
COPY_PAYLOAD = range(16 + 100 + 16, 16 + 64000 + 16)


@dataclass(frozen=True)
class ConfigState:
    """How ``config`` verified: ``sealed``; or ``damage`` says what is wrong with it in a
    repository that other sealed objects show is this writer key's (so it can go on).
    ``chain``: the writer generations it names (``writerchain.py``)."""

    sealed: bool
    damage: str | None = None
    chain: writerchain.Chain = field(default_factory=writerchain.Chain)


def config_body(
    writer_key: keys.WriterKey, retired: tuple[writerchain.Retired, ...] = ()
) -> dict[str, Any]:
    """What ``config`` holds: format 1 for a first-generation key (as before rotation
    existed), format 2, naming the generations and what the retired ones sealed, after."""
    body: dict[str, Any] = {
        "format": layout.FORMAT_VERSION,
        "id": writer_key.repo_id,
        "chunker": {
            "min": layout.CHUNK_MIN,
            "avg": layout.CHUNK_AVG_PARAM,
            "max": layout.CHUNK_MAX,
        },
    }
    if writer_key.generation > 1:
        body["format"] = layout.FORMAT_ROTATED
        body["writer"] = writerchain.body_part(writer_key, retired)
    return body


def write_config(
    storage: Storage,
    writer_key: keys.WriterKey,
    *,
    overwrite: bool = False,
    retired: tuple[writerchain.Retired, ...] = (),
) -> None:
    sealed = sealing.seal(writer_key, CONFIG_KIND, config_body(writer_key, retired))
    storage.put(layout.CONFIG, sealed, overwrite=overwrite)


def read_config_bytes(storage: Storage) -> bytes:
    try:
        return get_at_most(storage, layout.CONFIG, layout.CONFIG_MAX)
    except NotFound:
        raise RepositoryError(
            f"target {storage.label} holds no repository; run `emberkeep init` first"
        ) from None
    except IntegrityError as exc:
        raise IntegrityError(
            exc.obj,
            f"{exc.detail}. Put back a copy of this target's `{layout.CONFIG}` from before the "
            "damage, or `emberkeep replicate` into a new repository from another target",
        ) from None


def peek_config(raw: bytes, label: str) -> dict[str, Any]:
    """The config's fields, unverified (no key needed): for messages and format checks."""
    config = sealing.parse(raw, f"{label}/{layout.CONFIG}")
    if config.get("format") not in layout.FORMATS:
        raise _unsupported(label, config.get("format"))
    return config


def verify_config(storage: Storage, raw: bytes, writer_key: keys.WriterKey) -> ConfigState:
    """Check ``config`` against ``writer_key``: sealed by it, or (written before sealing)
    exactly what the key implies. A config naming a later writer generation than this
    key is ``RetiredWriterKey``. Otherwise it is another site's repository
    (``RepositoryError``), or damaged: an ``IntegrityError``, unless another object
    authenticates with the key (the recipient record, a snapshot header), which proves
    the repository is this key's (then the damage is returned, for a writer to repair
    and a reader to report)."""
    obj = f"{storage.label}/{layout.CONFIG}"
    try:
        opened = sealing.unseal(writer_key, CONFIG_KIND, raw, obj)
    except IntegrityError as exc:
        _refuse_if_retired(storage.label, raw, writer_key)
        return _damaged_or_foreign(storage, raw, writer_key, exc.detail)
    body = opened.body
    if body.get("format") not in layout.FORMATS:
        raise _unsupported(storage.label, body.get("format"))
    if not opened.sealed and (body.get("format") != layout.FORMAT_VERSION or "writer" in body):
        # Format 2 came after sealing: unsealed, its list of what the retired keys sealed
        # would be the storage side's (writerchain.py), and the next backup would seal it.
        _refuse_if_retired(storage.label, raw, writer_key)
        detail = (
            "it names writer key generations but is not sealed, as every config since "
            "`keys rotate --writer` is (altered)"
        )
        return _damaged_or_foreign(storage, raw, writer_key, detail)
    try:
        chain = writerchain.parse(body, writer_key)
    except (ValueError, KeyError, TypeError, AttributeError):
        chain = None
    implied = config_body(writer_key, chain.retired if chain else ())
    if chain is None or body != implied or not _names_key(chain, writer_key):
        _refuse_if_retired(storage.label, raw, writer_key)
        detail = "it is not what this repository's writer key implies (altered or damaged)"
        return _damaged_or_foreign(storage, raw, writer_key, detail)
    return ConfigState(sealed=opened.sealed, chain=chain)


def _names_key(chain: writerchain.Chain, writer_key: keys.WriterKey) -> bool:
    if writer_key.generation == 1 and chain.fingerprint is None:
        return True
    return writerchain.matches(chain, writer_key)


def _refuse_if_retired(label: str, raw: bytes, writer_key: keys.WriterKey) -> None:
    """``RetiredWriterKey`` when the config (unverified: the storage side could have
    written it, which makes this a refusal, the safe direction) names a later generation
    of this repository's writer key than ``writer_key``."""
    try:
        found = sealing.parse(raw, layout.CONFIG)
    except IntegrityError:
        return
    chain = writerchain.peek(found)
    if chain.fingerprint is None or found.get("id") != writer_key.repo_id:
        return
    if chain.generation <= writer_key.generation:
        return
    raise RetiredWriterKey(
        f"target {label}: this host's writer key (generation {writer_key.generation}, "
        f"fingerprint {writer_key.fingerprint}) was retired by `emberkeep keys rotate "
        f"--writer`; the repository's {layout.CONFIG} names generation {chain.generation} "
        f"(fingerprint {chain.fingerprint}) as the only one it takes. Run `emberkeep init "
        f"--identity FILE` on this host: it fetches the new key from the repository's copy "
        f"({layout.WRITER_KEY}). If a "
        "rotation on this host was cut short, run `emberkeep keys rotate --writer` again "
        "to complete it"
    )


def _damaged_or_foreign(
    storage: Storage, raw: bytes, writer_key: keys.WriterKey, detail: str
) -> ConfigState:
    if _owned_by(storage, writer_key):
        return ConfigState(sealed=False, damage=detail)
    try:
        found = sealing.parse(raw, layout.CONFIG)
    except IntegrityError:
        found = {}
    if found.get("format") not in (None, *layout.FORMATS):
        raise _unsupported(storage.label, found.get("format"))
    if isinstance(found.get("id"), str) and found["id"] != writer_key.repo_id:
        raise RepositoryError(
            f"target {storage.label} holds another site's repository (id {found['id']}); "
            f"this host's writer key is for repository {writer_key.repo_id}. Check the "
            "target URL and state_dir"
        )
    raise IntegrityError(
        f"{storage.label}/{layout.CONFIG}",
        f"{detail}; and no other object there verifies with this host's writer key: it is "
        "another site's repository, or this one damaged beyond its config. Check the target "
        "URL and state_dir, and run `emberkeep check` on the site's other targets",
    )


def _owned_by(storage: Storage, writer_key: keys.WriterKey) -> bool:
    """Whether the repository's recipient record, or one of its snapshot headers,
    authenticates with ``writer_key``: then the repository is this key's."""
    try:
        if recipient_set.read(storage, writer_key) is not None:
            return True
    except IntegrityError:
        pass
    for n, info in enumerate(storage.list(f"{layout.SNAPSHOTS}/")):
        if n >= 3:
            break
        try:
            decode_snapshot(info.name, storage.get(info.name), writer_key.index_key)
            return True
        except (IntegrityError, NotFound):
            continue
    return False


def _unsupported(label: str, found: object) -> RepositoryError:
    return RepositoryError(
        f"target {label}: repository format {found} is not supported by this emberkeep "
        f"(formats {', '.join(map(str, layout.FORMATS))})"
    )


# -- the writer key's copy ---------------------------------------------------------------


def put_writer_key(
    storage: Storage, writer_key: keys.WriterKey, recipients: list[pyrage.x25519.Recipient]
) -> str:
    """Write the repository's copy of the writer key, encrypted to ``recipients`` (for
    recover); returns the SHA-256 of what was written, for the recipient record."""
    wrapped = keys.wrap(writer_key.to_bytes(), recipients)
    storage.put(layout.WRITER_KEY, wrapped, overwrite=True)
    return hashlib.sha256(wrapped).hexdigest()


def copy_problem(data: bytes, recipients: int | None) -> str | None:
    """What is wrong with a writer key copy as far as can be seen without decrypting it:
    its age header, its number of recipient stanzas, its length. None: it looks whole."""
    if not data.startswith(AGE_MAGIC):
        return "it is not an age file (its first line is wrong)"
    end = data.find(b"\n--- ")
    body_start = data.find(b"\n", end + 1) + 1 if end >= 0 else 0
    if end < 0 or body_start == 0:
        return "its age header is cut short"
    stanzas = data[len(AGE_MAGIC) : end + 1].split(b"-> ")
    shares = sum(1 for s in stanzas if s.startswith(b"X25519 "))
    if recipients is not None and shares != recipients:
        return f"it is encrypted to {shares} recipients, the repository records {recipients}"
    if len(data) - body_start not in COPY_PAYLOAD:
        return f"its encrypted payload is {len(data) - body_start} bytes, not a writer key's"
    return None


def read_writer_key(storage: Storage, identities: list[pyrage.x25519.Identity]) -> keys.WriterKey:
    """The writer key from the repository's copy. A copy that cannot be decrypted is
    reported as damaged when it is malformed, or when the identity opens other objects of
    the repository (the site configs, encrypted to the same recipients); else the
    identity is not a recipient (``WrongIdentity``)."""
    obj = f"{storage.label}/{layout.WRITER_KEY}"
    try:
        data = get_at_most(storage, layout.WRITER_KEY, layout.WRITER_KEY_MAX)
    except NotFound:
        raise IntegrityError(obj, f"missing. {_REWRITE}") from None
    except IntegrityError as exc:
        raise IntegrityError(obj, f"{exc.detail}. {_REWRITE}") from None
    try:
        plain = keys.unwrap(data, identities, f"the writer key in {storage.label}")
    except IntegrityError as exc:
        raise IntegrityError(obj, f"{exc.detail}. {_REWRITE}") from exc
    except WrongIdentity:
        problem = copy_problem(data, None)
        sibling = _identity_opens_an_epoch_key(storage, identities)
        if sibling is None:  # a repository from before key epochs
            sibling = _identity_opens_a_site_config(storage, identities)
        if problem is None and not sibling:
            raise
        because = problem or (
            "the identity given opens the key files stored beside it, encrypted to the "
            "same recipients, but not this copy"
        )
        raise IntegrityError(obj, f"damaged: {because}. {_REWRITE}") from None
    try:
        return keys.WriterKey.from_bytes(plain, obj)
    except UsageError as exc:
        raise IntegrityError(obj, f"{exc}. {_REWRITE}") from exc


_REWRITE = (
    "A backup host holding the writer key writes it again (its next backup, or "
    "`emberkeep check` there); or recover from another target, each holds its own copy"
)


def _identity_opens_an_epoch_key(
    storage: Storage, identities: list[pyrage.x25519.Identity]
) -> bool | None:
    """Whether the identity opens a key epoch file (``epochs.py``), which every key change
    re-encrypts together with the writer key's copy, to the same recipients (site configs
    stored before a change stay encrypted to the recipients of their day); None: none."""
    found = False
    for info in storage.list("keys/"):
        if not info.name.startswith("keys/epoch-"):
            continue
        found = True
        try:
            pyrage.decrypt(storage.get(info.name), identities)
            return True
        except (pyrage.DecryptError, NotFound):
            continue
    return False if found else None


def _identity_opens_a_site_config(
    storage: Storage, identities: list[pyrage.x25519.Identity], tries: int = 3
) -> bool:
    for n, info in enumerate(storage.list(f"{layout.SITE_CONFIG}/")):
        if n >= tries:
            break
        try:
            pyrage.decrypt(storage.get(info.name), identities)
            return True
        except (pyrage.DecryptError, NotFound):
            continue
    return False
