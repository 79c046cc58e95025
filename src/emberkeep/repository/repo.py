"""A repository in one target: open it, read and write its objects."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pyrage

from .. import crypto, keys
from ..errors import (
    AlreadyExists,
    IdentityRequired,
    IntegrityError,
    NotFound,
    RepositoryError,
    WrongIdentity,
)
from ..storage.base import Storage, prepare_read
from . import epochs, keyfiles, layout, writerchain
from . import recipients as recipient_set
from .index import BlobIndex, Location, PackRecord, decode_index, encode_index
from .pack import blob_aad, read_wrapped_key
from .snapshot import SeenBefore, Snapshot, decode_snapshot, encode_snapshot, written_order

T = TypeVar("T")
RUN_SPAN = 8 << 20  # the most one ranged read of adjacent blobs fetches


@dataclass
class Damage:
    """An object that could not be read, kept for check to report."""

    obj: str
    detail: str


@dataclass
class ReadTimes:
    """Time spent reading blobs, summed over threads: fetching from storage, decrypting.

    A drill reports these as its fetch and decrypt phases."""

    fetch_seconds: float = 0.0
    decrypt_seconds: float = 0.0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fetch: float, decrypt: float, size: int) -> None:
        with self._lock:
            self.fetch_seconds += fetch
            self.decrypt_seconds += decrypt
            self.bytes += size


@dataclass
class Repository:
    storage: Storage
    writer_key: keys.WriterKey
    recipients: list[pyrage.x25519.Recipient]
    identities: list[pyrage.x25519.Identity] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    index_names: set[str] = field(default_factory=set)  # index files loaded, or written since
    _index: BlobIndex | None = None
    _pack_keys: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _key_loads: dict[str, threading.Lock] = field(default_factory=dict)  # one loader per pack
    read_times: ReadTimes = field(default_factory=ReadTimes)
    config_state: keyfiles.ConfigState = field(
        default_factory=lambda: keyfiles.ConfigState(sealed=True)
    )
    writer_key_held: bool = False  # the key is the host's own, not read from keys/writer.age
    seen_before: SeenBefore = field(default_factory=SeenBefore)  # set by the runner
    _index_sizes: dict[str, int] = field(default_factory=dict)  # index file -> size listed
    record: recipient_set.Record | None = None  # keys/recipients, once read (key_record)
    labels: dict[str, str] = field(default_factory=dict)  # the config's, by age1… (keycheck)
    _keyring: epochs.LazyKeyring = field(default_factory=epochs.LazyKeyring)
    # After `keys rotate --writer` (writerchain.py): the retired key each pack's index file
    # and each snapshot was sealed with (absent: the current key)
    _pack_writer: dict[str, keys.WriterKey] = field(default_factory=dict)
    _snapshot_writer: dict[str, keys.WriterKey] = field(default_factory=dict)

    # -- creating and opening ------------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage: Storage,
        writer_key: keys.WriterKey,
        recipients: list[pyrage.x25519.Recipient],
        labels: dict[str, str] | None = None,
    ) -> Repository:
        """Create the repository: the writer key's copy first, then ``config``, the commit
        point, so a crash between them leaves no repository rather than one that
        ``recover`` cannot use."""
        if storage.stat(layout.CONFIG) is not None:  # never replace another one's key copy
            raise _already_initialized(storage)
        digest = keyfiles.put_writer_key(storage, writer_key, recipients)
        blank = recipient_set.Record(recipient_set.names(recipients))
        first, _ = epochs.new_epoch(storage, blank, recipients)
        try:
            keyfiles.write_config(storage, writer_key)
        except AlreadyExists:
            raise _already_initialized(storage) from None
        # recorded once, create-only: under Object Lock nothing of keys/ is ever replaced
        record = recipient_set.ensure(
            storage, writer_key, recipients, None, writer_key_sha256=digest, epochs=first.epochs,
            labels=labels,
        )  # fmt: skip
        return cls(
            storage, writer_key, recipients, writer_key_held=True, record=record,
            labels=dict(labels or {}),
        )  # fmt: skip

    @classmethod
    def open(
        cls,
        storage: Storage,
        *,
        writer_key: keys.WriterKey | None,
        recipients: list[pyrage.x25519.Recipient],
        identities: list[pyrage.x25519.Identity] | None = None,
    ) -> Repository:
        """Open a repository with the host's writer key, or (None) with the repository's
        copy, decrypted with ``identities``; ``config`` is verified against the key
        (``keyfiles.verify_config``)."""
        raw = keyfiles.read_config_bytes(storage)
        identities = identities or []
        held = writer_key is not None
        if writer_key is None:
            if not identities:
                raise IdentityRequired(
                    f"target {storage.label}: this host has no writer key; give an identity "
                    "(keys.identity_file or --identity) to read the repository's copy"
                )
            writer_key = keyfiles.read_writer_key(storage, identities)
            state, writer_key = _verify_copy(storage, raw, writer_key)
        else:
            state = keyfiles.verify_config(storage, raw, writer_key)
        return cls(
            storage, writer_key, recipients, identities, config_state=state, writer_key_held=held
        )

    def table_keys(self, pack: str) -> list[bytes]:
        """The index keys a pack's table may be sealed with, likeliest first."""
        first = self._pack_writer.get(pack, self.writer_key)
        others = [k for k in (self.writer_key, *self.writer_key.retired) if k is not first]
        return [first.index_key, *(k.index_key for k in others)]

    # -- index ---------------------------------------------------------------------------

    @property
    def index(self) -> BlobIndex:
        if self._index is None:
            self._index = self.load_index()
        return self._index

    def index_files(self) -> list[str]:
        """The index files the target holds now (their sizes kept for ``read_index_file``)."""
        listed = {info.name: info.size for info in self.storage.list(f"{layout.INDEX}/")}
        self._index_sizes.update(listed)
        return sorted(listed)

    def read_index_file(self, name: str, size: int | None = None) -> list[PackRecord]:
        """One index file's pack records. One larger than ``layout.INDEX_FILE_MAX`` is
        damage, refused before it is read: its size is ``size``, or the one listed when
        the index files were last listed (``index_files``, ``load_index``), else asked."""
        if size is None:
            size = self._index_sizes.get(name)
        if size is None:
            info = self.storage.stat(name)
            size = info.size if info is not None else None
        if size is not None and size > layout.INDEX_FILE_MAX:
            raise IntegrityError(
                name, f"index file of {size} bytes, more than the {layout.INDEX_FILE_MAX} "
                "an index file may hold (damaged or forged); not read"
            )  # fmt: skip
        data = self.storage.get(name)
        key, packs = self.sealed_by(name, lambda k: list(decode_index(name, data, k.index_key)))
        if key is not self.writer_key:
            for pack in packs:
                self._pack_writer[pack.name] = key
        return packs

    @property
    def chain(self) -> writerchain.Chain:
        return self.config_state.chain

    def sealed_by(
        self, name: str, opens: Callable[[keys.WriterKey], T]
    ) -> tuple[keys.WriterKey, T]:
        """The key that sealed object ``name``: the current one, or the retired one that
        sealed it before it was retired (``writerchain.py``). One a retired key opens but
        that was not there at its rotation is refused by name (a host holding only the
        old key wrote it); any other failure is the current key's ``IntegrityError``."""
        try:
            return self.writer_key, opens(self.writer_key)
        except IntegrityError as exc:
            first = exc
        listed = self.chain.key_for(name)
        if listed is not None:
            return listed, opens(listed)
        for old in reversed(self.writer_key.retired):
            try:
                opens(old)
            except IntegrityError:
                continue
            raise IntegrityError(
                name,
                f"sealed with writer key generation {old.generation} (fingerprint "
                f"{old.fingerprint}) after `keys rotate --writer` retired it: written by a "
                "host holding only the old key (lost, or not yet given the new one with "
                "`emberkeep init --identity FILE`); not used",
            )
        raise first

    def key_of_snapshot(self, snapshot_id: str) -> keys.WriterKey:
        """The writer key generation a snapshot's chunk ids and chunk boundaries are of."""
        return self._snapshot_writer.get(snapshot_id, self.writer_key)

    def mac_keys_of(self, pack: str) -> list[bytes]:
        """The MAC keys a blob of ``pack`` may be keyed with, likeliest first (a pack of a
        retired generation, or one prune repacked old blobs into)."""
        first = self._pack_writer.get(pack, self.writer_key)
        others = [k for k in (self.writer_key, *self.writer_key.retired) if k is not first]
        return [first.mac_key, *(k.mac_key for k in others)]

    def load_index(self, avoid: frozenset[str] = frozenset()) -> BlobIndex:
        """Load every index file; a damaged one is recorded in ``damage`` and skipped.

        Of a blob several packs hold, a copy in a pack that is in the target is used (one
        lookup per pack, only for such blobs): an index file may list packs that were
        deleted, or never written (docs/design.md, "Check")."""

        self.index_names = set()
        present: dict[str, bool] = {}

        def exists(pack: str) -> bool:
            if pack not in present:
                present[pack] = self.storage.stat(pack) is not None
            return present[pack]

        def records() -> Iterable[tuple[str, PackRecord]]:
            sizes = {info.name: info.size for info in self.storage.list(f"{layout.INDEX}/")}
            self._index_sizes.update(sizes)
            for name in sorted(sizes):
                try:
                    packs = self.read_index_file(name, sizes[name])
                except (IntegrityError, NotFound) as exc:
                    self.damage.append(Damage(name, str(exc)))
                    continue
                self.index_names.add(name)
                for pack in packs:
                    yield name, pack

        return BlobIndex.build(records(), avoid, exists)

    def save_index(self, packs: list[PackRecord]) -> str:
        name, sealed = encode_index(packs, self.writer_key.index_key)
        with contextlib.suppress(AlreadyExists):  # same content, same name: already there
            self.storage.put(name, sealed)
        self.index_names.add(name)
        return name

    def reload_index(self, avoid: frozenset[str] = frozenset()) -> BlobIndex:
        """Read the index again; of duplicated blobs, prefer copies outside ``avoid``."""
        self.damage = [d for d in self.damage if not d.obj.startswith(f"{layout.INDEX}/")]
        self._index = self.load_index(avoid)
        return self._index

    # -- snapshots -----------------------------------------------------------------------

    def snapshot_names(self) -> list[str]:
        return [info.name for info in self.storage.list(f"{layout.SNAPSHOTS}/")]

    def load_snapshot(self, name: str) -> Snapshot:
        data = self.storage.get(name)
        key, snapshot = self.sealed_by(name, lambda k: decode_snapshot(name, data, k.index_key))
        if key is not self.writer_key:
            self._snapshot_writer[snapshot.id] = key
        return snapshot

    def snapshots(self, skip: Collection[str] = ()) -> list[Snapshot]:
        """Every readable snapshot but those whose ids are in ``skip``, in the order they were
        written (``written_order``: by ``seq``, then time), the last written last; damaged
        ones are recorded in ``damage``."""
        found = []
        for name in self.snapshot_names():
            if skip and layout.leaf(name) in skip:
                continue
            try:
                found.append(self.load_snapshot(name))
            except (IntegrityError, NotFound) as exc:
                self.damage.append(Damage(name, str(exc)))
        return sorted(found, key=written_order)

    def save_snapshot(self, snapshot: Snapshot) -> str:
        """The commit point of a backup."""
        name, sealed = encode_snapshot(snapshot, self.writer_key.index_key)
        self.storage.put(name, sealed)
        return snapshot.id

    # -- key epochs (epochs.py) ---------------------------------------------------------

    def key_record(self) -> recipient_set.Record | None:
        """``keys/recipients``, read once (None in a repository from before it)."""
        if self.record is None:
            self.record = recipient_set.read(self.storage, self.writer_key, self.chain)
        return self.record

    def pack_wrapping(self) -> tuple[list[pyrage.x25519.Recipient], int]:
        """What a new pack's data key is wrapped to, and that epoch's tag: the current
        epoch key; the recipients themselves in a repository from before epochs."""
        record = self.key_record()
        epoch = record.current_epoch() if record else None
        if epoch is None:
            return self.recipients, epochs.LEGACY
        # The epoch file is written before the record that lists it (epochs.py); without it
        # nobody could read what is wrapped to this epoch here (a record replayed from
        # another target of the site names that target's epochs), so nothing is written.
        obj = epochs.epoch_object(epoch.tag)
        if self.storage.stat(obj) is None:
            raise RepositoryError(
                f"target {self.storage.label}: keys/recipients names epoch {epoch.number} as the "
                f"current one, but its key file {obj} is missing, so data written under it "
                "could not be read back; nothing was written. Run `emberkeep keys rotate "
                f"--target {self.storage.label}` to start a new epoch, and `emberkeep check` "
                "to see what else is missing"
            )
        return [pyrage.x25519.Recipient.from_str(epoch.public)], epoch.tag

    def keyring(self) -> epochs.Keyring:
        """The epoch keys the identities open (loaded once)."""

        def load() -> epochs.Keyring:
            try:
                record = self.key_record()
            except IntegrityError as exc:  # legacy packs may still open with the identities
                self.damage.append(Damage(layout.RECIPIENTS, str(exc)))
                record = None
            return epochs.load(self.storage, record, self.identities)

        return self._keyring.get(load)

    def forget_keys(self) -> None:
        """After a key change: read the record and the epoch keys again."""
        self.record = None
        self._keyring.reset()
        with self._lock:
            self._pack_keys.clear()

    # -- reading blobs (needs an identity) -----------------------------------------------

    def require_identity(self, action: str) -> None:
        if not self.identities:
            raise IdentityRequired(
                f"{action} needs an identity: this host holds only the writer key, which "
                "cannot read backups. Pass --identity FILE or set keys.identity_file"
            )

    def pack_key(self, pack: str) -> bytes:
        """A pack's data key, read and unwrapped once however many threads ask at once."""
        with self._lock:
            cached = self._pack_keys.get(pack)
            if cached is not None:
                return cached
            loading = self._key_loads.setdefault(pack, threading.Lock())
        with loading:
            with self._lock:
                cached = self._pack_keys.get(pack)
            if cached is None:
                cached = self._load_pack_key(pack)
                with self._lock:
                    self._pack_keys[pack] = cached
                    self._key_loads.pop(pack, None)
        return cached

    def _load_pack_key(self, pack: str) -> bytes:
        self.require_identity("reading backed-up data")
        ring = self.keyring()
        legacy = ring.legacy.get(pack)
        if legacy is not None:
            return legacy  # read from keys/legacy.age: the pack itself is not read
        info = self.storage.stat(pack)
        if info is None:
            raise IntegrityError(pack, "pack is missing from the target")
        wrapped, _, _ = read_wrapped_key(self.storage, pack, info.size)
        try:
            return keys.unwrap(wrapped, [*self.identities, *ring.identities], f"pack {pack}")
        except WrongIdentity as exc:
            record = self.index.packs.get(pack)
            tag = record.epoch if record else epochs.LEGACY
            raise WrongIdentity(f"cannot read pack {pack}: {ring.why_not(tag)}") from exc

    def open_blob(self, blob_id: bytes, location: Location, sealed: bytes | memoryview) -> bytes:
        """Decrypt a sealed blob and check it is the content its id names, of the length the
        index records; it never inflates past that length (``check_location``)."""
        check_location(blob_id, location)
        key = self.pack_key(location.pack)
        try:
            data = crypto.open_sealed(
                key, blob_aad(blob_id, location.type), sealed, location.raw_length
            )
        except crypto.TooLarge as exc:
            raise IntegrityError(
                location.pack, f"blob {blob_id.hex()[:16]} {exc} (damaged or forged)"
            ) from exc
        except Exception as exc:
            raise IntegrityError(
                location.pack, f"blob {blob_id.hex()[:16]} fails authentication (damaged)"
            ) from exc
        if len(data) != location.raw_length:
            raise IntegrityError(
                location.pack,
                f"blob {blob_id.hex()[:16]} holds {len(data)} bytes, the index says "
                f"{location.raw_length} (damaged or forged)",
            )
        if all(crypto.blob_id(mac, data) != blob_id for mac in self.mac_keys_of(location.pack)):
            raise IntegrityError(
                location.pack, f"blob {blob_id.hex()[:16]} decrypts to other content (damaged)"
            )
        return data

    def prepare_read(self, blob_ids: Iterable[bytes], on_progress: Any = None) -> None:
        """Before reading many blobs: on a cold target, have every pack they lie in thawed
        at once and wait once (``storage.prepare_read``); other backends need nothing."""
        if not hasattr(self.storage, "prepare_read"):
            return
        packs = set()
        for blob_id in blob_ids:
            location = self.index.find(blob_id)
            if location is not None:
                packs.add(location.pack)
        prepare_read(self.storage, packs, on_progress)

    def require_present(self, blob_ids: Iterable[bytes]) -> None:
        """Raise ``IntegrityError`` unless every blob is indexed and lies within a pack that
        is on the target: a cheap look (one stat per pack) before a restore destroys what
        it replaces. It does not read the data; damage inside a pack is found as it is read."""
        ends: dict[str, int] = {}
        for blob_id in blob_ids:
            where = self._locate(blob_id)
            ends[where.pack] = max(ends.get(where.pack, 0), where.offset + where.length)
        for pack, end in sorted(ends.items()):
            info = self.storage.stat(pack)
            if info is None:
                raise IntegrityError(pack, "pack is missing from the target")
            if info.size < end:
                raise IntegrityError(pack, "pack is shorter than the index says (truncated)")

    def read_blob(self, blob_id: bytes, kind: int | None = None) -> bytes:
        return self.read_run([blob_id], kind)[0]

    def read_tree(self, tree_id: bytes) -> bytes:
        """A tree blob's plaintext; a blob of another type under that id is damage."""
        return self.read_blob(tree_id, layout.BLOB_TREE)

    def runs(self, blob_ids: Iterable[bytes]) -> Iterator[list[bytes]]:
        """``blob_ids`` in order, grouped into runs that lie back to back in one pack, each
        at most ``RUN_SPAN`` bytes: one ranged read fetches a run (``read_run``). A file's
        chunks are written in order, so a large file reads in a few requests per pack
        instead of one per chunk, which is what remote targets charge for."""
        run: list[bytes] = []
        end, pack, span = -1, "", 0
        for blob_id in blob_ids:
            where = self._locate(blob_id)
            adjacent = run and where.pack == pack and where.offset == end
            if adjacent and span + where.length <= RUN_SPAN:
                run.append(blob_id)
                end, span = end + where.length, span + where.length
                continue
            if run:
                yield run
            run, pack, end, span = [blob_id], where.pack, where.offset + where.length, where.length
        if run:
            yield run

    def read_run(self, blob_ids: list[bytes], kind: int | None = layout.BLOB_DATA) -> list[bytes]:
        """The plaintexts of a run (see ``runs``): one ranged read, each blob checked. The
        blobs must be of type ``kind`` (data by default: file content), unless it is None."""
        places = [self._locate(b, kind) for b in blob_ids]
        first, total = places[0], sum(p.length for p in places)
        started = time.perf_counter()
        try:
            sealed = self.storage.get(first.pack, first.offset, total)
        except NotFound as exc:
            raise IntegrityError(first.pack, "pack is missing from the target") from exc
        if len(sealed) != total:
            raise IntegrityError(first.pack, "pack is shorter than the index says (truncated)")
        fetched = time.perf_counter()
        view, pos, out = memoryview(sealed), 0, []
        for blob_id, where in zip(blob_ids, places, strict=True):
            out.append(self.open_blob(blob_id, where, view[pos : pos + where.length]))
            pos += where.length
        self.read_times.add(fetched - started, time.perf_counter() - fetched, total)
        return out

    def _locate(self, blob_id: bytes, kind: int | None = None) -> Location:
        location = self.index.find(blob_id)
        if location is None:
            raise IntegrityError(
                f"blob {blob_id.hex()[:16]}", "is not in the index (its pack or index is lost)"
            )
        if kind is not None and location.type != kind:
            raise IntegrityError(
                location.pack,
                f"blob {blob_id.hex()[:16]} is a {_KIND_NAMES.get(location.type, 'unknown')} "
                f"blob where a {_KIND_NAMES[kind]} blob belongs (damaged or forged)",
            )
        check_location(blob_id, location)
        return location

    # -- prune's markers -----------------------------------------------------------------

    def condemned(self) -> dict[str, str]:
        """Packs prune has condemned: pack object name -> trash marker name."""
        marked = {}
        for info in self.storage.list(f"{layout.TRASH}/"):
            pack = info.name[len(layout.TRASH) + 1 :]
            marked[pack] = info.name
        return marked


_KIND_NAMES = {layout.BLOB_DATA: "data", layout.BLOB_TREE: "tree"}


def check_location(blob_id: bytes, location: Location) -> None:
    """Refuse a blob whose index entry claims more than its kind may hold
    (``layout.BLOB_MAX``), before a byte of it is fetched or inflated: a sealed blob is
    its plaintext (or less, compressed) plus ``crypto.OVERHEAD``."""
    limit = layout.BLOB_MAX.get(location.type)
    if limit is None:
        raise IntegrityError(
            location.pack, f"blob {blob_id.hex()[:16]} has unknown type {location.type}"
        )
    if location.raw_length > limit or location.length > location.raw_length + crypto.OVERHEAD:
        raise IntegrityError(
            location.pack,
            f"blob {blob_id.hex()[:16]} is listed as {location.raw_length} bytes "
            f"({location.length} sealed), more than a {_KIND_NAMES[location.type]} blob may "
            f"hold ({limit}): damaged or forged",
        )


def _verify_copy(
    storage: Storage, raw: bytes, writer_key: keys.WriterKey
) -> tuple[keyfiles.ConfigState, keys.WriterKey]:
    """``config`` verified with the key read from the repository's copy; or, when a writer
    key rotation was cut short after the copy and before ``config`` (its commit point),
    with the generation before, which the copy carries (``writerchain.py``)."""
    try:
        return keyfiles.verify_config(storage, raw, writer_key), writer_key
    except (IntegrityError, RepositoryError):
        if not writer_key.retired:
            raise
        before = replace(writer_key.retired[-1], retired=writer_key.retired[:-1])
        try:
            state = keyfiles.verify_config(storage, raw, before)
        except (IntegrityError, RepositoryError):
            pass
        else:
            if state.damage is None:
                return state, before
        raise


def _already_initialized(storage: Storage) -> RepositoryError:
    return RepositoryError(f"target {storage.label} already holds a repository")


def read_config(storage: Storage) -> dict[str, Any]:
    """The config's fields, unverified: whether a target holds a repository, and whose."""
    return keyfiles.peek_config(keyfiles.read_config_bytes(storage), storage.label)
