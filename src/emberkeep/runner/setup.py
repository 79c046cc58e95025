"""keygen and init."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import clock, keys
from ..errors import IntegrityError, RepositoryError
from ..repository import keycheck, keyfiles, layout, writerchain
from ..repository.keyfiles import read_writer_key
from ..repository.repo import Repository, read_config
from ..site import Site, unmounted_error


def keygen(path: Path, passphrase: str | None = None) -> str:
    """Write a new identity to ``path`` (0600), encrypted with ``passphrase`` when given;
    returns its recipient."""
    identity = keys.new_identity()
    keys.write_identity(path, identity, passphrase)
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
    ``new`` also makes a new writer key (``_new_writer_key``): a new repository shares
    nothing with the old one.
    """
    outcomes: list[InitOutcome] = []
    replaced = None
    if new:
        writer_key, replaced = _new_writer_key(site)
    else:
        writer_key = (
            site.writer_key() or _key_from_an_existing_target(site) or keys.WriterKey.generate()
        )
    if not site.writer_key_path.exists():
        writer_key.save(site.writer_key_path)
    fetched = None if new else _successor(site, writer_key)
    if fetched is not None:
        writer_key = fetched
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
            outcomes.append(InitOutcome(name, False, _initialized(site, name)))
            continue
        unmounted = None if new else unmounted_error(site, name)
        if unmounted is not None:
            raise RepositoryError(
                f"{unmounted} To start a new repository there anyway, run "
                f"`emberkeep init --new --target {name}`"
            )
        repo = Repository.init(storage, writer_key, site.recipients, site.labels)
        keycheck.upkeep(repo, site.config.path)  # records the recipients and the key copy
        outcomes.append(InitOutcome(name, True, "created"))
    if replaced is not None and outcomes:
        outcomes[0].message += f", with {replaced}"
    if fetched is not None and outcomes:
        outcomes[0].message += (
            f"; this host's writer key replaced by generation {fetched.generation} "
            f"(fingerprint {fetched.fingerprint}), fetched from the repository's copy"
        )
    return outcomes


def _successor(site: Site, held: keys.WriterKey) -> keys.WriterKey | None:
    """When a target's config names a later generation of this host's writer key
    (``keys rotate --writer`` elsewhere): that key, read from the target's copy with an
    identity and saved here. The copy must carry this host's key as a retired generation,
    name the same repository and open the config: anything else is forged or another
    site's, and refused (the host's key is kept)."""
    for target in site.config.targets:
        storage = site.storage(target.name)
        try:
            raw = keyfiles.read_config_bytes(storage)
            peeked = keyfiles.peek_config(raw, storage.label)
            chain = writerchain.parse(peeked, None)
        except (RepositoryError, IntegrityError, ValueError, KeyError, TypeError):
            continue
        if peeked.get("id") != held.repo_id:
            continue  # another site's repository: refused as such below
        if chain.fingerprint is None or chain.generation <= held.generation:
            continue
        identities = site.identities()
        if not identities:
            raise RepositoryError(
                f"target {target.name} takes writer key generation {chain.generation}, this "
                f"host holds generation {held.generation}: give an identity (--identity) so "
                "init can read the new key from the repository's copy"
            )
        found = read_writer_key(storage, identities)
        mine = found.generation_of(held.fingerprint)
        if found.repo_id != held.repo_id or mine != held.without_chain():
            raise RepositoryError(
                f"target {target.name}: the writer key in {layout.WRITER_KEY} (repository "
                f"{found.repo_id}, fingerprint {found.fingerprint}) is not a successor of "
                f"this host's (repository {held.repo_id}, fingerprint {held.fingerprint}): "
                "forged, or another site's; not taken, this host's key is kept. Check the "
                "target URL, and run `emberkeep check` there"
            )
        state = keyfiles.verify_config(storage, raw, found)
        if state.damage or not state.sealed or found.fingerprint != chain.fingerprint:
            raise RepositoryError(
                f"target {target.name}: the writer key in {layout.WRITER_KEY} does not open "
                "its config (a rotation still under way, or a forged copy); not taken. Run "
                "`emberkeep keys rotate --writer` again on the host that began it"
            )
        found.save(site.writer_key_path)
        return found
    return None


def _new_writer_key(site: Site) -> tuple[keys.WriterKey, str | None]:
    """A new writer key for ``init --new``, refused while a configured target holds a
    repository of the current one (this host could no longer write to it). The current
    key is kept aside in the state dir, never deleted; the message says where."""
    current = site.writer_key()
    if current is not None:
        for target in site.config.targets:
            try:
                existing = read_config(site.storage(target.name))
            except (RepositoryError, IntegrityError):
                continue
            if existing.get("id") == current.repo_id:
                raise RepositoryError(
                    f"`init --new` makes a new writer key, and target {target.name} holds "
                    f"repository {current.repo_id} of the current one, which this host could "
                    "then no longer write to: point that target at a new, empty location too "
                    f"(or remove it from {site.config.path}), then run `init --new` again"
                )
    key = keys.WriterKey.generate()
    if current is None:
        return key, None
    aside = site.writer_key_path.with_name(
        f"{site.writer_key_path.name}.before-new-{clock.now():%Y%m%dT%H%M%S}"
    )
    site.writer_key_path.rename(aside)
    key.save(site.writer_key_path)
    return key, (
        f"a new writer key (repository {key.repo_id}); the one of repository "
        f"{current.repo_id} is kept in {aside}"
    )


def _initialized(site: Site, target: str) -> str:
    """An existing repository of this site: its recipients checked, its config and writer
    key copy repaired where needed (``keycheck.upkeep``; e.g. an init that died between its
    writes, before config became its commit point), each repair said."""
    site.repository_to_write(target)
    said = "; ".join(f"{r['path']} {r['message']}" for r in site.repairs)
    site.repairs.clear()
    return f"already initialized; {said}" if said else "already initialized"


def _key_from_an_existing_target(site: Site) -> keys.WriterKey | None:
    """On a new host: take the writer key from a target that has one (needs an identity)."""
    for target in site.config.targets:
        storage = site.storage(target.name)
        try:
            read_config(storage)
        except (RepositoryError, IntegrityError):
            continue
        if storage.stat(layout.WRITER_KEY) is None:
            continue
        identities = site.identities()
        if not identities:
            raise RepositoryError(
                f"target {target.name} already holds a repository, and this host has no "
                "writer key: give an identity (--identity) so init can read the repository's copy"
            )
        return read_writer_key(storage, identities)
    return None
