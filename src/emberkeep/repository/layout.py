"""Object names and constants of the repository format (version 1).

```
config                       plaintext JSON: format version, repository id, chunker sizes,
                             sealed (sealing.py, keyfiles.py)
keys/writer.age              the writer key, encrypted to the recipients (keyfiles.py)
keys/recipients              the recipient set, the SHA-256 of keys/writer.age and the key
                             epochs, sealed secret with the index key (recipients.py)
keys/epoch-<tag>.age         a key epoch's secret key, encrypted to the recipients; packs'
                             data keys are wrapped to an epoch (epochs.py)
keys/legacy.age              data keys of packs from before epochs, once converted
data/<aa>/<sha256>           data packs (file and database contents)
meta/<aa>/<sha256>           metadata packs (trees); small, never sent to cold storage
index/<sha256>               pack tables, sealed with the index key
snapshots/<sha256>           snapshot headers, sealed with the index key
locks/<kind>-<random>        leases: shared ones for backups, one exclusive one for prune
trash/<pack name>            packs condemned by prune, deleted after the grace period
siteconfig/<mac>             the site's emberkeep config as of a backup, sealed, then
                             age-encrypted to the recipients (siteconfig.py): what `recover`
                             starts from
forgotten/<time>-<random>    the snapshot ids a prune deleted, sealed, written before it
                             deletes them (forgotten.py): other hosts' memories of what the
                             target held accept these as gone; expired after 90 days
```
Every name but ``config``, ``keys``, ``locks`` and ``forgotten`` is the SHA-256 of the
object's bytes, so uploads are idempotent and every object verifies itself.
"""

from __future__ import annotations

FORMAT_VERSION = 1
FORMAT_ROTATED = 2  # a config after `keys rotate --writer`: it names the writer generations
FORMATS = (FORMAT_VERSION, FORMAT_ROTATED)
CONFIG = "config"
WRITER_KEY = "keys/writer.age"
RECIPIENTS = "keys/recipients"
DATA, META, INDEX, SNAPSHOTS, LOCKS, TRASH = "data", "meta", "index", "snapshots", "locks", "trash"
SITE_CONFIG = "siteconfig"
FORGOTTEN = "forgotten"

BLOB_DATA, BLOB_TREE = 0, 1
PACK_FOLDER = {BLOB_DATA: DATA, BLOB_TREE: META}

CHUNK_MIN = 512 * 1024
CHUNK_AVG_PARAM = 768 * 1024  # pyfastcdc's average is avg + min (skip-ahead): ~1 MiB
CHUNK_MAX = 8 * 1024 * 1024
PACK_TARGET = 16 * 1024 * 1024
META_PACK_TARGET = 4 * 1024 * 1024

# The largest plaintext a reader accepts for each kind of blob, checked before anything is
# fetched or inflated (a writer key can seal a blob that claims, or inflates to, any size).
# Data blobs are chunks, never larger than CHUNK_MAX. A tree blob is one directory listing:
# 128 MiB holds about 600,000 entries, or one file of about 2 TB (66 bytes per chunk id);
# a backup refuses to store a larger listing rather than store what no reader would take.
TREE_MAX = 128 * 1024 * 1024
BLOB_MAX = {BLOB_DATA: CHUNK_MAX, BLOB_TREE: TREE_MAX}
# An index file is a few dozen bytes per blob (a repository of 10 million chunks needs
# about 350 MiB): a larger object is refused unread. Its zstd payload holds random ids and
# so barely compresses; a payload inflating more than INDEX_INFLATION times is forged.
INDEX_FILE_MAX = 1024 * 1024 * 1024
# The key objects are read whole, so a larger one is refused unread (``base.get_at_most``).
# ``config`` lists what each retired writer key sealed, ~80 bytes an object (800,000
# snapshots, index files and site configs); the recipient record holds a line per key
# epoch; the writer key's copy is a few hundred bytes per generation.
CONFIG_MAX = 64 * 1024 * 1024
RECIPIENTS_MAX = 16 * 1024 * 1024
WRITER_KEY_MAX = 1024 * 1024
INDEX_INFLATION = 8


def pack_object(kind: int, digest_hex: str) -> str:
    return f"{PACK_FOLDER[kind]}/{digest_hex[:2]}/{digest_hex}"


def index_object(digest_hex: str) -> str:
    return f"{INDEX}/{digest_hex}"


def snapshot_object(digest_hex: str) -> str:
    return f"{SNAPSHOTS}/{digest_hex}"


def leaf(name: str) -> str:
    return name.rsplit("/", 1)[-1]
