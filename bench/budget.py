"""The budget guard under concurrency: does spend stay under the emergency threshold however
many calls are in flight, how much of it is used when the guard halts, does any call slip out
after the halt, and how fast do the workers stop consuming the provider queues?

    python bench/budget.py [--redis-url redis://127.0.0.1:6379/12] [--calls-covered 30]

For each shape (workers × threads: 1×8, 3×8, 3×16) it starts everything itself — the simulator
in this process, real `celery worker` processes, SQLite in a temp dir, Redis db 12 (flushed) —
sets a budget whose emergency threshold covers ~N worst-case calls, submits a larger run through
the `producer` CLI, and prints:

- used at halt: the settled spend the halting reservation saw (named in the halt event's
  message), as % of the emergency threshold; the guard halts only when the settled ledger has
  no room left for that call's worst case, so it must be ≥ 100% − one worst-case call.
- used at end: the settled ledger once the calls in flight at the halt have settled, as %.
- overshoot: settled spend (sum of the CostEntry ledger) − emergency threshold; must be ≤ 0.
- calls without a grant: calls the simulator served − reservations the guard granted; must be 0.
  Every reserve script call is seen by Redis MONITOR (EVALSHA of the reserve script, db
  filtered); the refused ones are the jobs stored `halted` with the guard's "budget refused"
  message; the ones told to wait (room held by calls in flight) are counted by the script itself
  (`waits` in the state hash); granted = calls − refused − waits.
  (A grant released without a call, e.g. for a rate-limit wait, would make the figure negative:
  the limiter is opened wide here so that only the budget binds.)
- halt → stopped: from the halt BudgetEvent's `at`, and from the first refused reservation
  (its job's finished_at), until `inspect().active_queues()` lists no provider queue on any
  worker; the workers' logs split it into "broadcast sent" and "last worker cancelled".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlalchemy import func  # noqa: E402
from sqlmodel import select  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from shared.providers import PROVIDER_QUEUES  # noqa: E402
from tests.support.env import genesis_env  # noqa: E402
from tests.support.redis_server import ensure_redis  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402
from bench.parts import prepare_this_process  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402

SHAPES = [(1, 8), (3, 8), (3, 16)]
BACKENDS = ("mistral-base", "mistral-ft")  # 5 agents × 20 tasks × 2 = 200 jobs, all on `mistral`
STOP_MARK = "genesis-bench-budget-stop"
WIDE_OPEN_LIMITS = {  # the budget, not the rate limiter, must be what stops the run
    "GENESIS_LIMITS__MISTRAL__RPM": "1000000",
    "GENESIS_LIMITS__MISTRAL__TPM": "1000000000",
    "GENESIS_LIMITS__MISTRAL__MAX_IN_FLIGHT": "1000",
}


class ReserveCalls:
    """Counts calls of the budget's reserve script in one Redis db, through MONITOR."""

    def __init__(self, url: str, sha: str) -> None:
        self.url, self.prefix, self.calls = url, f"EVALSHA {sha} ", 0
        self.db = redis.Redis.from_url(url).connection_pool.connection_kwargs.get("db", 0)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _watch(self) -> None:
        with redis.Redis.from_url(self.url).monitor() as monitor:
            self.ready.set()
            for command in monitor.listen():
                if command["db"] != self.db:
                    continue
                if command["command"].startswith(self.prefix):
                    self.calls += 1
                elif STOP_MARK in command["command"]:
                    return

    def stop(self) -> int:
        redis.Redis.from_url(self.url).echo(STOP_MARK)
        self.thread.join(10)
        return self.calls


def worst_cases(settings) -> tuple[float, float]:
    """(mean, largest) worst case of the run's jobs, as the workers reserve them."""
    from shared.budget import task_worst_case
    from shared.suite import load_suite

    suite = load_suite(settings.suite)
    costs = [
        task_worst_case(settings, t, backend, settings.model_for(backend, agent))
        for backend in BACKENDS for agent in settings.agents.names for t in suite.tasks_for(agent)
    ]
    return sum(costs) / len(costs), max(costs)


def point_process_at(env: dict[str, str]) -> None:
    """This process is the producer: same settings as the workers, fresh Celery connections."""
    prepare_this_process(env)


def consuming_providers(app, hostnames: list[str]) -> bool | None:
    """True if any worker still consumes a provider queue; None if not all of them answered."""
    replies = app.control.inspect(destination=hostnames, timeout=1.0).active_queues() or {}
    if set(replies) != set(hostnames):
        return None
    return any(q["name"] in PROVIDER_QUEUES for queues in replies.values() for q in queues)


def log_times(paths: list[Path], needle: str) -> list[datetime]:
    """When workers logged a line (Celery's `[YYYY-mm-dd HH:MM:SS,mmm: LEVEL/...]`, local time)."""
    times = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if needle in line and line.startswith("["):
                stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").astimezone(timezone.utc)
                times.append(stamp)
    return times


def ms_after(at: datetime, times: list[datetime]) -> float | None:
    return (max(times) - at).total_seconds() * 1000 if times else None


def run_shape(n_workers: int, threads: int, *, redis_url: str, simulator, calls_covered: int, tmp: Path) -> dict:
    from producer.cli import app as producer_app
    from shared.budget import BudgetDenied, BudgetGuard
    from shared.budget.lua import RESERVE
    from shared.config import get_settings, load_settings
    from shared.db import session_scope
    from shared.models import BudgetEvent, CostEntry, Job
    from shared.lifecycle import job_counts
    from worker.app import app

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    simulator.reset()
    db_url = f"sqlite:///{tmp / f'budget-{n_workers}x{threads}.db'}"
    base = genesis_env(database_url=db_url, redis_url=redis_url, reports_dir=tmp / "reports",
                       simulator_url=simulator.url, extra=WIDE_OPEN_LIMITS)
    point_process_at(base)
    settings = load_settings()
    mean_worst, max_worst = worst_cases(settings)
    limit_usd = round(calls_covered * mean_worst / settings.budget.emergency, 6)
    env = {**base, "GENESIS_BUDGET__LIMIT_USD": str(limit_usd)}
    point_process_at(env)
    cap_usd = BudgetGuard(client, get_settings()).status()["emergency_usd"]

    workers = [WorkerProcess(env, name=f"bench{i}-{n_workers}x{threads}", concurrency=threads,
                             log_path=tmp / f"bench{i}-{n_workers}x{threads}.log") for i in range(n_workers)]
    try:
        for worker in workers:
            worker.wait_ready(app)
        hostnames = [w.hostname for w in workers]
        sha = hashlib.sha1(RESERVE.encode()).hexdigest()
        client.script_load(RESERVE)  # no NOSCRIPT retry can be counted twice
        reserves = ReserveCalls(redis_url, sha)

        args = ["submit", *sum((["--agent", a] for a in settings.agents.names), []),
                *sum((["--backend", b] for b in BACKENDS), []), "--json"]
        submitted_at = time.monotonic()
        result = CliRunner().invoke(producer_app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        run_id = json.loads(result.stdout)["run_id"]

        peak = 0

        def halt_event():
            nonlocal peak
            spent, reserved = (int(v or 0) for v in client.hmget("genesis:budget:state", "spent", "reserved"))
            peak = max(peak, spent + reserved)
            with session_scope() as session:
                return session.exec(select(BudgetEvent).where(BudgetEvent.kind == "halt")).first()

        event = wait_for(halt_event, timeout=120, interval=0.01, what="the halt")
        halted_after_s = time.monotonic() - submitted_at
        wait_for(lambda: consuming_providers(app, hostnames) is False, timeout=30, interval=0.0,
                 what="workers to stop consuming provider queues")
        stopped_at = datetime.now(timezone.utc)

        def settled():
            counts = job_counts(run_id)
            if counts.get("running") or simulator.stats()["in_flight"]:
                return None
            return counts if counts.get("queued", 0) == client.llen("mistral") else None

        counts = wait_for(settled, timeout=60, interval=0.2, what="the halted run to settle")
        calls = reserves.stop()
        waits = int(client.hget("genesis:budget:state", "waits") or 0)
        used_at_halt = BudgetDenied.spent_in(event.message)
        with session_scope() as session:
            spent = session.exec(select(func.coalesce(func.sum(CostEntry.cost_usd), 0.0))).one()
            refused, refused_at = session.exec(select(func.count(), func.min(Job.finished_at)).where(
                Job.status == "halted", Job.error_message.like("budget refused%"))).one()
        served = simulator.stats()
        logs = [w.log_path for w in workers]
        refused_at = refused_at.replace(tzinfo=timezone.utc) if refused_at.tzinfo is None else refused_at
        broadcast_ms = ms_after(refused_at, log_times(logs, "halting provider queues"))
        cancelled = log_times(logs, "Canceling queue mistral")
        cancelled_ms = ms_after(refused_at, cancelled) if len(cancelled) == len(workers) else None
        granted = calls - refused - waits
        return {
            "shape": f"{n_workers}x{threads}", "in_flight": n_workers * threads, "jobs": sum(counts.values()),
            "limit_usd": limit_usd, "cap_usd": cap_usd, "worst_call_usd": mean_worst, "max_worst_usd": max_worst,
            "spent_at_halt_usd": used_at_halt, "used_at_halt_pct": 100 * used_at_halt / cap_usd,
            "used_at_end_pct": 100 * spent / cap_usd, "floor_pct": 100 * (cap_usd - max_worst) / cap_usd,
            "waits": waits,
            "ok": counts.get("ok", 0), "halted": counts.get("halted", 0), "queued": counts.get("queued", 0),
            "error": counts.get("error", 0), "spent_usd": spent, "overshoot_usd": spent - cap_usd,
            "peak_committed_usd": peak / 1e6, "reserve_calls": calls, "refused": refused,
            "granted": granted, "served": served["requests_total"],
            "served_minus_granted": served["requests_total"] - granted,
            "halt_after_s": halted_after_s, "stop_ms": (stopped_at - event.at).total_seconds() * 1000,
            "refusal_stop_ms": (stopped_at - refused_at).total_seconds() * 1000, "broadcast_ms": broadcast_ms,
            "cancelled_ms": cancelled_ms,
        }
    finally:
        for worker in workers:
            worker.stop()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--calls-covered", type=int, default=30, help="worst-case calls the budget covers")
    parser.add_argument("--latency-ms", type=float, default=150.0)
    opts = parser.parse_args()

    from simulator.config import SimulatorConfig
    from simulator.server import start_simulator

    ensure_redis(opts.redis_url)
    simulator = start_simulator(SimulatorConfig(latency_ms=opts.latency_ms, latency_jitter_ms=opts.latency_ms / 3))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="genesis-bench-budget-") as tmp:
            for n_workers, threads in SHAPES:
                row = run_shape(n_workers, threads, redis_url=opts.redis_url, simulator=simulator,
                                calls_covered=opts.calls_covered, tmp=Path(tmp))
                rows.append(row)
                print(f"  {row['shape']}: ok {row['ok']}, halted {row['halted']}, queued {row['queued']}, "
                      f"error {row['error']} of {row['jobs']}", flush=True)
    finally:
        simulator.stop()
        redis.Redis.from_url(opts.redis_url).flushdb()

    first = rows[0]
    print(f"\nbudget guard: {first['jobs']} jobs ({' + '.join(BACKENDS)}), simulator latency "
          f"{opts.latency_ms:.0f}±{opts.latency_ms / 3:.0f} ms; budget ${first['limit_usd']:.6f}, emergency "
          f"threshold ${first['cap_usd']:.6f} = {opts.calls_covered} worst-case calls "
          f"of ${first['worst_call_usd']:.6f}")
    header = (f"{'shape':>6} {'in flight':>9} {'ok':>4} {'halted':>6} {'queued':>6} {'spent $':>10} "
              f"{'used at halt %':>14} {'used at end %':>13} "
              f"{'overshoot $':>12} {'peak spent+reserved $':>21} {'reserves':>8} {'waits':>5} {'refused':>7} {'granted':>7} "
              f"{'served':>6} {'served-granted':>14} {'halt at s':>9} {'event->stopped ms':>17} "
              f"{'refusal->stopped ms':>19} {'(broadcast':>10} {'cancelled)':>10}")
    print(header)
    for r in rows:
        print(f"{r['shape']:>6} {r['in_flight']:>9} {r['ok']:>4} {r['halted']:>6} {r['queued']:>6} "
              f"{r['spent_usd']:>10.6f} {r['used_at_halt_pct']:>14.1f} {r['used_at_end_pct']:>13.1f} "
              f"{r['overshoot_usd']:>12.6f} {r['peak_committed_usd']:>21.6f} "
              f"{r['reserve_calls']:>8} {r['waits']:>5} {r['refused']:>7} {r['granted']:>7} {r['served']:>6} "
              f"{r['served_minus_granted']:>14} {r['halt_after_s']:>9.2f} {r['stop_ms']:>17.0f} "
              f"{r['refusal_stop_ms']:>19.0f} "
              f"{_ms(r['broadcast_ms']):>10} {_ms(r['cancelled_ms']):>10}")
    print(f"\nused at halt = settled spend the halting reservation saw, % of the threshold (must be ≥ "
          f"{first['floor_pct']:.1f}% = threshold − the largest worst-case call, ${first['max_worst_usd']:.6f}); "
          "used at end = the settled ledger once the calls in flight at the halt settled, % of the threshold. "
          "overshoot = settled ledger − emergency threshold (must be ≤ 0). served−granted = calls the "
          "simulator answered − reservations granted (reserve script calls seen by Redis MONITOR − jobs "
          "refused by the guard − reservations told to wait); must be 0: no call without a grant, none after "
          "the halt. "
          "peak spent+reserved is sampled every ~10 ms until the halt (never above the threshold). "
          "event->stopped = halt BudgetEvent.at until inspect().active_queues() lists no provider queue on any "
          "worker; refusal->stopped = the same from the first refused reservation (the earliest finished_at of a "
          "job the guard refused, stamped right after the refusal, before the run and the event are written); "
          "from the workers' logs, in ms after that refusal: (broadcast) the halting worker sends "
          "cancel_consumer, (cancelled) the last worker logs 'Canceling queue mistral'.")
    bad = [r["shape"] for r in rows if r["overshoot_usd"] > 1e-9 or r["served_minus_granted"] != 0
           or r["used_at_halt_pct"] < r["floor_pct"]]
    if bad:
        print(f"INVARIANT BROKEN in {', '.join(bad)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
