"""Worker processes hand freed memory back to the system (glibc's malloc thresholds)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests.harness import ROOT

# 30 MB in 100 KB blocks (above the 64 KiB we set, below glibc's default 128 KiB mmap threshold),
# each followed by a small malloc'd block that stays: what fragments a worker thread's heap.
RETAINED_AFTER_FREE = """
import sys
from worker.memory import return_freed_memory

print(return_freed_memory() if sys.argv[1] == "set" else "unset")
def rss_kb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
before, blocks, pinned = rss_kb(), [], []
for _ in range(300):
    blocks.append(bytearray(100_000))
    pinned.append(bytearray(1_000))  # over pymalloc's 512 bytes: from malloc, between the blocks
del blocks
print(rss_kb() - before)
"""


def retained_kb(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", RETAINED_AFTER_FREE, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    answer, kb = done.stdout.split()
    return answer, int(kb)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_freed_blocks_leave_the_process_once_set() -> None:
    assert retained_kb("unset")[1] > 20_000  # glibc's defaults: the freed 30 MB stay resident
    answer, kb = retained_kb("set")
    assert answer == "True" and kb < 5_000


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_thresholds_a_user_set_in_the_environment_are_left_alone() -> None:
    import os

    answer, kb = retained_kb("set", env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "-1"})
    assert answer == "False" and kb > 20_000
