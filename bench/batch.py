"""Realtime against batch mode on the demo suite, and batch mode under faults.

    python bench/batch.py [--limit N] [--batch-delay S] [--skip-faults]

Part 1, the same run twice against the simulator in this process (seed 7): every agent of
`genesis-custom` (first N tasks each, default all 20) on the four configured backends, once
realtime, once with every backend in batch mode (`[batch] max_wait_s` 2 s, polls from 1 s,
backing off to 5 s; the simulator answers a batch's requests over --batch-delay seconds,
default 5). 2 workers x 8 threads, Redis db GENESIS_BENCH_REDIS_URL (flushed), SQLite in a temp
dir. Printed per mode: ledgered cost, calls (HTTP requests to the simulator: chat calls, or
batch uploads, creates, polls and result downloads), requests answered, time from submit to
the report, and whether the answers are the same.

Part 2, the fault table: batch mode, 40 jobs, batches submitted, then one fault: none, worker
SIGKILL, Redis FLUSHDB, the workers SIGKILLed mid-submission (every batch created at its
provider, its id not yet answered: the creations are held back 4 s), half the batches expiring
or failing outright ([batch] max_attempts 3), 30% failed requests, a tight budget (batches wait
for room, or the run halts). Per fault: jobs ok, jobs paid twice
(more than one inference ledger row), and ledger = served (ledger rows == answers the
simulator billed through its batch API)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from tests.support.env import FAST_RECOVERY, genesis_env  # noqa: E402
from tests.support.redis_server import ensure_redis  # noqa: E402
from tests.support.runs import all_batched, paid_twice_jobs, run_jobs, submit, wait_until_reported  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402
from bench.parts import open_limits, prepare_this_process  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402

BACKENDS = ("mistral-ft", "mistral-base", "openai", "anthropic")
OPEN_LIMITS = open_limits(64)
BATCH_KNOBS = {"GENESIS_BATCH__MAX_WAIT_S": "2", "GENESIS_BATCH__POLL_MIN_S": "1", "GENESIS_BATCH__POLL_MAX_S": "5"}
ALL_BATCH = {f"GENESIS_BACKENDS__{b.upper()}__MODE": "batch" for b in BACKENDS}


class Env:
    """One fresh environment (SQLite file, flushed Redis db, simulator counters) per run."""

    def __init__(self, tmp: Path, redis_url: str, simulator) -> None:
        self.tmp, self.redis_url, self.simulator, self.n = tmp, redis_url, simulator, 0

    def start(self, extra: dict[str, str], workers: int = 2) -> tuple[dict, list[WorkerProcess]]:
        self.n += 1
        redis.Redis.from_url(self.redis_url).flushdb()
        self.simulator.reset()
        stale = ("GENESIS_BACKENDS__", "GENESIS_BATCH__", "GENESIS_BUDGET__")  # the previous run's knobs
        for key in [k for k in os.environ if k.startswith(stale)]:
            del os.environ[key]
        env = genesis_env(database_url=f"sqlite:///{self.tmp / f'run{self.n}.db'}", redis_url=self.redis_url,
                          reports_dir=self.tmp / "reports", simulator_url=self.simulator.url,
                          extra={**OPEN_LIMITS, **FAST_RECOVERY, **extra})
        prepare_this_process(env)
        self.env = env
        return env, self.start_more(workers=workers)

    def start_more(self, workers: int = 2, first: int = 1) -> list[WorkerProcess]:
        """Workers on the current environment (after start(); `first` numbers them on)."""
        from worker.app import app

        started = [WorkerProcess(self.env, name=f"b{self.n}w{i}", concurrency=8,
                                 log_path=self.tmp / f"b{self.n}w{i}.log") for i in range(first, first + workers)]
        for worker in started:
            worker.wait_ready(app)
        return started


@contextmanager
def simulated_env(redis_url: str, *, latency_ms: float, name: str) -> Iterator[Env]:
    """The simulator in this process (seed 7), a temp dir and the Redis db, for a bench's runs;
    the simulator stopped and the db flushed afterwards."""
    from simulator.config import SimulatorConfig
    from simulator.server import start_simulator

    ensure_redis(redis_url)
    simulator = start_simulator(SimulatorConfig(latency_ms=latency_ms))
    try:
        with tempfile.TemporaryDirectory(prefix=f"genesis-bench-{name}-") as tmp:
            yield Env(Path(tmp), redis_url, simulator)
    finally:
        simulator.stop()
        redis.Redis.from_url(redis_url).flushdb()


def ledger(run_id: str | None = None) -> tuple[float, Counter]:
    """Total ledgered cost and inference rows per job (of one run, or of all)."""
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import CostEntry

    with session_scope() as session:
        query = select(CostEntry.job_id, CostEntry.cost_usd, CostEntry.operation)
        if run_id:
            query = query.where(CostEntry.run_id == run_id)
        rows = session.exec(query).all()
    return sum(cost for _, cost, _ in rows), Counter(job for job, _, op in rows if op == "inference")


def outputs(run_id: str) -> dict:
    return {(j.agent, j.task_id, j.backend): (j.output, j.score) for j in run_jobs(run_id)}


def comparison(env_: Env, limit: int | None, delay_s: float) -> list[dict]:
    rows, answers = [], {}
    # Greedy answers throughout, so both modes must answer alike: the Anthropic adapter sends no
    # temperature, and the simulator samples at Anthropic's default (1.0) otherwise.
    env_.simulator.update(batch_delay_s=delay_s, batch_error_rate=0.0, batch_expire_rate=0.0, sampling="never")
    for mode, extra in (("realtime", {}), ("batch", {**ALL_BATCH, **BATCH_KNOBS})):
        _, workers = env_.start(extra)
        try:
            args = ["--all-agents", *(("--limit", str(limit)) if limit else ())]
            started = time.monotonic()
            run_id = submit(*args)
            snap = wait_until_reported(run_id, timeout=900)
            elapsed = time.monotonic() - started
            cost, _ = ledger(run_id)
            stats = env_.simulator.stats()
            answers[mode] = outputs(run_id)
            rows.append({"mode": mode, "jobs": sum(snap["by_status"].values()), "ok": snap["by_status"]["ok"],
                         "cost": cost, "calls": stats["requests_total"] + stats["batch"]["http_requests"],
                         "answered": stats["completions_ok"] + stats["batch"]["succeeded"],
                         "batches": sum(stats["batch"]["batches"].values()), "seconds": elapsed})
        finally:
            for worker in workers:
                worker.stop(timeout=60)
    rows[1]["same_answers"] = answers["batch"] == answers["realtime"]
    return rows


FAULTS = ("none", "worker SIGKILL", "Redis FLUSHDB", "SIGKILL mid-submit", "create reply lost (reset)",
          "create reply lost (502)", "half the batches expire", "half the batches fail", "30% failed requests",
          "10% corrupt result lines", "tight budget")


def fault_row(env_: Env, fault: str) -> dict:
    extra = {**ALL_BATCH, **BATCH_KNOBS, "GENESIS_BATCH__POLL_MAX_S": "1"}
    knobs = {"batch_delay_s": 3.0, "batch_error_rate": 0.0, "batch_expire_rate": 0.0, "batch_fail_rate": 0.0,
             "batch_create_delay_s": 0.0, "batch_create_lost_rate": 0.0, "batch_corrupt_rate": 0.0}
    if fault in ("half the batches expire", "half the batches fail"):
        extra["GENESIS_BATCH__MAX_ATTEMPTS"] = "3"
        knobs["batch_expire_rate" if fault.endswith("expire") else "batch_fail_rate"] = 0.5
    if fault == "SIGKILL mid-submit":
        knobs["batch_create_delay_s"] = 4.0
    if fault.startswith("create reply lost"):  # every batch exists at the provider; its creator never hears
        knobs.update(batch_create_lost_rate=1.0, batch_create_lost_as=fault.split()[-1].strip("()"))
    if fault == "10% corrupt result lines":
        knobs["batch_corrupt_rate"] = 0.1
    if fault == "30% failed requests":
        knobs["batch_error_rate"] = 0.3
    if fault == "tight budget":
        extra["GENESIS_BUDGET__LIMIT_USD"] = "0.0006"  # room for some batches' worst case, not all at once
    env_.simulator.update(**knobs)
    _, workers = env_.start(extra)
    try:
        run_id = submit("--all-agents", "--limit", "2")
        if fault in ("worker SIGKILL", "Redis FLUSHDB"):
            wait_for(lambda: all_batched(run_id, 40), timeout=60, interval=0.2, what="every batch submitted")
            if fault == "worker SIGKILL":
                workers[0].kill()
            else:
                redis.Redis.from_url(env_.redis_url).flushdb()
        if fault == "SIGKILL mid-submit":  # every submitter dies before learning its batch's id
            def created_unanswered() -> bool:
                rows = all_batched(run_id, 40, "submitting")
                return bool(rows) and sum(env_.simulator.stats()["batch"]["batches"].values()) == len(rows)

            wait_for(created_unanswered, timeout=60, interval=0.1, what="every batch created, none answered")
            for worker in workers:
                worker.kill()
            workers.extend(env_.start_more(first=3))
        snap = wait_until_reported(run_id, timeout=300)
        _, per_job = ledger(run_id)
        stats = env_.simulator.stats()["batch"]
        other = dict(Counter(f"{j.status} {j.error_type}" for j in run_jobs(run_id) if j.status != "ok"))
        return {"fault": fault, "status": snap["status"], "ok": snap["by_status"]["ok"],
                "jobs": sum(snap["by_status"].values()), "paid_twice": len(paid_twice_jobs(run_id)),
                "ledger": sum(per_job.values()), "served": stats["succeeded"],
                "batches": sum(stats["batches"].values()), "other": other}
    finally:
        for worker in workers:
            worker.stop(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N tasks per agent (default: all 20)")
    parser.add_argument("--batch-delay", type=float, default=5.0, help="the simulator's batch completion delay, s")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--skip-comparison", action="store_true", help="only the fault table")
    parser.add_argument("--faults", type=lambda text: [f.strip() for f in text.split(",")], default=FAULTS,
                        help=f"the fault rows, comma-separated (default: all: {', '.join(FAULTS)})")
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    opts = parser.parse_args()

    with simulated_env(opts.redis_url, latency_ms=200, name="batch") as env_:
        rows = [] if opts.skip_comparison else comparison(env_, opts.limit, opts.batch_delay)
        faults = [] if opts.skip_faults else [fault_row(env_, f) for f in opts.faults]

    if rows:
        print(f"\ngenesis-custom, all agents, {opts.limit or 20} tasks each, 4 backends; simulator latency 200 ms, "
              f"batch delay {opts.batch_delay:g} s; 2 workers x 8 threads")
        print(f"{'mode':>9} {'jobs':>5} {'ok':>5} {'ledger USD':>11} {'calls':>6} {'answered':>9} {'batches':>8} "
              f"{'to report s':>12}")
        for r in rows:
            print(f"{r['mode']:>9} {r['jobs']:>5} {r['ok']:>5} {r['cost']:>11.6f} {r['calls']:>6} {r['answered']:>9} "
                  f"{r['batches']:>8} {r['seconds']:>12.1f}")
        print(f"batch / realtime cost: {rows[1]['cost'] / rows[0]['cost']:.3f}; "
              f"same answers: {rows[1]['same_answers']}")
        print("calls = HTTP requests the simulator served (chat calls; batch: uploads, creates, polls, result reads)")
    if faults:
        print("\nbatch mode under faults (40 jobs, all 4 backends in batch mode)")
        print(f"{'fault':>26} {'status':>10} {'jobs ok':>8} {'paid twice':>10} {'ledger':>7} {'served':>7} "
              f"{'ledger = served':>15} {'batches':>8}  other")
        for r in faults:
            print(f"{r['fault']:>26} {r['status']:>10} {r['ok']:>5}/{r['jobs']:<2} {r['paid_twice']:>10} "
                  f"{r['ledger']:>7} {r['served']:>7} {str(r['ledger'] == r['served']):>15} {r['batches']:>8}  "
                  f"{r['other'] or ''}")
    broken = [r["fault"] for r in faults if r["paid_twice"] or r["ledger"] != r["served"]]
    if broken or (rows and not rows[1]["same_answers"]):
        print(f"INVARIANT BROKEN: {', '.join(broken) or 'answers differ'}")
        sys.exit(1)


if __name__ == "__main__":
    main()
