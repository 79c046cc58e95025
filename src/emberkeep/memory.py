"""Keep the process's memory close to what it really holds.

glibc raises its mmap threshold each time a large buffer is freed, after which chunk-sized
buffers (1-8 MiB) come from arenas that are not returned to the system promptly. With a
few threads cycling through thousands of such buffers, peak RSS grows by tens of MiB of
freed memory. A fixed threshold keeps every large buffer in its own mapping, returned
the moment it is freed. Measured on the 1 GiB bench: peak RSS 147 -> 125 MiB, same speed.
Backup only: restore, whose threads fault in a fresh mapping for every blob, ran 25%
slower with it (2.9 -> 3.6 s restoring 1 GiB to tmpfs).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
THRESHOLD = 256 * 1024


def return_large_buffers_promptly() -> bool:
    """Set glibc's mmap threshold; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):
        return False
