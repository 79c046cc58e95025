"""Blob ids, sealing (compress + AEAD) and opening.

A sealed blob is ``flag(1) || nonce(12) || AES-256-GCM(payload)``. ``flag`` says whether
``payload`` is zstd-compressed (it is stored raw when zstd does not shrink it). The
associated data is the blob id, its type and the flag, so a blob cannot be swapped for
another, relabelled, or have its flag flipped. The sealed bytes are built in one buffer.
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


SAMPLE = 64 * 1024


def compress(data: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """zstd when it shrinks the data, else the data itself.

    A chunk whose first 64 KiB do not shrink by 2% (photos, archives, encrypted files)
    is taken as incompressible without compressing the rest: that saves a pass and a
    buffer the size of the chunk for most media.
    """
    comp = _compressor()
    if len(data) > 2 * SAMPLE and len(comp.compress(data[:SAMPLE])) > SAMPLE * 0.98:
        return RAW, data
    packed = comp.compress(data)
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


def open_sealed(key: bytes, aad: bytes, sealed: bytes | memoryview) -> bytes:
    """Decrypt then decompress. Raises InvalidTag on any tampering."""
    view = memoryview(sealed)
    flag = view[0]
    plain = AESGCM(key).decrypt(bytes(view[1 : 1 + NONCE]), view[1 + NONCE :], aad + bytes([flag]))
    if flag == ZSTD:
        return _decompressor().decompress(plain)
    if flag != RAW:
        raise InvalidTag
    return plain


def encrypt(key: bytes, aad: bytes, data: bytes) -> bytes:
    """AEAD without compression, for objects sealed with the index key."""
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def decrypt(key: bytes, aad: bytes, data: bytes) -> bytes:
    return AESGCM(key).decrypt(data[:NONCE], data[NONCE:], aad)


__all__ = ["InvalidTag", "blob_id", "decrypt", "encrypt", "open_sealed", "seal"]
