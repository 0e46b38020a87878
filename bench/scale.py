"""Scaling benchmark: the same latency-bound run with 1, 2 and 4 worker processes at the same
total concurrency, and the memory of each worker process; optionally the PostgreSQL
connections each worker holds with 4 workers x 16 threads.

    python bench/scale.py [--jobs-per-agent 20] [--latency-ms 500] [--total-concurrency 32]
                          [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test_i12]

Each layout: the workers start, a warm-up run (SDK imports, one client per thread) is done,
then the measured run: 5 agents x 4 backends x N tasks, each call `--latency-ms` at the
simulator, no rate limits. Ideal = jobs x latency / total concurrency. Memory: VmRSS and
VmHWM (peak) of each worker process from /proc after the run. Redis db: GENESIS_BENCH_REDIS_URL
(flushed; default db 11). SQLite in a temp dir, or the PostgreSQL database given (its tables
are dropped and recreated). The machine is shared: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.parts import SimulatorProcess, config_file, cpu_s, machine_cpu_s, prepare_this_process  # noqa: E402
from bench.throughput import Scenario, submit_and_wait  # noqa: E402
from tests.support.env import genesis_env  # noqa: E402
from tests.support.postgres import ConnectionSampler, reset_postgres  # noqa: E402
from tests.support.redis_server import ensure_redis  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402

BACKENDS = ["openai", "anthropic", "mistral-base", "mistral-ft"]


@dataclass
class Layout:
    workers: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.workers} x {self.concurrency}"


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def run_layout(layout: Layout, args, database_url: str | None) -> dict:
    import redis

    ensure_redis(args.redis_url)
    redis.Redis.from_url(args.redis_url).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix=f"genesis-scale-{layout.workers}x{layout.concurrency}-"))
    if database_url:
        reset_postgres(database_url)
    sim = SimulatorProcess(args.latency_ms, None)
    workers: list[WorkerProcess] = []
    try:
        env = genesis_env(database_url=database_url or f"sqlite:///{tmp / 'genesis.db'}", redis_url=args.redis_url,
                          reports_dir=tmp / "reports", simulator_url=sim.url,
                          extra={"GENESIS_CONFIG": str(config_file(tmp, {}))})
        app = prepare_this_process(env)
        workers = [WorkerProcess(env, name=f"scale{i}", concurrency=layout.concurrency, log_path=tmp / f"w{i}.log")
                   for i in range(layout.workers)]
        for worker in workers:
            worker.wait_ready(app, timeout=90)
        submit_and_wait(Scenario("warm", "warm-up", BACKENDS, layout.workers, layout.concurrency,
                                 args.latency_ms, limit=1))
        sim.reset()
        scenario = Scenario("scale", layout.label, BACKENDS, layout.workers, layout.concurrency, args.latency_ms,
                            limit=args.jobs_per_agent)
        cpu_before, machine_before = sum(cpu_s(w.proc.pid) for w in workers), machine_cpu_s()
        if database_url:
            with ConnectionSampler(database_url) as sampler:
                row = submit_and_wait(scenario)
            row["connections"] = (sampler.peak, sampler.peak_total)
        else:
            row = submit_and_wait(scenario)
        machine_after = machine_cpu_s()
        row["worker_cpu_s"] = sum(cpu_s(w.proc.pid) for w in workers) - cpu_before
        row["machine_busy"] = (machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
        row["memory"] = [memory_kb(w.proc.pid) for w in workers]
        row["too_many_clients"] = sum("too many clients" in (tmp / f"w{i}.log").read_text()
                                      for i in range(layout.workers))
        row["sim"] = sim.stats()
        return row
    finally:
        for worker in workers:
            worker.stop()
        sim.stop()
        redis.Redis.from_url(args.redis_url).flushdb()


def line(layout: Layout, row: dict, ideal: float, base_span: float | None) -> str:
    rss = ", ".join(f"{r // 1024}/{h // 1024}" for r, h in row["memory"])
    speed = f"{base_span / row['span_s']:.2f}x" if base_span else "1.00x"
    return (f"{layout.label:>7} | {row['jobs']:>4} | {row['by_status']['ok']:>4} | {row['wall_s']:7.2f} | "
            f"{row['span_s']:7.2f} | {row['span_s'] / ideal:5.2f}x | {speed:>6} | "
            f"{row['worker_cpu_s']:6.1f} | {100 * row['machine_busy']:4.0f}% | "
            f"{row['sim']['peak_in_flight']:>4} | {rss}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs-per-agent", type=int, default=20, help="tasks per agent (x 5 agents x 4 backends)")
    parser.add_argument("--latency-ms", type=float, default=500)
    parser.add_argument("--total-concurrency", type=int, default=32)
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--postgres-url", help="also run 4 workers x 16 threads on this PostgreSQL database "
                                               "and report the connections per worker (pg_stat_activity)")
    args = parser.parse_args()
    if args.total_concurrency % 4 or args.jobs_per_agent < 1 or args.latency_ms < 0:
        parser.error("--total-concurrency must be a multiple of 4; --jobs-per-agent >= 1; --latency-ms >= 0")

    jobs = 5 * len(BACKENDS) * args.jobs_per_agent
    ideal = jobs * args.latency_ms / 1000 / args.total_concurrency
    print(f"latency-bound: {jobs} jobs x {args.latency_ms:.0f} ms at {args.total_concurrency} in flight; "
          f"ideal {ideal:.2f} s; {os.cpu_count()} cores (shared with other work)")
    print("layout  | jobs |   ok | submit→report s | SQL span s | span/ideal | speed vs 1 | worker CPU s | "
          "machine busy | sim peak in flight | RSS/peak MB per worker")
    base_span = None
    for workers in (1, 2, 4):
        layout = Layout(workers, args.total_concurrency // workers)
        row = run_layout(layout, args, None)
        print(line(layout, row, ideal, base_span), flush=True)
        base_span = base_span or row["span_s"]

    if args.postgres_url:
        layout = Layout(4, 16)
        row = run_layout(layout, args, args.postgres_url)
        from shared.db import pool_size_for

        peaks, total = row["connections"]
        print(f"\nPostgreSQL, {layout.label} threads, {row['jobs']} jobs: ok {row['by_status']['ok']}, "
              f"'too many clients' in worker logs: {row['too_many_clients']}; pool per worker "
              f"{pool_size_for(16)} (ceil(16/4)+1)")
        for name, n in sorted(peaks.items()):
            print(f"  {name}: at most {n} connections")
        print(f"  all workers together: at most {total} connections")


if __name__ == "__main__":
    main()
