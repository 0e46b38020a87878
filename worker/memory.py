"""Freed memory goes back to the system in worker processes (glibc's malloc only).

At -c 32 a worker's threads read answers in 64 KiB socket reads. glibc serves those from its
per-thread heaps, which fragment: freed room stays resident and is never handed back. A `-Q
anthropic` worker grew from 125 MB at start to 152-163 MB over 2,500 jobs (5 runs). With both
thresholds at 64 KiB such reads are mapped and unmapped whole, and free room at the top of a
heap is handed back: 139-140 MB (3 runs). The trim threshold alone gave 150 MB, both at 128 KiB
no gain. (Dask's workers set the same trim threshold for the same reason.) Settings a user
gives in the environment (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
THRESHOLD_BYTES = 64 * 1024
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def return_freed_memory() -> bool:
    """Set both thresholds in this process (and the children it forks); False where there is
    nothing to set (not glibc) or the environment already chose."""
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt in this C library (macOS)
        return False
    # mallopt answers 1 when set; musl's is a stub that answers 0.
    done = mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) == 1 and mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) == 1
    if not done:
        log.info("malloc thresholds not set (not glibc): freed memory stays with the process")
    return done
