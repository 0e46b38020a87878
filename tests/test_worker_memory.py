"""Worker processes hand freed memory back to the system (glibc's malloc thresholds)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import weakref

import pytest

from tests.support.env import ROOT
from worker.memory import USER_VARIABLES

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


def retained_kb(mode: str, **user_settings: str) -> tuple[str, int]:
    """(what return_freed_memory answered, kB still resident after the blocks were freed), in
    a fresh process with none of the thresholds in its environment but `user_settings`."""
    env = {k: v for k, v in os.environ.items() if k not in (*USER_VARIABLES, "GLIBC_TUNABLES")} | user_settings
    done = subprocess.run([sys.executable, "-c", RETAINED_AFTER_FREE, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    answer, kb = done.stdout.split()
    return answer, int(kb)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
@pytest.mark.processes
def test_freed_blocks_leave_the_process_once_set() -> None:
    assert retained_kb("unset")[1] > 20_000  # glibc's defaults: the freed 30 MB stay resident
    answer, kb = retained_kb("set")
    assert answer == "True" and kb < 5_000


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
@pytest.mark.parametrize("user_settings", [{"MALLOC_TRIM_THRESHOLD_": "-1"},
                                           {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=4294967295"}])
@pytest.mark.processes
def test_thresholds_a_user_set_in_the_environment_are_left_alone(user_settings: dict[str, str]) -> None:
    answer, kb = retained_kb("set", **user_settings)
    assert answer == "False" and kb > 20_000


def test_every_worker_sets_them_at_start() -> None:
    """Connected to worker_init, which both `worker` and `celery -A worker.app worker` send
    in the main process before the pool starts (so prefork children inherit them)."""
    from celery import signals

    import worker.app

    receivers = [ref() if isinstance(ref, weakref.ref) else ref for _, ref in signals.worker_init.receivers]
    assert worker.app._return_freed_memory in receivers
