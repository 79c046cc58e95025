"""Which dumped user and role records a restore writes: only those confined to their own
database (``sources.mongodb.users.outside_database``; the restore through a server is
test_mongodb's ``test_a_user_granted_roles_beyond_its_database_is_refused_by_name``)."""

from __future__ import annotations

from typing import Any

import pytest

from emberkeep.sources.mongodb.users import outside_database

USER: dict[str, Any] = {"_id": "shop.app", "user": "app", "db": "shop", "credentials": {}}
ROLE: dict[str, Any] = {"_id": "shop.clerk", "role": "clerk", "db": "shop", "roles": []}


@pytest.mark.parametrize(
    "doc",
    [
        {**USER, "roles": []},
        {**USER, "roles": [{"role": "readWrite", "db": "shop"}, {"role": "clerk", "db": "shop"}]},
        {
            **ROLE,
            "privileges": [{"resource": {"db": "shop", "collection": ""}, "actions": ["find"]}],
        },
        {
            **ROLE,
            "privileges": [{"resource": {"db": "shop", "collection": "orders"}, "actions": []}],
        },
    ],
)
def test_a_record_confined_to_its_database_is_written(doc: dict[str, Any]) -> None:
    collection = "system.users" if "user" in doc else "system.roles"
    assert outside_database(doc, "shop", collection) is None


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        ({**USER, "roles": [{"role": "root", "db": "admin"}]}, "role root@admin"),
        ({**USER, "roles": [{"role": "read", "db": "billing"}]}, "role read@billing"),
        ({**USER, "roles": ["readWrite"]}, "role 'readWrite'"),  # no database named
        ({**USER, "inheritedRoles": [{"role": "dbOwner", "db": "admin"}]}, "dbOwner@admin"),
        ({**USER, "db": "admin"}, "belongs to database 'admin'"),
        ({**USER, "_id": "admin.app"}, "its _id 'admin.app' is not shop.app"),
        ({**ROLE, "roles": [{"role": "root", "db": "admin"}]}, "role root@admin"),
        (
            {**ROLE, "privileges": [{"resource": {"cluster": True}, "actions": ["shutdown"]}]},
            "a privilege on the cluster",
        ),
        (
            {**ROLE, "privileges": [{"resource": {"anyResource": True}, "actions": ["find"]}]},
            "a privilege on any resource",
        ),
        (
            {**ROLE, "privileges": [{"resource": {"db": "", "collection": ""}, "actions": []}]},
            "a privilege on every database",
        ),
        (
            {**ROLE, "privileges": [{"resource": {"db": "billing", "collection": ""}}]},
            "a privilege on billing",
        ),
    ],
)
def test_a_record_reaching_beyond_its_database_is_refused_naming_why(
    doc: dict[str, Any], said: str
) -> None:
    collection = "system.users" if "user" in doc else "system.roles"
    problem = outside_database(doc, "shop", collection)
    assert problem is not None and said in problem, problem
