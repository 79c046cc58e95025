"""Reading a mongodb snapshot's files back: whole files, and ``.bson`` files document by
document (a document may span two blobs), blobs fetched and decrypted in parallel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...engine.fetch import read_in_order
from ...engine.tree import Node
from ...errors import IntegrityError
from ...repository.repo import Repository
from .catalog import CollectionInfo, parse_metadata
from .record import split_documents

FETCH_WORKERS = 2
FETCH_WINDOW = 4


def content(repo: Repository, node: Node) -> bytes:
    return b"".join(read_in_order(repo, node["content"]))


@dataclass
class DumpedCollection:
    """One collection or view of a dump: its catalog entry, ``metadata.json`` as stored,
    and its ``.bson`` file's node (None for a view)."""

    info: CollectionInfo
    metadata: bytes
    data: Node | None


def dumped_collections(repo: Repository, nodes: dict[str, Node]) -> Iterator[DumpedCollection]:
    """Every ``<db>/<coll>.metadata.json`` of a snapshot's tree, in path order."""
    for path, node in sorted(nodes.items()):
        parts = path.strip("/").split("/")
        if len(parts) != 2 or not parts[1].endswith(".metadata.json"):
            continue
        metadata = content(repo, node)
        try:
            info = parse_metadata(parts[0], metadata)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(path, f"not a collection's metadata ({exc})") from exc
        if info.name != parts[1].removesuffix(".metadata.json"):
            # the name goes into an archive's namespaces: it must be the one its file has
            raise IntegrityError(path, "names another collection than its file does (forged)")
        yield DumpedCollection(info, metadata, nodes.get(f"/{info.db}/{info.name}.bson"))


def documents(
    repo: Repository,
    node: Node,
    name: str,
    on_bytes: Callable[[str, int], None] = lambda name, size: None,
) -> Iterator[bytes]:
    """Each whole BSON document of a ``.bson`` file; ``name`` labels errors and progress."""
    rest = b""
    with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="mongo-fetch") as pool:
        for blob in read_in_order(repo, node["content"], pool, FETCH_WINDOW):
            data = rest + blob if rest else blob
            try:
                docs, used = split_documents(data)
            except ValueError as exc:
                raise IntegrityError(f"{name}.bson", f"not BSON: {exc}") from exc
            rest = bytes(data[used:])
            on_bytes(name, len(blob))
            yield from docs
    if rest:
        raise IntegrityError(f"{name}.bson", f"ends inside a document ({len(rest)} bytes)")
