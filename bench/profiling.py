"""Where a worker's CPU goes: py-spy samples of a running `celery worker`, bucketed by part.

Used by `bench/throughput.py --profile` (py-spy: `pip install -e '.[bench]'`). py-spy attaches to the
worker's pid (no change to how the worker is started), samples only the thread holding the GIL
(so threads waiting on a socket, a lock or the GIL are not counted: the samples approximate the
Python CPU; C code that releases the GIL, such as SQLite's own work, is under-counted), and
writes collapsed stacks: one line per distinct stack, `frame;frame;...;frame count`. Each sample is charged to one part by the first rule that matches,
so the shares add up to 100%.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (part, substrings of a frame). Checked in this order against every frame of a sample; the
# first part with a matching frame gets the sample. Our own modules come first, so e.g. the
# Redis client called by the budget guard counts as "budget", and SQLAlchemy called by
# shared/lifecycle/ as "SQL (job state)".
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("logging/__init__.py", "celery/utils/log.py")),
    ("report (completion step)", ("shared/report/", "shared/runs.py", "shared/stats.py")),
    ("budget (Redis scripts)", ("shared/budget/",)),
    ("limiter (Redis scripts)", ("shared/limiter.py",)),
    ("SDK call (providers)", ("shared/providers/adapters.py", "shared/providers/clients.py",
                              "shared/providers/mistral_models.py")),
    ("call deadline (thread hand-off)", ("concurrent/futures/_base.py", "shared/providers/deadline.py")),
    ("SQL (job state)", ("shared/lifecycle/",)),
    ("reuse and judge checks", ("worker/reuse.py", "shared/reuse.py", "worker/judge.py", "shared/calls.py")),
    ("completion check (SQL)", ("worker/completion.py",)),
    ("recovery (heartbeat, sweep, journal)", ("worker/recovery.py", "shared/fleet.py", "shared/journal.py")),
    ("scoring", ("shared/scoring/",)),
    ("suite loading", ("shared/suite.py",)),
    ("settings/pricing", ("shared/config/", "shared/tokens.py")),
    ("SQL (other)", ("sqlalchemy/", "sqlmodel/", "sqlite3/")),
    ("SDK (other)", ("openai/", "anthropic/", "mistralai/", "httpx/", "httpx2/", "httpcore/", "pydantic")),
    ("Celery result backend", ("celery/backends/",)),
    ("Celery events", ("celery/events/", "worker/consumer/events.py", "celery/worker/state.py")),
    ("Celery/kombu (dispatch)", ("celery/", "kombu/", "billiard/", "vine/", "redis/")),
]
OTHER = "other"


def available() -> bool:
    return shutil.which("py-spy") is not None or (Path(sys.executable).parent / "py-spy").exists()


class Recorder:
    """`py-spy record --pid PID` in the background until stop()."""

    def __init__(self, pid: int, output: Path, rate: int = 250) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.output = output
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--gil", "--nonblocking",
             "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> Counter:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        return breakdown(self.output.read_text() if self.output.exists() else "")


def part_of(stack: str) -> str:
    frames = stack.split(";")
    for part, needles in PARTS:
        if any(needle in frame for frame in frames for needle in needles):
            return part
    return OTHER


def breakdown(collapsed: str) -> Counter:
    """Samples per part from py-spy's collapsed output."""
    samples: Counter = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[part_of(stack)] += int(count)
    return samples


def table(samples: Counter, cpu_ms_per_job: float) -> list[str]:
    """One line per part: share of the samples and the ms of CPU per job it stands for."""
    total = sum(samples.values())
    if not total:
        return ["    profile: no samples (py-spy could not attach?)"]
    lines = [f"    profile ({total} samples; share × {cpu_ms_per_job:.1f} ms/job):"]
    for part, n in samples.most_common():
        lines.append(f"      {part:<26} {100 * n / total:5.1f}%  {cpu_ms_per_job * n / total:5.2f} ms/job")
    return lines
