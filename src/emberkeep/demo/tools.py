"""Where ``scripts/setup`` keeps the servers it builds: once per machine, outside any checkout.

Building FerretDB, versitygw, the stock mongo-tools or DocumentDB takes minutes, so the
result is kept in a per-machine cache keyed by tool and version
(``$EMBERKEEP_TOOLS``, default ``$XDG_CACHE_HOME/emberkeep-tools`` or
``~/.cache/emberkeep-tools``): a fresh clone on the same machine reuses it, and nothing
built lands in the work tree. ``scripts/setup`` computes the same folder (keep the two in
step: ``tools_dir`` here, ``tools=`` there).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_TOOLS = "EMBERKEEP_TOOLS"

FERRETDB_VERSION = "v1.24.2"
VERSITYGW_VERSION = "v1.8.0"
# The stock mongodump/mongorestore/bsondump, from ../shared/vendor (mongo-tools at 8fa3cfc8).
MONGO_TOOLS_VERSION = "8fa3cfc8"
# PostgreSQL 15 + DocumentDB, fronted by FerretDB v2.5 (``ferretdb``) or DocumentDB's gateway
# (``documentdb_gateway``); the folder also holds the vendor's ``start`` and ``stop`` scripts.
DOCUMENTDB_VERSION = "v0.106.0-ferretdb-2.5.0"


def tools_dir() -> Path:
    explicit = os.environ.get(ENV_TOOLS, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "emberkeep-tools"


def built(name: str, version: str, binary: str | None = None) -> Path:
    """The path ``scripts/setup`` builds ``binary`` (default ``name``) of ``name@version`` to."""
    return tools_dir() / f"{name}-{version}" / (binary or name)
