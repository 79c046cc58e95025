"""MongoDB 5+ ``$v: 2`` update diffs, applied to a document on this side.

Since 5.0 a mongod logs an update as ``{"$v": 2, "diff": D}``, a description of how the
document changed rather than the operators that changed it. A document diff ``D`` holds
sections: ``d`` (fields deleted), ``u`` (fields updated in place), ``i`` (fields added at
the end), ``s<field>`` (a diff of that sub-document or array) and, from 8.0, ``b`` (binary
patches). An array diff carries ``a: true``, ``l`` (the new length, when it changed),
``u<index>`` (an element set) and ``s<index>`` (an element's own diff).

``applyOps`` would take such entries as they are, but FerretDB has no ``applyOps`` and a
restore under ``--ns-to`` renames namespaces anyway, so the replay reads the document,
applies the diff here and writes the result back. Applying is lenient the way replaying a
window must be: the dump may have read a document after some of the window's writes, so
a sub-diff whose field is gone or has another type is skipped (a later entry in the
window set that field, and replaying it makes the document right again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import EmberkeepError


class UnsupportedDiff(EmberkeepError):
    """A diff this replay cannot apply (an 8.0 binary patch, an unknown section)."""


def apply_diff(doc: dict[str, Any], diff: Mapping[str, Any]) -> None:
    """Apply a document diff to ``doc`` in place."""
    for section, body in diff.items():
        if section == "d":
            for name in body:
                doc.pop(name, None)
        elif section == "u":
            for name, value in body.items():
                doc[name] = value  # an existing field keeps its place
        elif section == "i":
            for name, value in body.items():
                doc.pop(name, None)  # inserted fields go last, as in the server's post-image
                doc[name] = value
        elif section.startswith("s") and len(section) > 1:
            _apply_sub(doc.get(section[1:]), body)
        else:
            raise UnsupportedDiff(_unsupported(section))


def apply_array_diff(items: list[Any], diff: Mapping[str, Any]) -> None:
    """Apply an array diff to ``items`` in place."""
    length: int | None = None
    for key, body in diff.items():
        if key == "a":
            continue
        if key == "l":
            length = int(body)
            continue
        kind, index = key[:1], _index(key)
        if kind == "u":
            items.extend([None] * (index + 1 - len(items)))
            items[index] = body
        elif kind == "s":
            if index < len(items):
                _apply_sub(items[index], body)
        else:
            raise UnsupportedDiff(_unsupported(key))
    if length is not None:
        del items[length:]
        items.extend([None] * (length - len(items)))


def _apply_sub(value: Any, diff: Mapping[str, Any]) -> None:
    if diff.get("a") is True:
        if isinstance(value, list):
            apply_array_diff(value, diff)
    elif isinstance(value, dict):
        apply_diff(value, diff)


def _index(key: str) -> int:
    try:
        return int(key[1:])
    except ValueError:
        raise UnsupportedDiff(_unsupported(key)) from None


def _unsupported(section: str) -> str:
    what = "a binary patch (MongoDB 8.0+)" if section == "b" else f"a section {section!r}"
    return (
        f"the snapshot's oplog holds an update diff with {what}, which this restore cannot "
        "apply; `emberkeep export --format mongodump-archive` writes the dump with its "
        "oplog, which `mongorestore --oplogReplay` replays on a mongod"
    )
