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

What a snapshot says is not trusted (README, "How it keeps data safe"): a record is written
only when it belongs to the database being restored (its ``_id``, ``db``) and every role it
grants or inherits, and every privilege of a user-defined role, is confined to that database.
A record naming ``root@admin``, a role of another database, the cluster or any resource is
refused and reported by its name; the others are restored, each reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bson
from bson.errors import BSONError
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


def users_not_kept(client: Client) -> str | None:
    """Why none of the users the server has could be dumped, or None when none were
    because the dumped databases define none.

    A dump reads users from ``admin.system.users``. Some servers keep them elsewhere and
    answer that collection with nothing: DocumentDB (users live in PostgreSQL, ``usersInfo``
    lists them), FerretDB 1.x (no ``usersInfo`` at all). A dump of them that said "dumped"
    with 0 users would hide that the users must be created again after a restore."""
    try:
        listed = client.admin.command("usersInfo", {"forAllDBs": True}).get("users") or []
    except OperationFailure as exc:
        if exc.code == UNAUTHORIZED:
            return None  # not allowed to list them: read_auth would have said so
        code = (exc.details or {}).get("codeName") or exc.code
        return (
            f"the server does not list its users (usersInfo: {code}), so "
            "they cannot be dumped; create the application's users again after a restore"
        )
    if not listed or client.admin["system.users"].find_one({}, {"_id": 1}) is not None:
        return None  # no users at all, or kept where a dump reads them (none of these dbs)
    names = sorted(str(u.get("_id") or u.get("user")) for u in listed)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"the server lists {len(names)} users ({shown}) but keeps none in admin.system.users, "
        "where a dump reads them: they were not dumped; create them again after a restore"
    )


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
    refused: dict[str, str] = field(default_factory=dict)  # record name -> why not restored

    def to_json(self) -> dict[str, Any]:
        return {
            "db": self.db,
            "users": self.users,
            "roles": self.roles,
            "kept": self.kept,
            "refused": self.refused,
        }


def restore_auth(client: Client, db: str, users: bytes, roles: bytes, drop: bool) -> AuthRestored:
    """Write ``db``'s dumped users and roles back; existing ones replaced only with ``drop``.

    A record that reaches beyond ``db`` is refused (``AuthRestored.refused``), never written."""
    done = AuthRestored(db)
    for collection, data, restored in (
        ("system.users", users, done.users),
        ("system.roles", roles, done.roles),
    ):
        for doc in _records(data, collection, done):
            name = str(doc.get("_id"))
            problem = outside_database(doc, db, collection)
            if problem:
                done.refused[name] = problem
                continue
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


def _records(data: bytes, collection: str, done: AuthRestored) -> list[dict[str, Any]]:
    if not data:
        return []
    try:
        return bson.decode_all(data)
    except (BSONError, ValueError) as exc:
        done.refused[f"{done.db} {collection}"] = f"the dumped records are not BSON ({exc})"
        return []


def outside_database(doc: dict[str, Any], db: str, collection: str) -> str | None:
    """Why the user (``system.users``) or role (``system.roles``) record ``doc`` reaches
    beyond database ``db``; None when it stays inside it."""
    name_field = "user" if collection == "system.users" else "role"
    name = doc.get(name_field)
    if doc.get("db") != db or not isinstance(name, str):
        return f"the record belongs to database {doc.get('db')!r}, not {db!r}"
    if doc.get("_id") != f"{db}.{name}":
        return f"its _id {doc.get('_id')!r} is not {db}.{name}, the {name_field} it names"
    outside = [_role_name(r) for r in _list(doc.get("roles")) if not _role_in(r, db)]
    outside += [_role_name(r) for r in _list(doc.get("inheritedRoles")) if not _role_in(r, db)]
    if collection == "system.roles":
        outside += [
            _resource_name(p.get("resource") if isinstance(p, dict) else None)
            for p in _list(doc.get("privileges"))
            if not _resource_in(p.get("resource") if isinstance(p, dict) else None, db)
        ]
    if outside:
        return (
            f"it grants {', '.join(dict.fromkeys(outside))}, outside database {db!r}; "
            "a restore gives a database's users roles on that database only"
        )
    return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _role_in(role: Any, db: str) -> bool:
    return isinstance(role, dict) and role.get("db") == db and isinstance(role.get("role"), str)


def _role_name(role: Any) -> str:
    if isinstance(role, dict):
        return f"role {role.get('role')}@{role.get('db')}"
    return f"role {role!r}"


def _resource_in(resource: Any, db: str) -> bool:
    """A privilege on ``db`` itself or one of its collections; not the cluster, not every
    database (``db: ""``), not any resource."""
    return (
        isinstance(resource, dict)
        and set(resource) <= {"db", "collection"}
        and resource.get("db") == db
        and isinstance(resource.get("collection", ""), str)
    )


def _resource_name(resource: Any) -> str:
    if isinstance(resource, dict) and resource.get("cluster"):
        return "a privilege on the cluster"
    if isinstance(resource, dict) and resource.get("anyResource"):
        return "a privilege on any resource"
    if isinstance(resource, dict) and "db" in resource:
        where = resource["db"] or "every database"
        return f"a privilege on {where}"
    return f"a privilege on {resource!r}"
