"""Users and roles of the dumped databases, as ``mongodump --dumpDbUsersAndRoles`` keeps them.

A database's users live in ``admin.system.users`` (``{_id: "<db>.<user>", db: "<db>", ...,
credentials: {SCRAM hashes}}``) and its user-defined roles in ``admin.system.roles``. The
dump copies those documents raw into ``<db>/$admin.system.users.bson`` and
``<db>/$admin.system.roles.bson`` (mongodump's names), so a restored user logs in with the
password it had: no password is ever known to emberkeep, only the server's salted hashes,
which the repository keeps encrypted like every other byte.

A restore writes them back into ``admin.system.*`` only into the database they came from:
users belong to their database, and a drill's or ``--ns-to`` copy is not a place to log in.
A user that already exists on the target is kept unless ``--drop`` (then replaced).
The server needs the backup role to read them and the restore role to write them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bson
from pymongo.errors import OperationFailure

from .connection import Client

USERS_FILE = "$admin.system.users.bson"
ROLES_FILE = "$admin.system.roles.bson"
AUTH_FILES = {"users": USERS_FILE, "roles": ROLES_FILE}
UNAUTHORIZED = 13


@dataclass
class AuthDump:
    """One database's users and roles as raw BSON, or why they could not be read."""

    db: str
    users: bytes = b""
    roles: bytes = b""
    user_count: int = 0
    role_count: int = 0
    problem: str | None = None


def read_auth(client: Client, db: str) -> AuthDump:
    """The users and roles defined in ``db``; a refusal to read them is reported, not fatal
    (the data backup goes on; the record and a warning say the users are missing)."""
    dump = AuthDump(db)
    try:
        dump.users, dump.user_count = _read(client, "system.users", db)
        dump.roles, dump.role_count = _read(client, "system.roles", db)
    except OperationFailure as exc:
        if exc.code != UNAUTHORIZED:
            raise
        dump.problem = (
            "the backup user may not read admin.system.users/roles; grant it the `backup` "
            "role to keep users and roles"
        )
    return dump


def _read(client: Client, collection: str, db: str) -> tuple[bytes, int]:
    batches = list(client.admin[collection].find_raw_batches({"db": db}))
    data = b"".join(batches)
    return data, len(bson.decode_all(data)) if data else 0


@dataclass
class AuthRestored:
    db: str
    users: list[str] = field(default_factory=list)  # restored
    roles: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already on the target, left as they were

    def to_json(self) -> dict[str, Any]:
        return {"db": self.db, "users": self.users, "roles": self.roles, "kept": self.kept}


def restore_auth(client: Client, db: str, users: bytes, roles: bytes, drop: bool) -> AuthRestored:
    """Write ``db``'s dumped users and roles back; existing ones replaced only with ``drop``."""
    done = AuthRestored(db)
    for collection, data, restored in (
        ("system.users", users, done.users),
        ("system.roles", roles, done.roles),
    ):
        for doc in bson.decode_all(data) if data else []:
            name = str(doc["_id"])
            target = client.admin[collection]
            if target.find_one({"_id": doc["_id"]}, {"_id": 1}) is None:
                target.insert_one(doc)
            elif drop:
                target.replace_one({"_id": doc["_id"]}, doc)
            else:
                done.kept.append(name)
                continue
            restored.append(name)
    return done
