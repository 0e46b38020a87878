"""Freed memory goes back to the system in worker processes (glibc's malloc only).

At -c 32 a worker's threads read answers in 64 KiB socket reads (httpcore2's). glibc serves those from its
per-thread heaps, which fragment: freed room stays resident and is never handed back. A `-Q
anthropic` worker grew from 125 MB at start to 152-163 MB over 2,500 jobs (3 runs). With both
thresholds at 64 KiB such reads are mapped and unmapped whole, and free room at the top of a
heap is handed back: 139-140 MB (3 runs). The trim threshold alone gave 150 MB, both at 128 KiB
no gain. (Dask's workers set the same trim threshold for the same reason.) Settings a user
gives in the environment (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_, or either in
GLIBC_TUNABLES) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
THRESHOLD_BYTES = 64 * 1024
USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
USER_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")


def user_chose_thresholds() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in USER_VARIABLES) or any(name in tunables for name in USER_TUNABLES)


def return_freed_memory() -> bool:
    """Set both thresholds in this process (and the children it forks); False where there is
    nothing to set (no glibc mallopt) or the environment already chose."""
    if user_chose_thresholds():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt in this C library (macOS; Windows)
        return False
    # mallopt answers 1 when it took the value, 0 when not (a C library whose mallopt is a stub).
    results = {name: mallopt(param, THRESHOLD_BYTES) == 1
               for name, param in (("trim", M_TRIM_THRESHOLD), ("mmap", M_MMAP_THRESHOLD))}
    if not all(results.values()):
        log.info("malloc thresholds not all taken (%s): freed memory may stay with the process", results)
    return all(results.values())
