"""The recipients a repository's data is encrypted to, and the check that a config still names them.

Every pack's data key is wrapped to the recipients of the config that wrote the pack, and
deduplication reuses packs whatever the recipients were then. So a backup run under a config
whose recipients changed would commit a snapshot (readable by the new recipients) whose data
only the old ones can read; with a recipient replaced, nobody could read it whole. The
repository therefore records its recipient set (``keys/recipients``, sealed with the index
key: a writer reads it without an identity) at its first write, and every write checks the
config against it before storing anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyrage

from .. import keys
from ..engine import crypto
from ..errors import AlreadyExists, IntegrityError, NotFound, RepositoryError
from ..storage.base import Storage
from .layout import RECIPIENTS

FORMAT = 1
AAD = b"emberkeep recipients v1"


class RecipientsChanged(RepositoryError):
    """The config's recipients are not the ones the repository's data is encrypted to."""


def names(recipients: list[pyrage.x25519.Recipient]) -> list[str]:
    """The canonical ``age1…`` strings of a recipient set, sorted: what is recorded and compared."""
    return sorted({str(r) for r in recipients})


def ensure(
    storage: Storage,
    writer_key: keys.WriterKey,
    recipients: list[pyrage.x25519.Recipient],
    config_path: Path | None,
) -> None:
    """Record the set on a repository without one; raise ``RecipientsChanged`` on a mismatch.

    A repository made before this record existed gets the config's set at its next write."""
    wanted = names(recipients)
    recorded = _read(storage, writer_key)
    if recorded is None:
        try:
            storage.put(RECIPIENTS, _seal(wanted, writer_key))
            return
        except AlreadyExists:  # another writer recorded it first: compare with theirs
            recorded = _read(storage, writer_key)
    if recorded is not None and recorded != wanted:
        raise RecipientsChanged(_changed_message(storage.label, recorded, wanted, config_path))


def _read(storage: Storage, writer_key: keys.WriterKey) -> list[str] | None:
    try:
        sealed = storage.get(RECIPIENTS)
    except NotFound:
        return None
    try:
        payload = json.loads(crypto.decrypt(writer_key.index_key, AAD, sealed))
    except (crypto.InvalidTag, ValueError) as exc:
        raise IntegrityError(
            f"{storage.label}/{RECIPIENTS}",
            "cannot be read with this host's writer key (damaged, or of another repository); "
            "if the repository is this site's and [keys] recipients are the ones its data is "
            f"encrypted to, delete {RECIPIENTS} from the target: the next backup records them",
        ) from exc
    return sorted(payload["recipients"])


def _seal(recipients: list[str], writer_key: keys.WriterKey) -> bytes:
    plain = json.dumps({"format": FORMAT, "recipients": recipients}).encode()
    return crypto.encrypt(writer_key.index_key, AAD, plain)


def _changed_message(
    label: str, recorded: list[str], wanted: list[str], config: Path | None
) -> str:
    parts = []
    for verb, which in (
        ("added", set(wanted) - set(recorded)),
        ("removed", set(recorded) - set(wanted)),
    ):
        if which:
            parts.append(f"{verb} {', '.join(_short(r) for r in sorted(which))}")
    change = "; ".join(parts)
    return (
        f"the recipients in {config or 'the config'} differ from those the data in {label} "
        f"is encrypted to ({change}). New snapshots would reuse data the new recipients "
        "cannot read, so nothing was written. To go on with this repository, put its "
        "recipients back in [keys] recipients. To give another set of people access, point "
        "the target at a new, empty location and run `emberkeep init` there (keep the old "
        "repository, readable by its recipients, until its retention has passed)."
    )


def _short(recipient: str) -> str:
    return f"{recipient[:12]}…{recipient[-6:]}"
