"""keygen and init."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyrage

from .. import clock, journal, keys
from ..errors import NotFound, RepositoryError
from ..repository import layout
from ..repository import recipients as recipient_set
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


def init(site: Site, only: str | None = None, *, new: bool = False) -> list[InitOutcome]:
    """Create the repository in each target, all sharing this site's writer key.

    An empty target this host has used before is refused (``unmounted_error``) unless
    ``new``: a new repository there would take the backups of the one on the missing disk.
    """
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
            recipient_set.ensure(storage, writer_key, site.recipients, site.config.path)
            outcomes.append(
                InitOutcome(name, False, _initialized(storage, writer_key, site.recipients))
            )
            continue
        unmounted = None if new else unmounted_error(site, name)
        if unmounted is not None:
            raise RepositoryError(
                f"{unmounted} To start a new repository there anyway, run "
                f"`emberkeep init --new --target {name}`"
            )
        Repository.init(storage, writer_key, site.recipients)
        recipient_set.ensure(storage, writer_key, site.recipients, site.config.path)
        outcomes.append(InitOutcome(name, True, "created"))
    return outcomes


# Jobs whose success in a target proves it held this site's repository at the time.
USED_BY = ("backup", "replicate", "check", "prune", "drill", "restore")


def unmounted_error(site: Site, target: str) -> RepositoryError | None:
    """The error for an empty target that this host's journal shows in use (most likely
    its disk is not mounted); None when the target holds objects or was never used."""
    writer_key = site.writer_key()
    if writer_key is None or _holds_objects(site.storage(target)):
        return None
    last = _last_success(site, target)
    if last is None:
        return None
    seen = clock.iso(last.ended or last.started or clock.now())
    return RepositoryError(
        f"target {target} held repository {writer_key.repo_id} (last seen {seen}, by a "
        f"{last.kind}) and is now empty: is its disk mounted? Mount it, or correct the "
        f"target's url in {site.config.path}, and run the job again."
    )


def _holds_objects(storage: Storage) -> bool:
    return next(iter(storage.list("")), None) is not None


def _last_success(site: Site, target: str) -> journal.Entry | None:
    """The newest successful job that used ``target``, from the journal (None without one)."""
    if not (site.state_dir / journal.FILE).exists():
        return None
    with journal.Journal.open(site) as log:
        found = [log.last(kind, target=target, outcome="ok") for kind in USED_BY]
    return max((e for e in found if e is not None), key=lambda e: e.started, default=None)


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
