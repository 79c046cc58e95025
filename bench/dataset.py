"""Deterministic synthetic backup dataset for the emberkeep / restic / borg benchmark.

Layout of a generated tree (shares are of the requested total size):

* ``photos/YYYY/MM/IMG_nnnnn.jpg`` -- media-like incompressible files, 50 KiB .. 5 MiB,
  log-uniform sizes, about 60 % of the bytes (they take whatever the other kinds leave).
* ``docs/``, ``etc/``, ``logs/`` -- text/config/log-like compressible files built from a
  small vocabulary, 1 KiB .. 512 KiB, about 10 % of the bytes.
* ``small/dNNN/`` -- 1..8 KiB files (half text, half binary), about 5 % of the bytes but
  at least 300 and at most 4000 files (so ~1.7 % of a 1 GiB dataset).
* ``large/db.img`` -- one large file, about 25 % of the bytes, made of 1 MiB segments
  (~70 % random, ~30 % text), like a database dump or a disk image.

Two more datasets, each one kind of data the standard one mixes in:

* ``mixed`` (:func:`generate_mixed`): one file ``mixed.img`` of 1 MiB random, then 1 MiB
  text, alternating (a tar file, a dump with embedded binaries, a VM image), 40 MiB unless
  told.
* ``thumbnails`` (:func:`generate_thumbnails`): ``--files N`` (500,000 unless told) small
  JPEG-like incompressible files of 256 B .. 2 KiB (log-uniform, about 860 B on average,
  so about 410 MiB at 500,000), 1,000 to a directory: a media library's thumbnails.

Everything is derived from one seed, so the same ``--size-mb``/``--files``/``--seed`` always
gives byte-identical trees. :func:`mutate` applies a deterministic ~1 % change on top.

Usage::

    python bench/dataset.py OUT_DIR [--kind standard|mixed|thumbnails] [--size-mb 1024]
        [--files 500000] [--seed 1] [--mutate]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB

MEDIA_SHARE = 0.60
TEXT_SHARE = 0.10
SMALL_SHARE = 0.05
LARGE_SHARE = 0.25

MEDIA_MIN, MEDIA_MAX = 50 * KiB, 5 * MiB
TEXT_MIN, TEXT_MAX = 1 * KiB, 512 * KiB
SMALL_MIN, SMALL_MAX = 1 * KiB, 8 * KiB
SMALL_COUNT_MIN, SMALL_COUNT_MAX = 300, 4000
SMALL_PER_DIR = 100
LARGE_SEGMENT = 1 * MiB
LARGE_TEXT_PROB = 0.30
RANDOM_BLOCK = 1 * MiB  # randbytes() is fastest (and int-size safe) in blocks of this size

LARGE_FILE = Path("large") / "db.img"

KINDS = ("standard", "mixed", "thumbnails")
MIXED_FILE = Path("mixed.img")
MIXED_SEGMENT = 1 * MiB
MIXED_DEFAULT_MB = 40
THUMB_MIN, THUMB_MAX = 256, 2 * KiB
THUMB_DEFAULT_FILES = 500_000
THUMBS_PER_DIR = 1000

_WORD_TEXT = (
    "the of and to in is was for on that with as by at from this be are or an it not "
    "backup restore snapshot chunk index pack blob tree repository encryption key nonce "
    "server client request response error warning info debug trace timeout retry connect "
    "user admin group role permission token session cookie header body status method path "
    "mongodb collection document field value query cursor replica primary secondary shard "
    "config enabled disabled true false null none default port host address bind listen "
    "http https tcp udp tls certificate cipher digest sha256 blake3 zstd gzip level size "
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday morning evening night today "
    "invoice order customer product price quantity total amount currency payment shipping "
    "report summary detail note draft final review approved rejected pending closed open"
)
_CONFIG_KEY_TEXT = (
    "listen_address max_connections log_level cache_size worker_threads data_dir "
    "retention_days compression_level timeout_seconds retry_limit bind_port tls_enabled "
    "replica_set write_concern read_preference pool_size heartbeat_ms journal_enabled"
)
_WORDS = _WORD_TEXT.split()
_CONFIG_KEYS = _CONFIG_KEY_TEXT.split()


@dataclass
class DatasetStats:
    """What :func:`generate` wrote."""

    root: str
    seed: int
    requested_bytes: int
    total_bytes: int = 0
    files: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, kind: str, size: int) -> None:
        entry = self.by_kind.setdefault(kind, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += size
        self.files += 1
        self.total_bytes += size


@dataclass
class MutationStats:
    """What :func:`mutate` changed."""

    seed: int
    fraction: float
    files_before: int
    files_changed: int = 0
    bytes_rewritten: int = 0
    files_added: int = 0
    bytes_added: int = 0
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)


class _Gen:
    """Seeded byte generators: incompressible random and compressible text."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lines = self._line_pool(4096)

    def _line_pool(self, count: int) -> list[bytes]:
        rng = self.rng
        lines: list[bytes] = []
        for i in range(count):
            kind = i % 3
            if kind == 0:  # prose
                words = rng.choices(_WORDS, k=rng.randint(6, 16))
                line = " ".join(words).capitalize() + "."
            elif kind == 1:  # config
                key = rng.choice(_CONFIG_KEYS)
                value = rng.choice([str(rng.randint(0, 65535)), rng.choice(_WORDS), "true"])
                line = f"{key} = {value}"
            else:  # log
                stamp = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
                level = rng.choice(["INFO", "WARN", "DEBUG", "ERROR"])
                message = " ".join(rng.choices(_WORDS, k=rng.randint(4, 10)))
                line = f"{stamp}T{clock}Z {level} {message}"
            lines.append(line.encode() + b"\n")
        return lines

    def random_bytes(self, size: int) -> bytes:
        if size <= RANDOM_BLOCK:
            return self.rng.randbytes(size)
        parts = []
        left = size
        while left > 0:
            n = min(left, RANDOM_BLOCK)
            parts.append(self.rng.randbytes(n))
            left -= n
        return b"".join(parts)

    def text_bytes(self, size: int) -> bytes:
        # ~50 bytes per line on average; draw a little more than needed and cut.
        count = size // 40 + 4
        data = b"".join(self.rng.choices(self.lines, k=count))
        while len(data) < size:
            data += b"".join(self.rng.choices(self.lines, k=count))
        return data[:size]

    def log_uniform(self, lo: int, hi: int) -> int:
        return int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _write_media(gen: _Gen, root: Path, budget: int, stats: DatasetStats) -> None:
    written = 0
    index = 0
    while budget - written >= MEDIA_MIN:
        size = min(gen.log_uniform(MEDIA_MIN, MEDIA_MAX), budget - written)
        year = 2015 + index % 10
        month = 1 + (index // 10) % 12
        path = root / "photos" / str(year) / f"{month:02d}" / f"IMG_{index:05d}.jpg"
        # JPEG SOI/APP0 marker, then incompressible payload.
        _write(path, b"\xff\xd8\xff\xe0" + gen.random_bytes(size - 4))
        stats.add("media", size)
        written += size
        index += 1


def _write_text(gen: _Gen, root: Path, budget: int, stats: DatasetStats) -> None:
    written = 0
    index = 0
    folders = (("docs", ".md"), ("etc", ".conf"), ("logs", ".log"))
    while budget - written >= TEXT_MIN:
        size = min(gen.log_uniform(TEXT_MIN, TEXT_MAX), budget - written)
        folder, ext = folders[index % len(folders)]
        path = root / folder / f"sub{index % 7}" / f"{folder}-{index:05d}{ext}"
        _write(path, gen.text_bytes(size))
        stats.add("text", size)
        written += size
        index += 1


def _write_small(gen: _Gen, root: Path, budget: int, stats: DatasetStats) -> None:
    mean = (SMALL_MIN + SMALL_MAX) // 2
    count = max(SMALL_COUNT_MIN, min(SMALL_COUNT_MAX, budget // mean))
    for index in range(count):
        size = gen.rng.randint(SMALL_MIN, SMALL_MAX)
        folder = root / "small" / f"d{index // SMALL_PER_DIR:03d}"
        if index % 2 == 0:
            _write(folder / f"note-{index:05d}.txt", gen.text_bytes(size))
        else:
            _write(folder / f"blob-{index:05d}.bin", gen.random_bytes(size))
        stats.add("small", size)


def _write_large(gen: _Gen, root: Path, size: int, stats: DatasetStats) -> None:
    path = root / LARGE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    left = size
    with open(path, "wb") as fh:
        while left > 0:
            n = min(left, LARGE_SEGMENT)
            if gen.rng.random() < LARGE_TEXT_PROB:
                fh.write(gen.text_bytes(n))
            else:
                fh.write(gen.random_bytes(n))
            left -= n
    stats.add("large", size)


def generate(out_dir: str | os.PathLike[str], size_mb: float, seed: int = 1) -> DatasetStats:
    """Write a deterministic dataset of about ``size_mb`` MiB into ``out_dir``.

    ``out_dir`` is created if needed and must be empty.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    total = int(size_mb * MiB)
    stats = DatasetStats(root=str(root.resolve()), seed=seed, requested_bytes=total)
    start = time.perf_counter()
    # Each kind gets its own derived generator so that changing one share does not
    # reshuffle the content of the others.
    kinds = ("media", "text", "small", "large")
    gens = {k: _Gen(random.Random(f"{seed}:{k}")) for k in kinds}
    large = max(MiB, int(total * LARGE_SHARE))
    _write_large(gens["large"], root, large, stats)
    _write_text(gens["text"], root, int(total * TEXT_SHARE), stats)
    # The small-file count is capped; media absorbs whatever the other kinds left over.
    _write_small(gens["small"], root, int(total * SMALL_SHARE), stats)
    _write_media(gens["media"], root, total - stats.total_bytes, stats)
    stats.seconds = time.perf_counter() - start
    return stats


def _empty_root(out_dir: str | os.PathLike[str]) -> Path:
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    return root


def generate_mixed(
    out_dir: str | os.PathLike[str], size_mb: float = MIXED_DEFAULT_MB, seed: int = 1
) -> DatasetStats:
    """One file of ``size_mb`` MiB: 1 MiB of random bytes, then 1 MiB of text, alternating.

    A chunk of it begins in either and most hold both, so it shows whether compression
    looks at a whole chunk or judges it by its start."""
    root = _empty_root(out_dir)
    total = int(size_mb * MiB)
    stats = DatasetStats(root=str(root.resolve()), seed=seed, requested_bytes=total)
    start = time.perf_counter()
    gen = _Gen(random.Random(f"{seed}:mixed"))
    with open(root / MIXED_FILE, "wb") as fh:
        for n, offset in enumerate(range(0, total, MIXED_SEGMENT)):
            size = min(MIXED_SEGMENT, total - offset)
            fh.write(gen.random_bytes(size) if n % 2 == 0 else gen.text_bytes(size))
    stats.add("mixed", total)
    stats.seconds = time.perf_counter() - start
    return stats


def generate_thumbnails(
    out_dir: str | os.PathLike[str], files: int = THUMB_DEFAULT_FILES, seed: int = 1
) -> DatasetStats:
    """``files`` small incompressible JPEG-like files, 1,000 to a directory."""
    root = _empty_root(out_dir)
    gen = _Gen(random.Random(f"{seed}:thumbnails"))
    stats = DatasetStats(root=str(root.resolve()), seed=seed, requested_bytes=0)
    start = time.perf_counter()
    for index in range(files):
        folder = root / "thumbs" / f"{index // THUMBS_PER_DIR:04d}"
        if index % THUMBS_PER_DIR == 0:
            folder.mkdir(parents=True)
        size = gen.log_uniform(THUMB_MIN, THUMB_MAX)
        with open(folder / f"t{index:07d}.jpg", "wb") as fh:
            fh.write(b"\xff\xd8\xff\xe0" + gen.rng.randbytes(size - 4))
        stats.add("thumbnail", size)
    stats.requested_bytes = stats.total_bytes
    stats.seconds = time.perf_counter() - start
    return stats


def generate_kind(
    kind: str,
    out_dir: str | os.PathLike[str],
    *,
    size_mb: float | None = None,
    files: int | None = None,
    seed: int = 1,
) -> DatasetStats:
    """The dataset ``kind`` (one of ``KINDS``); ``size_mb``/``files`` None: its default."""
    if kind == "standard":
        return generate(out_dir, 1024 if size_mb is None else size_mb, seed=seed)
    if kind == "mixed":
        return generate_mixed(out_dir, MIXED_DEFAULT_MB if size_mb is None else size_mb, seed)
    if kind == "thumbnails":
        return generate_thumbnails(out_dir, THUMB_DEFAULT_FILES if files is None else files, seed)
    raise ValueError(f"unknown dataset kind {kind!r} (one of {', '.join(KINDS)})")


def list_files(root: Path) -> list[Path]:
    """All regular files under ``root``, as sorted relative paths."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        out.extend((base / name).relative_to(root) for name in sorted(filenames))
    out.sort()
    return out


def _rewrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def mutate(out_dir: str | os.PathLike[str], fraction: float = 0.01, seed: int = 2) -> MutationStats:
    """Change about ``fraction`` of the files under ``out_dir`` in place, deterministically.

    * ``round(fraction * files)`` files (at least one) get a region of random bytes
      rewritten in place (size unchanged, mtime updated). The large file, when present,
      is always one of them and gets a few scattered page-sized edits, like a database.
    * Two new files are added under ``new/``: one media-like, one text-like.
    """
    root = Path(out_dir)
    files = list_files(root)
    if not files:
        raise FileNotFoundError(f"no files under {root}")
    rng = random.Random(f"mutate:{seed}")
    gen = _Gen(rng)
    stats = MutationStats(seed=seed, fraction=fraction, files_before=len(files))

    count = min(len(files), max(1, round(fraction * len(files))))
    chosen = rng.sample(files, count)
    if LARGE_FILE in files and LARGE_FILE not in chosen:
        chosen[-1] = LARGE_FILE
    for rel in sorted(chosen):
        path = root / rel
        size = path.stat().st_size
        if size == 0:
            continue
        edits = 3 if rel == LARGE_FILE else 1
        for _ in range(edits):
            length = min(size, rng.randint(1 * KiB, 64 * KiB))
            offset = rng.randrange(0, size - length + 1)
            _rewrite(path, offset, gen.random_bytes(length))
            stats.bytes_rewritten += length
        stats.files_changed += 1
        stats.changed.append(str(rel))

    new_files = (
        (Path("new") / f"IMG_added_{seed}.jpg", gen.random_bytes(rng.randint(200 * KiB, 2 * MiB))),
        (Path("new") / f"notes_added_{seed}.md", gen.text_bytes(rng.randint(4 * KiB, 64 * KiB))),
    )
    for rel, data in new_files:
        _write(root / rel, data)
        stats.files_added += 1
        stats.bytes_added += len(data)
        stats.added.append(str(rel))
    return stats


def _human(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="directory to create (must be empty)")
    parser.add_argument("--kind", choices=KINDS, default="standard", help="dataset (standard)")
    parser.add_argument(
        "--size-mb",
        type=float,
        help=f"total size in MiB (standard 1024, mixed {MIXED_DEFAULT_MB}; not for thumbnails)",
    )
    parser.add_argument(
        "--files", type=int, help=f"thumbnails: how many files ({THUMB_DEFAULT_FILES:,})"
    )
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--force", action="store_true", help="delete OUT_DIR first")
    parser.add_argument(
        "--mutate",
        action="store_true",
        help="instead of generating, apply the ~1%% mutation to an existing OUT_DIR",
    )
    parser.add_argument("--mutate-seed", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.01)
    args = parser.parse_args(argv)

    if args.mutate:
        mstats = mutate(args.out_dir, fraction=args.fraction, seed=args.mutate_seed)
        print(
            f"changed {mstats.files_changed}/{mstats.files_before} files "
            f"({_human(mstats.bytes_rewritten)} rewritten), added {mstats.files_added} "
            f"files ({_human(mstats.bytes_added)})"
        )
        return 0

    if args.force and args.out_dir.exists():
        shutil.rmtree(args.out_dir)
    try:
        stats = generate_kind(
            args.kind, args.out_dir, size_mb=args.size_mb, files=args.files, seed=args.seed
        )
    except FileExistsError as exc:
        print(f"error: {exc} (use --force to replace it)", file=sys.stderr)
        return 1
    print(f"wrote {stats.files} files, {_human(stats.total_bytes)} in {stats.seconds:.1f}s")
    for kind, entry in asdict(stats)["by_kind"].items():
        share = entry["bytes"] / stats.total_bytes * 100
        print(f"  {kind:6s} {entry['files']:6d} files {_human(entry['bytes']):>12s} {share:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
