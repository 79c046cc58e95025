"""keygen and init."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyrage

from .. import keys
from ..errors import NotFound, RepositoryError
from ..repository import layout
from ..repository.repo import Repository, put_writer_key, read_config
from ..storage import Storage
from .site import Site


def keygen(path: Path) -> str:
    """Write a new identity to ``path`` (0600); returns its recipient."""
    identity = keys.new_identity()
    keys.write_identity(path, identity)
    return str(identity.to_public())


@dataclass
class InitOutcome:
    target: str
    created: bool
    message: str


def init(site: Site, only: str | None = None) -> list[InitOutcome]:
    """Create the repository in each target, all sharing this site's writer key."""
    writer_key = (
        site.writer_key() or _key_from_an_existing_target(site) or keys.WriterKey.generate()
    )
    if not site.writer_key_path.exists():
        writer_key.save(site.writer_key_path)
    outcomes = []
    for name in site.target_names(only):
        storage = site.storage(name)
        try:
            existing = read_config(storage)
        except RepositoryError:
            existing = None
        if existing is not None:
            if existing["id"] != writer_key.repo_id:
                raise RepositoryError(
                    f"target {name} already holds another site's repository; "
                    "point the target elsewhere"
                )
            outcomes.append(
                InitOutcome(name, False, _initialized(storage, writer_key, site.recipients))
            )
            continue
        Repository.init(storage, writer_key, site.recipients)
        outcomes.append(InitOutcome(name, True, "created"))
    return outcomes


def _initialized(
    storage: Storage, writer_key: keys.WriterKey, recipients: list[pyrage.x25519.Recipient]
) -> str:
    """An existing repository of this site; its writer key copy is written again when missing
    (an init that died between its writes, before config became its commit point)."""
    if storage.stat(layout.WRITER_KEY) is not None:
        return "already initialized"
    put_writer_key(storage, writer_key, recipients)
    return (
        f"already initialized; its copy of the writer key ({layout.WRITER_KEY}) was missing "
        "and is written again, so recover can use this repository"
    )


def _key_from_an_existing_target(site: Site) -> keys.WriterKey | None:
    """On a new host: take the writer key from a target that has one (needs an identity)."""
    for target in site.config.targets:
        storage = site.storage(target.name)
        try:
            read_config(storage)
            wrapped = storage.get(layout.WRITER_KEY)
        except (RepositoryError, NotFound):
            continue
        identities = site.identities()
        if not identities:
            raise RepositoryError(
                f"target {target.name} already holds a repository, and this host has no "
                "writer key: give an identity (--identity) so init can read the repository's copy"
            )
        plain = keys.unwrap(wrapped, identities, f"the writer key in target {target.name}")
        return keys.WriterKey.from_bytes(plain, layout.WRITER_KEY)
    return None
