"""No module in ``src/emberkeep`` over about 400 lines, except where ``NOTES`` says why.

One module per concept (CONTRIBUTING.md, "Code"): a long module is usually several concepts
that grew together, and is split by concern. ``NOTES`` lists each module over ``LIMIT``
lines with why it is one concept that a split would hurt. A module over the limit without a
note fails, and so does a note whose module is gone or back under the limit: the list only
shrinks.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "emberkeep"

LIMIT = 420  # "about 400"

NOTES: dict[str, str] = {
    "runner/rekey.py": (
        "every key change (add, remove, rotate, rotate --writer, convert) runs the same way: "
        "per target under the exclusive lease, in the write order of repository/epochs.py, "
        "resumable after a crash by running it again; the shared driver (_each, Change, "
        "_Counting) and the listing that reports what the changes made belong with them"
    ),
    "repository/lease.py": (
        "one protocol seen from both sides: how a lease is judged live (this host's by pid, "
        "boot and start time; another host's by LeaseWatch's elapsed-time view) and how its "
        "holder keeps it so (the refresh thread, ensure_live, breaking a stale exclusive "
        "lease). The holder's margin is defined by the judge's STALE_AFTER and the module "
        "docstring's argument covers both; apart, each half would be checked without the other"
    ),
    "demo/shopdocs.py": (
        "a catalogue of the demo shop's document makers, one short function per collection "
        "(product, order, customer, session, ...) over the same seeded helpers (when, words, "
        "object_id) and the Shop cross-references; its length is the number of collections, "
        "not tangled logic, and one module per collection would only repeat the imports"
    ),
    "repository/repo.py": (
        "the Repository class is the format's one read and write surface (index, snapshots, "
        "key epochs, pack keys, sealed blobs read in runs), and every method shares its caches "
        "(index, keyring, pack keys) and the locks that guard them; split, that private state "
        "would have to be shared between classes"
    ),
    "sources/mongodb/restore.py": (
        "MongoRestore is one procedure in the order its docstring gives (refuse non-empty "
        "collections, create and read back options, insert in parallel, replay the oplog "
        "window and the PITR slices, build indexes, views, users and roles), each step "
        "filling the same plan and result; the order is the point, and it reads top to bottom"
    ),
    "journal/__init__.py": (
        "the journal's SQLite schema and every query on it (runs, expiry, interrupted runs, "
        "first_seen, the alert state) with record() and job() that write a run: the queries "
        "change with the tables, so they live beside the schema (its version kept in meta)"
    ),
    "repository/prune.py": (
        "the two-phase condemn/delete protocol, the one place that deletes packs: the "
        "docstring's safety argument (when each marker was visible, when the leases were "
        "listed, which late snapshots pardon a pack) is about the order of calls across "
        "prune, _collect, _needed_by_late_snapshots and _delete_packs; apart, the steps "
        "would be reviewed without the argument that makes them safe"
    ),
    "runner/recover.py": (
        "one command, planned then executed: plan_recover reads, verifies and compares the "
        "stored config and orders the steps the operator approves; execute carries out "
        "exactly those steps and keeps recover.json so an interrupted recovery resumes; both "
        "share Step, Recovery and the progress file"
    ),
    "sources/mongodb/stockdump.py": (
        "reading a stock mongodump's output in its three shapes (an archive, an --out "
        "directory, one database's folder) into one DumpContents, and ImportedDump turning "
        "it into snapshot events; the shapes share the name and metadata parsing (_stem, "
        "_component, _parse_metadata) that the events then rely on"
    ),
    "web/page.py": (
        "the dashboard's HTML: the main page's cards and charts, the journal and snapshots "
        "pages, all built on the same _head, _nav and escaping of every text from the report, "
        "journal or config (any of which may hold anything); the SVG chart helpers (about "
        "90 lines) are the one piece that could move out"
    ),
    "engine/restore.py": (
        "the Restorer is one confined write path: files, hardlinks, directories and symlinks "
        "all go through the same destination handles, refusal list, lock and keep-aside "
        "(engine/aside.py), with the security rules its docstring lists; the tree walk "
        "(engine/walk.py) and what is in the way are already out"
    ),
    "demo/shopdb.py": (
        "generating the demo shop's database on a real server: each feature (BSON extras, "
        "Decimal128, validators, capped and TTL collections, the index kinds, the view, "
        "users) is probed and what the server refused or altered recorded in Features, which "
        "the generated documents then follow; probes and generation share _Run and Features"
    ),
}


def sizes() -> dict[str, int]:
    """Lines of every module, by its path under ``src/emberkeep``."""
    return {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_every_long_module_has_a_note() -> None:
    long = {name: lines for name, lines in sizes().items() if lines > LIMIT}
    missing = sorted(name for name in long if name not in NOTES)
    assert not missing, (
        f"modules over {LIMIT} lines: split each by concern, or say in NOTES why it is one "
        "concept:\n" + "\n".join(f"  {name} ({long[name]} lines)" for name in missing)
    )


def test_every_note_is_still_needed() -> None:
    found = sizes()
    gone = sorted(name for name in NOTES if name not in found)
    assert not gone, f"no such modules any more, so remove them from NOTES: {gone}"
    short = sorted(name for name in NOTES if found[name] <= LIMIT)
    assert not short, f"now at most {LIMIT} lines, so remove them from NOTES: " + ", ".join(
        f"{name} ({found[name]} lines)" for name in short
    )


def test_every_note_gives_a_reason() -> None:
    vague = sorted(name for name, why in NOTES.items() if len(why.split()) < 5)
    assert not vague, f"say why each of these is one concept: {vague}"
