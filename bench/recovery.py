"""Runs that finish by themselves: inject one fault mid-run, do nothing else, and measure.

    python bench/recovery.py [--fault sigkill|restart|postgres|flushdb|sigterm|all] [--fast]

Each fault runs the issue's shape: 2 workers × 8 threads, 200 jobs (5 agents × 20 tasks ×
mistral-base + mistral-ft) against the simulator in this process, Redis db
GENESIS_BENCH_REDIS_URL (flushed), SQLite in a temp dir, or for `postgres` the database of
GENESIS_TEST_POSTGRES_URL (its tables are dropped and recreated; only that database is made to
refuse connections). The fault is injected once 40 jobs are ok:

- sigkill: w1's whole process group gets SIGKILL (1 s calls);
- restart: the same, and w1 is started again at once under its own name (systemd, a container
  keeping its hostname): a new incarnation, so the old one's calls are seen dead (1 s calls);
- postgres: the database refuses and drops connections for 6 s (300 ms calls);
- flushdb: the Redis db loses everything (300 ms calls);
- sigterm: w1 gets SIGTERM (warm shutdown) and w2 finishes the rest (1 s calls).

Printed per fault: seconds from the fault until the run's report exists, jobs called more than
once (and how many were in flight on the faulted worker), ledger entries vs calls the simulator
served with 200, ledger entries without a job (of which outcome unknown). Default recovery
timings unless --fast (the tests' timings, tests.support.env.FAST_RECOVERY).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from tests.support.env import FAST_RECOVERY, genesis_env  # noqa: E402
from tests.support.postgres import postgres_outage, reset_postgres  # noqa: E402
from tests.support.redis_server import ensure_redis  # noqa: E402
from tests.support.runs import ledger_figures, producer, running_on, served_ok, wait_until_reported  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402
from bench.parts import open_limits, prepare_this_process  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402

FAULTS = {"sigkill": 1000, "restart": 1000, "postgres": 300, "flushdb": 300, "sigterm": 1000}  # simulator ms
OPEN_LIMITS = open_limits(1000, providers=("MISTRAL",))
FAULT_AFTER_OK = 40


def ok_jobs(run_id: str) -> int:
    from shared.progress import run_snapshot

    return run_snapshot(run_id)["by_status"]["ok"]


def run_fault(fault: str, *, redis_url: str, postgres_url: str, simulator, tmp: Path, fast: bool) -> dict:
    from worker.app import app

    redis.Redis.from_url(redis_url).flushdb()
    simulator.reset()
    simulator.update(latency_ms=FAULTS[fault])
    database_url = postgres_url if fault == "postgres" else f"sqlite:///{tmp / f'{fault}.db'}"
    if fault == "postgres":
        reset_postgres(database_url)
    env = genesis_env(database_url=database_url, redis_url=redis_url, reports_dir=tmp / "reports",
                      simulator_url=simulator.url, extra={**OPEN_LIMITS, **(FAST_RECOVERY if fast else {})})
    prepare_this_process(env)

    workers = [WorkerProcess(env, name=f"{fault}{i}", concurrency=8, log_path=tmp / f"{fault}{i}.log")
               for i in (1, 2)]
    try:
        for worker in workers:
            worker.wait_ready(app)
        result = producer("submit", "--all-agents", "--backend", "mistral-base", "--backend", "mistral-ft", "--json")
        assert result.exit_code == 0, result.output
        run_id = json.loads(result.stdout)["run_id"]
        started = time.monotonic()
        wait_for(lambda: ok_jobs(run_id) >= FAULT_AFTER_OK, timeout=120, what="the run under way")

        faulted = workers[0]
        in_flight = running_on(run_id, faulted.hostname)
        fault_at = time.monotonic()
        if fault in ("sigkill", "restart"):
            faulted.kill()
            in_flight |= running_on(run_id, faulted.hostname)
        if fault == "restart":  # the same -n, at once
            workers.append(WorkerProcess(env, name=faulted.name, concurrency=8, log_path=tmp / f"{fault}1b.log"))
            workers[-1].wait_ready(app)
        elif fault == "sigterm":
            faulted.stop(timeout=60)
        elif fault == "flushdb":
            redis.Redis.from_url(redis_url).flushdb()
        elif fault == "postgres":
            postgres_outage(database_url, 6.0)

        snap = wait_until_reported(run_id, timeout=600)
        done_at = time.monotonic()
        ledger = ledger_figures(run_id)
        return {
            "fault": fault, "status": snap["status"], "ok": snap["by_status"]["ok"], "jobs": ledger["jobs"],
            "run_s": done_at - started, "recover_s": done_at - fault_at, "in_flight": len(in_flight),
            "repeated": len(ledger["repeated"]), "repeated_in_flight": len(ledger["repeated"] & in_flight),
            "entries": ledger["entries"], "unattached": ledger["unattached"], "served": served_ok(simulator),
            "unknown": ledger["unknown"],
        }
    finally:
        for worker in workers:
            worker.stop(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=[*FAULTS, "all"], default="all")
    parser.add_argument("--fast", action="store_true", help="the tests' recovery timings (seconds)")
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--postgres-url", default=os.environ.get(
        "GENESIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    opts = parser.parse_args()

    from simulator.config import SimulatorConfig
    from simulator.server import start_simulator

    ensure_redis(opts.redis_url)
    simulator = start_simulator(SimulatorConfig(latency_ms=300))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="genesis-bench-recovery-") as tmp:
            for fault in FAULTS if opts.fault == "all" else [opts.fault]:
                rows.append(run_fault(fault, redis_url=opts.redis_url, postgres_url=opts.postgres_url,
                                      simulator=simulator, tmp=Path(tmp), fast=opts.fast))
                print(f"  {fault}: {rows[-1]['status']}, ok {rows[-1]['ok']} of {rows[-1]['jobs']}", flush=True)
    finally:
        simulator.stop()
        redis.Redis.from_url(opts.redis_url).flushdb()

    print(f"\nrecovery, 2 workers x 8 threads, 200 jobs, fault after {FAULT_AFTER_OK} ok, "
          f"{'fast (test)' if opts.fast else 'default'} recovery timings")
    print(f"{'fault':>9} {'status':>10} {'ok':>4} {'run s':>6} {'fault->report s':>15} {'in flight':>9} "
          f"{'repeated':>8} {'(of in flight)':>14} {'ledger':>6} {'served 200':>10} {'unattached':>10} {'unknown':>7}")
    for r in rows:
        print(f"{r['fault']:>9} {r['status']:>10} {r['ok']:>4} {r['run_s']:>6.1f} {r['recover_s']:>15.1f} "
              f"{r['in_flight']:>9} {r['repeated']:>8} {r['repeated_in_flight']:>14} {r['entries']:>6} "
              f"{r['served']:>10} {r['unattached']:>10} {r['unknown']:>7}")
    print("\nin flight = jobs SQL showed running on the faulted worker (w1) at the fault; repeated = jobs "
          "called more than once (attempts > 1); ledger = cost_entry rows of the run; served 200 = calls the "
          "simulator answered with 200 (billed).")
    # A worker killed mid-call takes answers the provider billed with it: at most its calls in flight.
    broken = [r["fault"] for r in rows if r["status"] != "completed" or r["repeated"] != r["repeated_in_flight"]
              or not 0 <= r["served"] - r["entries"] <= (r["in_flight"] if r["fault"] == "sigkill" else 0)]
    if broken:
        print(f"INVARIANT BROKEN in {', '.join(broken)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
