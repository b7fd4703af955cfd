"""Process memory tuning for scoring processes (the serving worker, `nextbest score`).

With glibc's defaults, the large arrays of a scoring batch (tens of MB for 256 requests of 100 events) are
mapped fresh and unmapped after, so every batch page-faults all of its memory in again. In one measurement
a batch of 256 requests page-faulted 10,000 times and spent 16 of its 57 ms in the kernel; kept in the
heap, the same batch took 41 ms without a fault, and `nextbest score` ran 14-16% more customers/s (peak
memory unchanged). One request's time did not change.

Only the processes nextbest starts call this: a library call must not change its caller's allocator.
"""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Allocations below this come from the heap and are reused; 32 MB is the largest glibc accepts (64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024
# The heap is given back to the kernel only when this much lies free at its top.
TRIM_THRESHOLD = 256 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Keeps memory freed by one batch in the process for the next (glibc only); False where it cannot.

    The price: the process keeps the memory of its largest batch, up to `TRIM_THRESHOLD` more.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows)
        return False
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trimmed = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mapped) and bool(trimmed)  # mallopt answers 1 when it took the setting
