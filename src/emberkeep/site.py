"""The site: a loaded config and what it opens (keys, targets, repositories)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyrage

from . import clock, keys
from .config import Config
from .errors import IdentityRequired, RepositoryError, RetiredWriterKey, UsageError
from .fsutil import make_dirs
from .repository import keycheck
from .repository.repo import Repository
from .repository.snapshot import Snapshot, by_id_prefix
from .storage import Storage, open_storage

if TYPE_CHECKING:
    from .journal import Entry


@dataclass
class Site:
    config: Config
    identity_file: Path | None = None  # --identity overrides keys.identity_file
    _identities: list[pyrage.x25519.Identity] | None = field(default=None, repr=False)
    # repairs made while opening repositories to write (keycheck.upkeep), for the job to say
    repairs: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def state_dir(self) -> Path:
        path = self.config.site.state_dir
        try:
            make_dirs(path)  # 0700 whatever the umask
        except OSError as exc:
            raise UsageError(
                f"cannot create the state dir {path} ({exc.strerror}): set [site] state_dir in "
                f"{self.config.path} to a directory this user can write, or run emberkeep as "
                "the user the state dir belongs to"
            ) from exc
        return path

    @property
    def writer_key_path(self) -> Path:
        return self.state_dir / "writer.key"

    @property
    def pending_writer_key_path(self) -> Path:
        """The next writer key while ``keys rotate --writer`` is under way on this host."""
        return self.state_dir / "writer.key.next"

    @property
    def recipients(self) -> list[pyrage.x25519.Recipient]:
        return keys.parse_recipients(self.config.keys.recipient_keys)

    @property
    def labels(self) -> dict[str, str]:
        """The config's recipient labels, by canonical ``age1…`` (as the record keeps them)."""
        return {str(r): label for r, label in zip(
            keys.parse_recipients(list(self.config.keys.labels)),
            self.config.keys.labels.values(), strict=True)}  # fmt: skip

    def identities(self) -> list[pyrage.x25519.Identity]:
        """The identities this host may use; empty on a write-only host."""
        if self._identities is None:
            path = self.identity_file or self.config.keys.identity_file
            self._identities = keys.load_identities(path) if path else []
        return self._identities

    def writer_key(self) -> keys.WriterKey | None:
        path = self.writer_key_path
        if not path.exists():
            return None
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
        return keys.WriterKey.load(path)

    def storage(self, target: str | None = None) -> Storage:
        chosen = self.config.target(target)
        return open_storage(chosen.url, name=chosen.name)

    def repository(self, target: str | None = None, *, read: bool = False) -> Repository:
        """Open a target's repository; ``read`` loads the identities to decrypt with."""
        identities = self.identities() if read or self.writer_key() is None else []
        if read and not identities:
            raise IdentityRequired(
                "this needs an identity to decrypt backups: pass --identity FILE or set "
                f"keys.identity_file in {self.config.path}"
            )
        try:
            try:
                repo = Repository.open(
                    self.storage(target),
                    writer_key=self.writer_key(),
                    recipients=self.recipients,
                    identities=identities,
                )
            except RetiredWriterKey:
                pending = self.pending_writer_key_path
                if not pending.exists():
                    raise
                # a rotation cut short on this host, this target done: read with the next
                # key (writing is refused until it is completed, ``repository_to_write``)
                repo = Repository.open(
                    self.storage(target),
                    writer_key=keys.WriterKey.load(pending),
                    recipients=self.recipients,
                    identities=identities,
                )
        except RepositoryError:
            unmounted = unmounted_error(self, self.config.target(target).name)
            if unmounted is not None:
                raise unmounted from None
            raise
        if not self.writer_key_path.exists():
            repo.writer_key.save(self.writer_key_path)  # rebuilt from the repository's copy
        repo.labels = self.labels
        return repo

    def repository_to_write(self, target: str | None = None) -> Repository:
        """Open a target's repository for a backup: its recipients must be the config's
        (``repository/recipients.py``), checked before anything is written; its config and
        copy of the writer key are repaired where needed (``repository/keycheck.py``), and
        each repair is added to ``repairs``."""
        repo = self.repository(target)
        held = self.writer_key()
        if held is not None and repo.writer_key.fingerprint != held.fingerprint:
            raise RetiredWriterKey(
                f"target {repo.storage.label}: a writer key rotation on this host was cut "
                f"short ({self.pending_writer_key_path} is left): run `emberkeep keys rotate "
                "--writer` again to complete it, then back up"
            )
        for done in keycheck.upkeep(repo, self.config.path):
            self.repairs.append(
                {"path": f"{repo.storage.label}/{done.obj}", "message": done.message}
            )
        from .seen import seen_before  # seen imports this module

        repo.seen_before = seen_before(self, self.config.target(target).name, repo)
        return repo

    def find_snapshot(self, repo: Repository, spec: str, source: str | None = None) -> Snapshot:
        """``find_snapshot``, where a source neither in the config nor in the target is a
        usage error naming the configured sources (a typo, most likely)."""
        try:
            return find_snapshot(repo, spec, source)
        except RepositoryError:
            if source is not None and all(s.name != source for s in self.config.sources):
                self.config.source(source)  # raises: no source named …, the sources listed
            raise

    def target_names(self, only: str | None) -> list[str]:
        return [self.config.target(only).name] if only else [t.name for t in self.config.targets]


def find_snapshot(repo: Repository, spec: str, source: str | None = None) -> Snapshot:
    """A snapshot by id, unique id prefix, or ``latest`` (of ``source`` when given)."""
    snapshots = [s for s in repo.snapshots() if source is None or s.source == source]
    if spec == "latest":
        if not snapshots:
            where = f" of source {source}" if source else ""
            raise RepositoryError(f"target {repo.storage.label} holds no snapshot{where} yet")
        return snapshots[-1]
    return by_id_prefix(snapshots, spec, f"target {repo.storage.label}", "`latest`")


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


def _last_success(site: Site, target: str) -> Entry | None:
    """The newest successful job that used ``target``, from the journal (None without one)."""
    from . import journal  # only on this error path: every command opens a Site

    if not (site.state_dir / journal.FILE).exists():
        return None
    with journal.Journal.open(site) as log:
        found = [log.last(kind, target=target, outcome="ok") for kind in USED_BY]
    dated = [(e.started, e) for e in found if e is not None and e.started is not None]
    return max(dated, key=lambda pair: pair[0])[1] if dated else None
