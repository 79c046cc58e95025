"""The site's config, kept in every target so a new host can recover from the target alone.

Each backup run stores the config file's text (with its original path and the time) as
one object ``siteconfig/<name>``, age-encrypted to the recipients: whatever secrets the
config holds (an SMTP password, a MongoDB URI with credentials) are readable only with an
identity, like the backups. ``<name>`` is a MAC of the content under the writer key, so
an unchanged config adds no object and the name says nothing of the content.

age has no sender authentication: anyone who knows a recipient (they are public) can
encrypt a config to it and put it here. So the payload is a sealed document
(``sealing.py``, under the writer key, which the storage side does not have), and
``load_all`` sorts what it finds into the sealed configs, the unsealed ones (planted, or
stored by an emberkeep before sealing; ``choose`` uses one only when asked to, and never
when a sealed one is newer), and the refused ones (seal wrong, not decryptable, not a
config), each named with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import blake3
import pyrage

from .. import keys
from ..clock import iso, parse_time
from ..errors import (
    AlreadyExists,
    IntegrityError,
    NotFound,
    RepositoryError,
    UsageError,
    WrongIdentity,
)
from ..storage.base import Storage
from . import sealing, writerchain
from .layout import SITE_CONFIG

FORMAT = 2  # sealed; format 1 (before sealing) had no seal
KIND = "siteconfig"


@dataclass
class StoredConfig:
    path: str  # where the config file was on the host that wrote it
    time: datetime  # the backup run that stored it
    text: str  # the TOML
    name: str = ""  # the object it was read from
    sealed: bool = True  # False: no seal (written before sealing, or planted): unverified


@dataclass(frozen=True)
class Refused:
    name: str  # the object
    reason: str


@dataclass
class Found:
    """Every stored config, sorted: ``configs`` oldest first (sealed and unsealed)."""

    configs: list[StoredConfig] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


@dataclass
class Choice:
    """The config recover starts from, the sealed one before it (for what changed), the
    objects refused, and the older unsealed ones left aside (from before sealing)."""

    config: StoredConfig
    previous: StoredConfig | None
    refused: list[Refused]
    ignored: list[str]


def tag_of(writer_key: keys.WriterKey, config: StoredConfig) -> str:
    """The name's part for a config: a MAC of its path and text (says nothing of them).
    Sealed configs take other names than the unsealed ones of before, so an unchanged
    config is stored once more, sealed, by the first backup that seals."""
    text = f"sealed\0{config.path}\0{config.text}".encode()
    return blake3.blake3(text, key=writer_key.mac_key).hexdigest(16)


def store(
    storage: Storage,
    writer_key: keys.WriterKey,
    recipients: list[pyrage.x25519.Recipient],
    config: StoredConfig,
    *,
    again: bool = False,
) -> bool:
    """Store ``config`` unless the same text and path are there; True when written.

    ``again``: the caller knows a different config was stored since this one (A, B, then
    A once more), so it is stored anew, under a name with the time, to be the newest."""
    name = f"{SITE_CONFIG}/{tag_of(writer_key, config)}"
    if storage.stat(name) is not None:
        if not again:
            return False
        name = f"{name}-{config.time:%Y%m%dT%H%M%S}"
    body = {"format": FORMAT, "path": config.path, "time": iso(config.time), "toml": config.text}
    try:
        storage.put(name, keys.wrap(sealing.seal(writer_key, KIND, body), recipients))
    except AlreadyExists:
        return False
    return True


def load_all(
    storage: Storage,
    identities: list[pyrage.x25519.Identity],
    writer_key: keys.WriterKey,
    chain: writerchain.Chain | None = None,
) -> Found:
    """Every stored config, each verified with ``writer_key``; what cannot be trusted is
    refused by name, never silently skipped."""
    found = Found()
    for info in storage.list(f"{SITE_CONFIG}/"):
        try:
            found.configs.append(_load(storage, info.name, identities, writer_key, chain))
        except _Refusal as exc:
            found.refused.append(Refused(info.name, exc.reason))
    found.configs.sort(key=lambda c: c.time)
    return found


def choose(
    storage: Storage, found: Found, at: datetime | None, *, allow_unverified: bool = False
) -> Choice:
    """The newest sealed config at or before ``at``. An unsealed one newer than it is
    refused (someone who can write to the target can put one there); older unsealed ones
    are ``ignored`` (from before sealing). With no sealed config, the newest unsealed one
    is chosen only with ``allow_unverified`` (and is marked: ``sealed`` False)."""
    candidates = [c for c in found.configs if at is None or c.time <= at]
    sealed = [c for c in candidates if c.sealed]
    refused = list(found.refused)
    if sealed:
        chosen = sealed[-1]
        newer = [c for c in candidates if not c.sealed and c.time >= chosen.time]
        refused += [
            Refused(
                c.name,
                f"{_UNSEALED} (it says {iso(c.time)}; the newest sealed one {iso(chosen.time)})",
            )
            for c in newer
        ]
        ignored = [c.name for c in candidates if not c.sealed and c.time < chosen.time]
        previous = sealed[-2] if len(sealed) > 1 else None
        return Choice(chosen, previous, refused, ignored)
    unsealed = [c for c in candidates if not c.sealed]
    if unsealed and allow_unverified:
        return Choice(unsealed[-1], None, refused, [c.name for c in unsealed[:-1]])
    when = f" at or before {iso(at)}" if at else ""
    if unsealed:
        names = ", ".join(c.name for c in unsealed[-3:])
        raise RepositoryError(
            f"{storage.label} holds no sealed site config{when}, only {len(unsealed)} "
            f"unsealed ones (newest: {names}): stored by an emberkeep before sealing, or "
            "planted by someone who can write to the target (age does not say who "
            "encrypted a file). A backup from the site's host stores a sealed one; or "
            "review the newest with `recover --dry-run --allow-unverified` and, if it is "
            "yours, run recover with --allow-unverified"
        )
    refusals = (
        f" ({len(refused)} refused: {refused[0].name}: {refused[0].reason})" if refused else ""
    )
    raise RepositoryError(
        f"{storage.label} holds no site config{when}{refusals}: it was written by an "
        "emberkeep without recover support, or by no backup yet; recover needs the config "
        "file (restore it with `emberkeep restore` and a hand-written config)"
    )


_UNSEALED = (
    "not sealed with the repository's writer key, and newer than the newest sealed one: "
    "planted by someone who can write to the target (age does not say who encrypted a "
    "file); not used"
)


class _Refusal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _load(
    storage: Storage,
    name: str,
    identities: list[pyrage.x25519.Identity],
    writer_key: keys.WriterKey,
    chain: writerchain.Chain | None = None,
) -> StoredConfig:
    try:
        plain = keys.unwrap(storage.get(name), identities, name)
    except WrongIdentity:
        raise _Refusal(
            "encrypted to other recipients than the identity given (planted, or stored "
            "under another recipient set)"
        ) from None
    except (IntegrityError, NotFound) as exc:
        raise _Refusal(str(exc)) from exc
    try:
        opened = sealing.unseal(writer_key, KIND, plain, name)
    except IntegrityError as exc:
        old = chain.key_for(name) if chain is not None else None  # sealed before a rotation
        if old is None:
            raise _Refusal(exc.detail) from exc
        try:
            opened = sealing.unseal(old, KIND, plain, name)
        except IntegrityError as again:
            raise _Refusal(again.detail) from again
    raw = opened.body
    try:
        path, time, text = raw["path"], parse_time(raw["time"]), raw["toml"]
        if not (isinstance(path, str) and isinstance(text, str)):
            raise TypeError("path and toml must be text")
    except (ValueError, KeyError, TypeError, AttributeError, UsageError) as exc:
        raise _Refusal(f"not a stored site config ({exc})") from exc
    return StoredConfig(path, time, text, name=name, sealed=opened.sealed)


def newest(
    storage: Storage,
    identities: list[pyrage.x25519.Identity],
    writer_key: keys.WriterKey,
    at: datetime | None = None,
) -> StoredConfig:
    """The config recover would start from (sealed only)."""
    return choose(storage, load_all(storage, identities, writer_key), at).config
