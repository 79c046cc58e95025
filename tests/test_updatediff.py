"""MongoDB 5+ ``$v: 2`` update diffs: applied on our side, and replayed into a real server.

The diffs are written by hand from the format's description (mongod 5+ writes them; the
test server, FerretDB, logs whole-document ``$set``s instead).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from bson import Int64

from emberkeep.sources.mongodb.oplog import Replayer
from emberkeep.sources.mongodb.updatediff import UnsupportedDiff, apply_diff


def _applied(doc: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    apply_diff(out, diff)
    return out


def test_sections_delete_update_insert_and_subdiffs() -> None:
    doc = {"_id": 1, "a": 1, "b": 2, "c": {"d": 1, "e": [1, 2, 3]}, "f": "keep"}
    diff = {
        "d": {"b": False},
        "u": {"a": 5},
        "i": {"z": {"new": True}},
        "sc": {"u": {"d": 2}, "se": {"a": True, "l": 2, "u1": 9}},
    }
    got = _applied(doc, diff)
    assert got == {"_id": 1, "a": 5, "c": {"d": 2, "e": [1, 9]}, "f": "keep", "z": {"new": True}}
    assert list(got) == ["_id", "a", "c", "f", "z"]  # updated in place, inserted last


def test_array_grows_with_nulls_and_elements_take_their_own_diffs() -> None:
    doc = {"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}
    diff = {"sitems": {"a": True, "l": 4, "s1": {"u": {"qty": Int64(7)}}, "u3": "last"}}
    assert _applied(doc, diff) == {
        "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 7}, None, "last"]
    }


def test_applying_twice_is_applying_once() -> None:
    """The dump may have read a document after some of the window's updates."""
    doc = {"a": [1, 2, 3, 4], "b": {"c": 1}, "x": 0}
    diff = {
        "d": {"x": False},
        "i": {"y": 1},
        "sa": {"a": True, "l": 2, "u0": 9},
        "sb": {"i": {"d": 2}},
    }
    once = _applied(doc, diff)
    assert _applied(once, diff) == once == {"a": [9, 2], "b": {"c": 1, "d": 2}, "y": 1}


def test_a_subdiff_on_a_field_gone_or_of_another_type_is_skipped() -> None:
    doc = {"a": 1, "b": "now a string"}
    diff = {"sgone": {"u": {"x": 1}}, "sb": {"a": True, "u0": 1}, "u": {"a": 2}}
    assert _applied(doc, diff) == {"a": 2, "b": "now a string"}


@pytest.mark.parametrize("section", ["b", "q"])
def test_a_section_it_cannot_apply_is_a_clear_error(section: str) -> None:
    with pytest.raises(UnsupportedDiff, match="export --format mongodump-archive") as info:
        apply_diff({"a": 1}, {section: {"a": 1}})
    assert ("binary patch" in str(info.value)) == (section == "b")


def _update(ns: str, _id: Any, diff: dict[str, Any]) -> dict[str, Any]:
    return {"op": "u", "ns": ns, "o": {"$v": 2, "diff": diff}, "o2": {"_id": _id}}


def test_replay_applies_diffs_in_order_with_the_other_writes(
    mongo_client: Any, mongo_db_name: str
) -> None:
    """Inserts, diffs, a FerretDB-style whole-document $set and deletes, renamed into
    another collection: the result is each document after its last write."""
    target = mongo_client[mongo_db_name]["restored"]
    target.insert_many(
        [
            {"_id": 1, "name": "Ember", "tags": ["soy", "amber", "oud"], "stock": {"qty": 3}},
            {"_id": 2, "name": "Cedar", "tags": []},
        ]
    )
    ns = "shop.products"
    entries = [
        _update(ns, 1, {"u": {"name": "Ember XL"}, "stags": {"a": True, "l": 2}}),
        {"op": "i", "ns": ns, "o": {"_id": 3, "name": "Fig", "tags": ["new"]}},
        _update(ns, 3, {"i": {"price": 12.5}, "stags": {"a": True, "u1": "sale"}}),
        _update(ns, 1, {"sstock": {"u": {"qty": 2}, "i": {"reserved": 1}}, "d": {"tags": False}}),
        {"op": "u", "ns": ns, "o": {"$set": {"_id": 2, "name": "Cedar II"}}, "o2": {"_id": 2}},
        {"op": "d", "ns": ns, "o": {"_id": 2}},
        _update(ns, 2, {"u": {"name": "gone already"}}),  # deleted before: skipped
        _update("other.products", 1, {"u": {"name": "not restored"}}),
    ]

    def rename(db: str, coll: str) -> tuple[str, str] | None:
        return (mongo_db_name, "restored") if (db, coll) == ("shop", "products") else None

    stats = Replayer(mongo_client, rename).replay(iter(entries))

    assert {d["_id"]: d for d in target.find()} == {
        1: {"_id": 1, "name": "Ember XL", "stock": {"qty": 2, "reserved": 1}},
        3: {"_id": 3, "name": "Fig", "tags": ["new", "sale"], "price": 12.5},
    }
    assert (stats.applied, stats.skipped) == (6, 2)
