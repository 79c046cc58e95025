"""A snapshot's tree read for use: every entry validated, the invalid ones refused by path.

What a snapshot lists may be forged by whoever holds a writer key (README, "How it keeps
data safe"): every reader of a tree (restore, verify, browse, tarball, mount, export)
walks it through ``walk_tree`` or ``read_listing``, which validate each entry
(``tree.decode_listing``) and leave a bad one out, with all below it, reporting its path
and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import IntegrityError, NotFound
from ..repository.repo import Repository
from .tree import BadTree, Node, content_problem, decode_listing, shown

Refuse = Callable[[str, str], None]


def walk_tree(
    repo: Repository, tree_id: bytes, prefix: str = "", on_refused: Refuse | None = None
) -> Iterator[tuple[str, Node]]:
    """Every valid node of a snapshot tree with its absolute snapshot path, parents first.

    An entry that is not valid (``tree.decode_listing``) or a listing that cannot be read
    is reported to ``on_refused(path, reason)`` and left out, with all below it; without
    ``on_refused`` it raises ``IntegrityError`` naming the path. Iterative: a deep tree
    costs no recursion.
    """
    refuse = on_refused or _raise_refused
    stack = [read_listing(repo, tree_id, prefix, refuse)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        path, node = item
        if node["type"] == "dir":
            stack.append(read_listing(repo, node["subtree"], path, refuse))


def read_listing(
    repo: Repository, tree_id: bytes, prefix: str, refuse: Refuse
) -> Iterator[tuple[str, Node]]:
    """One listing's valid nodes with their paths under ``prefix``; the rest refused."""
    try:
        listing = decode_listing(repo.read_tree(tree_id))
    except (IntegrityError, NotFound, BadTree) as exc:
        refuse(prefix or "/", f"its listing cannot be read: {exc}")
        return
    for bad in listing.bad:
        refuse(f"{prefix}/{bad.name}", bad.reason)
    for node in listing.nodes:
        yield f"{prefix}/{node['name']}", node


def file_problem(repo: Repository, node: Node) -> str | None:
    """Why a file node cannot be restored as it says, known before a byte is fetched:
    ``tree.content_problem`` with the blob sizes the index lists."""
    sizes = []
    for blob_id in node["content"]:
        location = repo.index.find(blob_id)
        if location is None:
            return f"blob {blob_id.hex()[:16]} is not in the index (its pack or index is lost)"
        sizes.append(location.raw_length)
    return content_problem(node, sizes)


def _raise_refused(path: str, reason: str) -> None:
    raise IntegrityError(shown(path), reason)
