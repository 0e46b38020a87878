"""`producer budget export` on a big ledger: wall time and the peak memory of the exporting
process, at two ledger sizes, so streaming (memory flat as the ledger grows) shows in figures.

Writes N cost entries into SQLite in a temp dir, then runs `producer budget export --format F
--output FILE` as its own process (as a user would) and reads its peak RSS from the OS.

    python bench/ledger_export.py                          # 10,000 and 200,000 entries, CSV
    python bench/ledger_export.py --entries 50000 --format jsonl
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def populate(database_url: str, entries: int) -> None:
    from sqlalchemy import insert

    from shared.db import migrate, session_scope
    from shared.models import CostEntry

    migrate(database_url)
    with session_scope(database_url) as session:
        for start in range(0, entries, 10_000):
            session.execute(insert(CostEntry), [
                {"run_id": f"run-{n // 4000}", "job_id": n, "agent": "qa", "backend": "mistral-ft",
                 "model": "ft:open-mistral-7b:genesis:qa-v3", "operation": "inference", "input_tokens": 120,
                 "output_tokens": 60, "cost_usd": 0.000144, "source": "api"}
                for n in range(start + 1, min(start + 10_000, entries) + 1)])


def export(database_url: str, output: Path, fmt: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `producer budget export` process."""
    env = {**os.environ, "GENESIS_DATABASE_URL": database_url, "GENESIS_CONFIG": str(ROOT / "config" / "genesis.toml")}
    producer = Path(sys.executable).parent / "producer"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([str(producer), "budget", "export", "--format", fmt, "--output", str(output)], env=env,
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"export failed: {done.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("  (peak RSS not above an earlier child's: this figure is that earlier peak)")
    return seconds, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for entries in sorted(args.entries):  # smallest first: RUSAGE_CHILDREN keeps the largest peak so far
            database_url = f"sqlite:///{folder}/ledger-{entries}.db"
            populate(database_url, entries)
            output = Path(folder) / f"ledger-{entries}.{args.format}"
            seconds, peak_mb = export(database_url, output, args.format)
            lines = sum(1 for _ in output.open(encoding="utf-8"))
            print(f"{entries:>8,} entries: {seconds:6.2f} s wall, {entries / seconds:8,.0f} rows/s, "
                  f"peak RSS {peak_mb:5.1f} MB, {output.stat().st_size / 1e6:6.1f} MB written, {lines:,} lines")


if __name__ == "__main__":
    main()
