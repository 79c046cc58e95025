"""Compression looks at the whole chunk: a chunk that begins in random bytes and goes on in
text is compressed; a random one is stored raw; every sealed blob opens to what was sealed,
whichever way its flag says (docs/design.md, "Blobs, packs, index")."""

from __future__ import annotations

import os
import random
from pathlib import Path

from conftest import Site, restored, stored_bytes, tree_listing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emberkeep import crypto

MiB = 1024 * 1024
AAD = b"a blob id and type"
WORDS = [
    "backup",
    "restore",
    "chunk",
    "index",
    "pack",
    "blob",
    "tree",
    "snapshot",
    "key",
    "nonce",
    "server",
    "client",
]


def text(size: int, seed: int = 1) -> bytes:
    """Log-like lines from a small vocabulary: zstd shrinks them several times over."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    total = 0
    while total < size:
        line = f"{rng.randint(0, 99999):05d} {' '.join(rng.choices(WORDS, k=8))}\n".encode()
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


def mixed(size: int, segment: int = MiB) -> bytes:
    """Random bytes, then text, alternating in ``segment``-sized runs, random first."""
    parts = []
    for n, offset in enumerate(range(0, size, segment)):
        length = min(segment, size - offset)
        parts.append(os.urandom(length) if n % 2 == 0 else text(length, seed=n))
    return b"".join(parts)


def sealed_roundtrip(data: bytes) -> tuple[int, int]:
    """Seal ``data``, open it again (it must come back exactly); its flag and payload size."""
    key = os.urandom(32)
    sealed = crypto.seal(key, AAD, data)
    assert crypto.open_sealed(key, AAD, bytes(sealed), len(data)) == data
    return sealed[0], len(sealed) - crypto.OVERHEAD


def test_a_chunk_that_starts_random_and_goes_on_in_text_is_compressed() -> None:
    chunk = os.urandom(2 * MiB) + text(2 * MiB)
    flag, payload = sealed_roundtrip(chunk)
    assert flag == crypto.ZSTD
    # the random half stays as it is, the text half shrinks several times over
    assert 2 * MiB < payload < 2 * MiB + MiB


def test_a_random_chunk_is_stored_raw() -> None:
    chunk = os.urandom(4 * MiB)
    assert sealed_roundtrip(chunk) == (crypto.RAW, len(chunk))


def test_a_text_chunk_is_compressed() -> None:
    flag, payload = sealed_roundtrip(text(4 * MiB))
    assert flag == crypto.ZSTD
    assert payload < MiB


def test_text_in_the_middle_of_random_bytes_is_found() -> None:
    chunk = os.urandom(3 * MiB) + text(MiB) + os.urandom(3 * MiB)
    flag, payload = sealed_roundtrip(chunk)
    assert flag == crypto.ZSTD
    assert payload < 6 * MiB + MiB // 2


def test_a_mixed_chunk_sealed_raw_by_an_older_writer_still_opens() -> None:
    """Before, a chunk whose start did not compress was sealed raw: the reader takes either."""
    chunk = mixed(2 * MiB)
    key, nonce = os.urandom(32), os.urandom(crypto.NONCE)
    flag = bytes([crypto.RAW])
    old = flag + nonce + AESGCM(key).encrypt(nonce, chunk, AAD + flag)
    assert crypto.open_sealed(key, AAD, old, len(chunk)) == chunk


def test_a_mixed_file_is_stored_compressed_and_restored_exactly(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "mixed.img").write_bytes(mixed(16 * MiB))  # 8 MiB random, 8 MiB text
    site.write_config(paths=[src])
    site.run("init")
    site.run("backup")
    # the random half is stored as it is and the text half compressed, also where a chunk
    # (512 KiB to 8 MiB) begins in random bytes: judged by its start, such a chunk went raw
    assert stored_bytes(site.repo) < 11 * MiB  # 8 MiB and about a quarter of 8 MiB
    out = tmp_path / "out"
    site.run("restore", "latest", "--to", out)
    assert tree_listing(restored(out, src)) == tree_listing(src)
