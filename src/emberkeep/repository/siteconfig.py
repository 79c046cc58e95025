"""The site's config, kept in every target so a new host can recover from the target alone.

Each backup run stores the config file's text (with its original path and the time) as
one object ``siteconfig/<name>``, age-encrypted to the recipients: whatever secrets the
config holds (an SMTP password, a MongoDB URI with credentials) are readable only with an
identity, like the backups. ``<name>`` is a MAC of the content under the writer key, so
an unchanged config adds no object and the name says nothing of the content. ``recover``
decrypts them all and takes the newest (at or before ``--at``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import blake3
import pyrage

from .. import keys
from ..clock import iso, parse_time
from ..errors import AlreadyExists, IntegrityError, RepositoryError
from ..storage.base import Storage
from .layout import SITE_CONFIG

FORMAT = 1


@dataclass
class StoredConfig:
    path: str  # where the config file was on the host that wrote it
    time: datetime  # the backup run that stored it
    text: str  # the TOML


def tag_of(writer_key: keys.WriterKey, config: StoredConfig) -> str:
    """The name's part for a config: a MAC of its path and text (says nothing of them)."""
    text = f"{config.path}\0{config.text}".encode()
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
    payload = {"format": FORMAT, "path": config.path, "time": iso(config.time), "toml": config.text}
    try:
        storage.put(name, keys.wrap(json.dumps(payload).encode(), recipients))
    except AlreadyExists:
        return False
    return True


def load_all(storage: Storage, identities: list[pyrage.x25519.Identity]) -> list[StoredConfig]:
    """Every stored config, oldest first; an identity that cannot read them is an error."""
    found = []
    for info in storage.list(f"{SITE_CONFIG}/"):
        plain = keys.unwrap(storage.get(info.name), identities, f"the site config {info.name}")
        try:
            raw = json.loads(plain)
            found.append(StoredConfig(raw["path"], parse_time(raw["time"]), raw["toml"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(info.name, f"not a stored site config ({exc})") from exc
    return sorted(found, key=lambda c: c.time)


def newest(
    storage: Storage, identities: list[pyrage.x25519.Identity], at: datetime | None = None
) -> StoredConfig:
    stored = [c for c in load_all(storage, identities) if at is None or c.time <= at]
    if not stored:
        when = f" at or before {iso(at)}" if at else ""
        raise RepositoryError(
            f"{storage.label} holds no site config{when}: it was written by an emberkeep "
            "without recover support, or by no backup yet; recover needs the config file "
            "(restore it with `emberkeep restore` and a hand-written config)"
        )
    return stored[-1]
