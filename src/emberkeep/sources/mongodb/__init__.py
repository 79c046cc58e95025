"""The MongoDB source: a consistent, streaming, mongodump-compatible backup and its restore.

- ``connection``: opening a client with timeouts, and errors that name the server.
- ``catalog``: databases, collections, views, indexes; the ``metadata.json`` mongodump writes.
- ``dump``: the backup's events, collections read in parallel straight into the engine.
- ``oplog``: the window that makes the dump consistent to one point, and its replay.
- ``record``: ``emberkeep-mongodb.json``, what the dump saw (counts, digests, the window).
- ``restore``: documents in parallel batches, the oplog replayed, indexes and views last.
- ``archive``: the ``mongodump --archive`` format, for ``emberkeep export``.
"""
