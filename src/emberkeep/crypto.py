"""Blob ids, sealing (compress + AEAD) and opening.

A sealed blob is ``flag(1) || nonce(12) || AES-256-GCM(payload)``. ``flag`` says whether
``payload`` is zstd-compressed (it is stored raw when zstd does not shrink it). The
associated data is the blob id, its type and the flag, so a blob cannot be swapped for
another, relabelled, or have its flag flipped. The sealed bytes are built in one buffer.

Opening is bounded: whoever holds a writer key can seal anything, including a small
payload that inflates to gigabytes, so the caller says how large the plaintext may be
(the size the index records, itself bounded by the largest chunk or tree) and nothing
larger is ever allocated.
"""

from __future__ import annotations

import os
import threading

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12
TAG = 16
OVERHEAD = 1 + NONCE + TAG  # a sealed blob is its payload and this many bytes more
RAW, ZSTD = 0, 1
ZSTD_LEVEL = 3

_local = threading.local()


def blob_id(mac_key: bytes, data: bytes | memoryview) -> bytes:
    """Keyed BLAKE3: equal content gives equal ids under one key, and reveals nothing."""
    return blake3.blake3(data, key=mac_key).digest()


def _compressor() -> zstandard.ZstdCompressor:
    comp = getattr(_local, "comp", None)
    if comp is None:
        comp = _local.comp = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "dec", None)
    if dec is None:
        dec = _local.dec = zstandard.ZstdDecompressor()
    return dec


def compress(data: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """zstd when it shrinks the data, else the data itself.

    Every chunk is compressed whole: a chunk that begins in random bytes may go on in text
    (tar files, database dumps with embedded binaries, disk images), and zstd stores the
    incompressible blocks of a frame raw while it compresses the rest. On incompressible
    data zstd gives up per block quickly (several GB/s at this level), so judging a chunk
    by a sample of its start saved little and stored such chunks raw. How the flag marks
    the choice is in docs/design.md ("Blobs, packs, index"); readers never depend on how it
    was made.
    """
    packed = _compressor().compress(data)
    if len(packed) < len(data):
        return ZSTD, packed
    return RAW, data


def seal(key: bytes, aad: bytes, data: bytes | memoryview) -> bytearray:
    """Compress then encrypt into one new buffer: flag || nonce || ciphertext || tag."""
    flag, payload = compress(data)
    sealed = bytearray(1 + NONCE + len(payload) + TAG)
    sealed[0] = flag
    nonce = os.urandom(NONCE)
    sealed[1 : 1 + NONCE] = nonce
    out = memoryview(sealed)[1 + NONCE :]
    AESGCM(key).encrypt_into(nonce, payload, aad + bytes([flag]), out)
    return sealed


class TooLarge(ValueError):
    """A sealed object's plaintext would exceed the size its caller allows."""


def inflate(data: bytes, limit: int) -> bytes:
    """zstd-decompress ``data``, refusing (``TooLarge``) to produce more than ``limit`` bytes.

    python-zstandard allocates whatever a frame header declares and ignores
    ``max_output_size`` then, so the declared size is checked first; a frame that declares
    none is bounded by ``max_output_size`` (an error once the output would exceed it).
    """
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise TooLarge(f"not a zstd frame ({exc})") from exc
    if declared > limit:
        raise TooLarge(f"inflates to {declared} bytes, more than the {limit} allowed")
    try:
        return _decompressor().decompress(data, max_output_size=limit)
    except zstandard.ZstdError as exc:
        raise TooLarge(f"does not inflate within {limit} bytes ({exc})") from exc


def open_sealed(key: bytes, aad: bytes, sealed: bytes | memoryview, limit: int) -> bytes:
    """Decrypt then decompress, at most ``limit`` bytes of plaintext. Raises InvalidTag on
    any tampering, ``TooLarge`` for a plaintext over ``limit``."""
    view = memoryview(sealed)
    if len(view) < OVERHEAD:
        raise InvalidTag
    flag = view[0]
    plain = AESGCM(key).decrypt(bytes(view[1 : 1 + NONCE]), view[1 + NONCE :], aad + bytes([flag]))
    if flag == ZSTD:
        return inflate(plain, limit)
    if flag != RAW:
        raise InvalidTag
    if len(plain) > limit:
        raise TooLarge(f"holds {len(plain)} bytes, more than the {limit} allowed")
    return plain


def encrypt(key: bytes, aad: bytes, data: bytes) -> bytes:
    """AEAD without compression, for objects sealed with the index key."""
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def decrypt(key: bytes, aad: bytes, data: bytes) -> bytes:
    return AESGCM(key).decrypt(data[:NONCE], data[NONCE:], aad)


__all__ = [
    "InvalidTag",
    "TooLarge",
    "blob_id",
    "decrypt",
    "encrypt",
    "inflate",
    "open_sealed",
    "seal",
]
