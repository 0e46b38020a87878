"""Throughput benchmark: real `celery worker` processes, real Redis, real SDKs, the simulator.

    python bench/throughput.py [--scenario a|b|c|d|all] [--profile] [--redis-url redis://127.0.0.1:6379/11]

(a) rate-bound: 100 openai jobs, 3 workers × 8 threads, 60 RPM in our config and in the
    simulator. Floor: 60 at once, then 1/s → ~41 s; even pacing would take 100 s.
(b) latency-bound: 400 jobs × 500 ms at 32 in flight (2 workers × 16 threads), no limits.
    Ideal 400 × 0.5 / 32 = 6.25 s. Run twice on the same workers: cold (SDK imports, one
    client per thread and provider built on first use) and warm.
(c) our CPU per job: 400 jobs against a 0 ms simulator on 1 worker; the worker process's CPU
    (/proc/<pid>/stat) per job, minus the CPU of the same SDK calls made in a plain loop here.
(d) 10,000 jobs (generated suite): submit time, run completion, `producer status` latency
    during the run, the report's build time from SQL, worker peak RSS at -c 32 with every
    worker on every queue, then again with one worker per queue (bench/large_run.py).
(d-submit) only the submit of (d)'s 10,000 jobs, three times, no workers (bench/large_run.py).

--profile samples the workers with py-spy during the measured runs (a, b, c) and prints where
their CPU goes by part (bench/profiling.py).

Wall time is measured from submit to the report existing; first-start → last-finish comes from
SQL (Job.started_at / finished_at). Everything runs in a temp dir with SQLite; the Redis db
given is flushed (default db 11, which belongs to this benchmark).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import large_run, profiling  # noqa: E402
from bench.parts import SimulatorProcess, cpu_s, machine_cpu_s, redis_server_pid, running_system  # noqa: E402
from tests.support.workers import WorkerProcess  # noqa: E402


@dataclass
class Scenario:
    key: str
    title: str
    backends: list[str]
    workers: int
    concurrency: int
    latency_ms: float
    sim_rpm: int | None = None
    limits: dict[str, dict[str, int]] = field(default_factory=dict)  # written as [limits.<name>]
    limit: int | None = None  # tasks per agent
    runs: tuple[str, ...] = ("measured",)


SCENARIOS = {
    "a": Scenario("a", "rate-bound: 100 jobs, 60 RPM (config + simulator), 3 workers x 8",
                  backends=["openai"], workers=3, concurrency=8, latency_ms=200, sim_rpm=60,
                  limits={"openai": {"rpm": 60}}),
    "b": Scenario("b", "latency-bound: 400 jobs x 500 ms, 2 workers x 16, no limits",
                  backends=["openai", "anthropic", "mistral-base", "mistral-ft"], workers=2, concurrency=16,
                  latency_ms=500, runs=("cold", "warm")),
    "c": Scenario("c", "CPU per job: 400 jobs, 0 ms simulator, 1 worker x 4",
                  backends=["openai", "anthropic", "mistral-base", "mistral-ft"], workers=1, concurrency=4,
                  latency_ms=0, runs=("warm-up", "measured")),
}


# --- one run ------------------------------------------------------------------------------------


def submit_and_wait(sc: Scenario, timeout: float = 300) -> dict:
    """Submit like `producer submit`, then wait for every job to be final and for the report."""
    from producer import submit as submitting
    from shared.progress import run_snapshot
    from shared.config import get_settings

    settings = get_settings()
    started = time.perf_counter()
    selection = submitting.select_work(settings, agents=[], all_agents=True, backends=sc.backends,
                                       suite=None, limit=sc.limit)
    run_id, jobs = submitting.record_run(settings, selection)
    submitting.enqueue(run_id, jobs)
    final_at = None
    deadline = started + timeout
    while time.perf_counter() < deadline:
        snap = run_snapshot(run_id)
        if final_at is None and not snap["active"]:
            final_at = time.perf_counter()
        if snap["report"] and not snap["active"]:
            break
        time.sleep(0.05)
    else:
        raise TimeoutError(f"run {run_id} not reported within {timeout} s")
    return {"run_id": run_id, "jobs": len(jobs), "by_status": snap["by_status"],
            "wall_s": time.perf_counter() - started, "final_s": final_at - started, **sql_span(run_id)}


def sql_span(run_id: str) -> dict:
    from sqlalchemy import func
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        first, last, attempts = session.exec(
            select(func.min(Job.started_at), func.max(Job.finished_at), func.sum(Job.attempts))
            .where(Job.run_id == run_id)
        ).one()
    return {"span_s": (last - first).total_seconds(), "attempts": attempts}


def sdk_only_cpu_ms(run_id: str) -> float:
    """CPU per call of the same SDK calls, made one after another in this process."""
    from sqlmodel import select

    from shared.budget import max_output_tokens
    from shared.config import get_settings
    from shared.db import session_scope
    from shared.models import Job, Run
    from shared.providers import ChatRequest, complete
    from shared.suite import load_suite

    settings = get_settings()
    with session_scope() as session:
        suite = load_suite(session.get(Run, run_id).suite)
        jobs = session.exec(select(Job).where(Job.run_id == run_id)).all()
    requests = []
    for job in jobs:
        task = suite.get(job.agent, job.task_id)
        requests.append((job.provider, ChatRequest(
            model=job.model, prompt=task.prompt, system=task.system,
            max_tokens=max_output_tokens(settings, job.backend, task.max_tokens), timeout_s=settings.retry.call_timeout_s,
        )))
    for provider in {p for p, _ in requests}:  # imports and clients first, as the warm worker has them
        complete(provider, next(r for p, r in requests if p == provider))
    before = time.process_time()
    for provider, request in requests:
        complete(provider, request)
    return (time.process_time() - before) / len(requests) * 1000


# --- a scenario -----------------------------------------------------------------------------------


def run_scenario(sc: Scenario, redis_url: str, *, profile: bool = False) -> list[dict]:
    rows = []
    with running_system(sc.key, redis_url, latency_ms=sc.latency_ms, sim_rpm=sc.sim_rpm, limits=sc.limits,
                        workers=sc.workers, concurrency=sc.concurrency) as system:
        tmp, sim, workers = system.tmp, system.sim, system.workers
        for label in sc.runs:
            sim.reset()
            if sc.key == "c" and label == "warm-up":
                submit_and_wait(Scenario(**{**sc.__dict__, "limit": 2}))
                continue
            cpu_before, idle_rate = worker_cpu(workers)
            ours_before, machine_before = ours_cpu_s(workers, sim), machine_cpu_s()
            recorders = [profiling.Recorder(w.proc.pid, tmp / f"profile-{label}-{i}.txt")
                         for i, w in enumerate(workers)] if profile else []
            row = submit_and_wait(sc)
            if recorders:
                row["profile"] = sum((r.stop() for r in recorders), Counter())
            ours_after, machine_after = ours_cpu_s(workers, sim), machine_cpu_s()
            row.update(label=label, sim=sim.stats(), machine_busy_s=machine_after[0] - machine_before[0],
                       machine_total_s=machine_after[1] - machine_before[1],
                       ours={k: ours_after[k] - ours_before[k] for k in ours_after})
            if sc.key == "c":
                row["worker_cpu_s"] = worker_cpu(workers, measure_idle=False)[0] - cpu_before
                row["idle_cpu_s"] = idle_rate * row["wall_s"]
                row["sdk_cpu_ms"] = sdk_only_cpu_ms(row["run_id"])
            rows.append(row)
    return rows


def ours_cpu_s(workers: list[WorkerProcess], sim: SimulatorProcess) -> dict[str, float]:
    """CPU seconds so far of each part of the system under test."""
    parts = {"workers": sum(cpu_s(w.proc.pid) for w in workers), "simulator": cpu_s(sim.proc.pid),
             "producer": time.process_time()}
    if (pid := redis_server_pid()) is not None:
        parts["redis"] = cpu_s(pid)
    return parts


def worker_cpu(workers: list[WorkerProcess], *, measure_idle: bool = True) -> tuple[float, float]:
    """Total CPU seconds of the workers now, and (optionally) their idle CPU per second."""
    first = sum(cpu_s(w.proc.pid) for w in workers)
    if not measure_idle:
        return first, 0.0
    time.sleep(2.0)
    second = sum(cpu_s(w.proc.pid) for w in workers)
    return second, (second - first) / 2.0


# --- output ---------------------------------------------------------------------------------------


def report(sc: Scenario, rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        sim = row["sim"]
        n429 = int(sim["by_status"].get("429", 0))
        head = (f"({sc.key}) {row['label']:<8} jobs {row['jobs']}  ok {row['by_status']['ok']}  "
                f"submit→report {row['wall_s']:.2f} s  submit→all final {row['final_s']:.2f} s  "
                f"first start→last finish (SQL) {row['span_s']:.2f} s  calls {sim['requests_total']}")
        lines.append(head)
        ours = row["ours"]
        others = row["machine_busy_s"] - sum(ours.values())
        lines.append(f"    CPU during the run: machine busy {row['machine_busy_s']:.1f} of {row['machine_total_s']:.1f} core-s "
                     f"({100 * row['machine_busy_s'] / row['machine_total_s']:.0f}%); "
                     + ", ".join(f"{k} {v:.1f}" for k, v in ours.items()) + f", other processes {others:.1f}")
        if sc.key == "a":
            lines.append(f"    vs even pacing 100 s: {row['wall_s'] / 100:.2f}x; vs floor ~41 s: {row['wall_s'] / 41:.2f}x; "
                         f"429s: {n429} ({100 * n429 / max(sim['requests_total'], 1):.1f}% of calls)  "
                         f"[target ≤ 50 s, ≤ 2% 429s]")
        elif sc.key == "b":
            ideal = row["jobs"] * sc.latency_ms / 1000 / (sc.workers * sc.concurrency)
            lines.append(f"    ideal {ideal:.2f} s → submit→report {row['wall_s'] / ideal:.2f}x, "
                         f"SQL span {row['span_s'] / ideal:.2f}x; simulator peak in flight {sim['peak_in_flight']}  "
                         f"[target {'≤ 1.15x' if row['label'] == 'cold' else '≤ 1.1x'}]")
        elif sc.key == "c":
            ours = (row["worker_cpu_s"] - row["idle_cpu_s"]) / row["jobs"] * 1000
            lines.append(f"    worker CPU {row['worker_cpu_s']:.2f} s (idle share {row['idle_cpu_s']:.2f} s) → "
                         f"{ours:.1f} ms/job; same SDK calls alone {row['sdk_cpu_ms']:.1f} ms/call → "
                         f"our overhead {ours - row['sdk_cpu_ms']:.1f} ms CPU per job (incl. Celery, SQL, Redis, report)  "
                         "[target ≤ 5 ms]")
        if "profile" in row:
            per_job = (row["worker_cpu_s"] / row["jobs"] * 1000) if "worker_cpu_s" in row else \
                row["ours"]["workers"] / row["jobs"] * 1000
            lines += profiling.table(row["profile"], per_job)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["a", "b", "c", "d", "d-submit", "all"], default="all")
    parser.add_argument("--profile", action="store_true",
                        help="sample the workers with py-spy during measured runs and print where their CPU goes")
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    args = parser.parse_args()
    keys = ["a", "b", "c", "d"] if args.scenario == "all" else [args.scenario]
    if args.profile and not profiling.available():
        parser.exit(2, "error: --profile needs py-spy (pip install -e '.[bench]')\n")
    summary = []
    for key in keys:
        if key == "d-submit":
            print(f"== (d-submit) {large_run.TITLE}: submit only", flush=True)
            lines = large_run.report_submit_only(large_run.run_submit_only(args.redis_url))
        elif key == "d":
            print(f"== (d) {large_run.TITLE}", flush=True)
            lines = large_run.report(large_run.run_large(args.redis_url))
        else:
            sc = SCENARIOS[key]
            print(f"== ({key}) {sc.title}", flush=True)
            lines = report(sc, run_scenario(sc, args.redis_url, profile=args.profile))
        print("\n".join(lines), flush=True)
        summary += lines
    if len(keys) > 1:
        print("\n== summary\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
