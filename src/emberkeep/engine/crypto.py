"""Blob ids, sealing (compress + AEAD) and opening.

A sealed blob is ``nonce(12) || AES-256-GCM(flag || payload)`` with the blob id and type
as associated data, so a blob cannot be swapped for another or relabelled. ``flag`` says
whether ``payload`` is zstd-compressed; it is stored raw when zstd does not shrink it.
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
OVERHEAD = NONCE + TAG + 1
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
    """zstd when it shrinks the data, else the data itself."""
    packed = _compressor().compress(data)
    if len(packed) < len(data):
        return ZSTD, packed
    return RAW, data


def seal(key: bytes, aad: bytes, data: bytes | memoryview) -> bytes:
    """Compress then encrypt. Returns nonce || ciphertext || tag."""
    flag, payload = compress(data)
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, bytes([flag]) + bytes(payload), aad)


def open_sealed(key: bytes, aad: bytes, sealed: bytes | memoryview) -> bytes:
    """Decrypt then decompress. Raises InvalidTag on any tampering."""
    sealed = bytes(sealed)
    plain = AESGCM(key).decrypt(sealed[:NONCE], sealed[NONCE:], aad)
    if plain[0] == ZSTD:
        return _decompressor().decompress(plain[1:])
    return plain[1:]


def encrypt(key: bytes, aad: bytes, data: bytes) -> bytes:
    """AEAD without compression, for objects sealed with the index key."""
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def decrypt(key: bytes, aad: bytes, data: bytes) -> bytes:
    return AESGCM(key).decrypt(data[:NONCE], data[NONCE:], aad)


__all__ = ["InvalidTag", "blob_id", "decrypt", "encrypt", "open_sealed", "seal"]
