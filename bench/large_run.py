"""(d) A run of 10,000 jobs: how long submit takes (validate, record, enqueue), how long the run
takes to complete, how fast `producer status` answers while it runs, how long its report takes
to build from SQL, and each worker's peak memory at -c 32. The run is made twice, with two
layouts of workers: every worker consuming every queue (as `worker` with no `-Q`
does), and one worker per provider queue plus one for reports (`-Q openai`, ...), which imports
one SDK each. The suite is generated for the run (the shipped suite's tasks repeated under new
ids, so the simulator still knows their answers); nothing of it is shipped.

Used by `bench/throughput.py --scenario d` (or `all`).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from bench.parts import ROOT, peak_rss_mb, running_system
from shared.messaging import REPORTS_QUEUE
from shared.providers import PROVIDER_QUEUES

PER_AGENT = 500  # × 5 agents × 4 backends = 10,000 jobs
BACKENDS = ["openai", "anthropic", "mistral-base", "mistral-ft"]
WORKERS, CONCURRENCY, LATENCY_MS = 2, 32, 100
PER_QUEUE = [*PROVIDER_QUEUES, REPORTS_QUEUE]  # the second layout: a worker per queue
STATUS_EVERY_S = 0.5
TITLE = (f"10,000 jobs: generated suite ({PER_AGENT} tasks x 5 agents x 4 backends), {WORKERS} workers x "
         f"{CONCURRENCY}, {LATENCY_MS} ms simulator, no rate limits")


def generate_suite(folder: Path, per_agent: int) -> Path:
    """The shipped suite's tasks, each repeated under a new id until every agent has per_agent."""
    from shared.suite import load_suite

    shipped = load_suite("genesis-custom")
    folder.mkdir(parents=True)
    for agent in shipped.agents():
        tasks = shipped.tasks_for(agent)
        with (folder / f"{agent}.jsonl").open("w") as out:
            for i in range(per_agent):
                task = tasks[i % len(tasks)]
                out.write(json.dumps({**task.model_dump(exclude_none=True),
                                      "id": f"{task.id}-r{i // len(tasks):03d}"}) + "\n")
    return folder


def run_large(redis_url: str, timeout: float = 900) -> dict:
    with running_system("d", redis_url, latency_ms=LATENCY_MS, sim_rpm=None, limits={}, workers=WORKERS,
                        concurrency=CONCURRENCY) as system:
        row = submit_and_watch(generate_suite(system.tmp / "suite-10k", PER_AGENT), timeout)
        row["worker_peak_rss_mb"] = [peak_rss_mb(w.proc.pid) for w in system.workers]
        row["sim"] = system.sim.stats()
        row["report_build_s"] = time_report_build(row["run_id"])
    with running_system("d2", redis_url, latency_ms=LATENCY_MS, sim_rpm=None, limits={}, workers=len(PER_QUEUE),
                        concurrency=CONCURRENCY, queues=PER_QUEUE) as system:
        per_queue = submit_and_watch(generate_suite(system.tmp / "suite-10k", PER_AGENT), timeout)
        row["per_queue"] = {"final_s": per_queue["final_s"], "ok": per_queue["by_status"]["ok"],
                            "peak_rss_mb": {q: peak_rss_mb(w.proc.pid) for q, w in zip(PER_QUEUE, system.workers)}}
    return row


def run_submit_only(redis_url: str, repeats: int = 3) -> list[dict]:
    """Only `submit` of the 10,000 jobs (validate, record, publish), `repeats` times, with no
    worker consuming: the messages stay in Redis until the db is flushed at the end."""
    rows = []
    with running_system("dsubmit", redis_url, latency_ms=LATENCY_MS, sim_rpm=None, limits={}, workers=0,
                        concurrency=CONCURRENCY) as system:
        suite = generate_suite(system.tmp / "suite-10k", PER_AGENT)
        for _ in range(repeats):
            rows.append(submit_steps(suite))
    return rows


def report_submit_only(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        submit_s = row["record_s"] + row["enqueue_s"]
        lines.append(f"(d-submit) jobs {row['jobs']}: validate suite {row['validate_s']:.2f} s; record "
                     f"{row['record_s']:.2f} s + enqueue {row['enqueue_s']:.2f} s = {submit_s:.2f} s  [target ≤ 5 s]")
    return lines


def submit_steps(suite: Path) -> dict:
    """`producer submit` of the whole suite on every backend, timing each step."""
    from producer import submit as submitting
    from shared.config import get_settings

    settings = get_settings()
    started = time.perf_counter()
    selection = submitting.select_work(settings, agents=[], all_agents=True, backends=BACKENDS, suite=str(suite),
                                       limit=None)
    selected = time.perf_counter()
    run_id, jobs = submitting.record_run(settings, selection)
    recorded = time.perf_counter()
    submitting.enqueue(run_id, jobs)
    enqueued = time.perf_counter()
    return {"run_id": run_id, "jobs": len(jobs), "validate_s": selected - started, "record_s": recorded - selected,
            "enqueue_s": enqueued - recorded}


def time_report_build(run_id: str) -> float:
    """Seconds to build and store the run's report from SQL, as `build_report` does (best of 2)."""
    from shared.runs import publish_report

    times = []
    for _ in range(2):
        before = time.perf_counter()
        publish_report(run_id)
        times.append(time.perf_counter() - before)
    return min(times)


def submit_and_watch(suite: Path, timeout: float) -> dict:
    """Submit like `producer submit`, timing each step; then poll status until the report exists."""
    from shared.progress import run_snapshot

    steps = submit_steps(suite)
    run_id, jobs, enqueued = steps["run_id"], steps["jobs"], time.perf_counter()
    status_ms: list[float] = []
    cli_ms = None
    final_at = None
    while time.perf_counter() < enqueued + timeout:
        before = time.perf_counter()
        snap = run_snapshot(run_id)
        now = time.perf_counter()
        if snap["active"]:
            status_ms.append((now - before) * 1000)
        if cli_ms is None and snap["by_status"]["ok"] >= jobs // 2:
            cli_ms = producer_status_cli_ms(run_id)
        if final_at is None and not snap["active"]:
            final_at = now
        if snap["report"] and not snap["active"]:
            break
        time.sleep(STATUS_EVERY_S)
    else:
        raise TimeoutError(f"run {run_id} not reported within {timeout} s")
    return {
        **steps, "by_status": snap["by_status"],
        "final_s": final_at - enqueued, "report_s": time.perf_counter() - enqueued,
        "status_ms": status_ms, "cli_status_ms": cli_ms,
    }


def producer_status_cli_ms(run_id: str) -> float | None:
    """`producer status RUN_ID --json` as a user runs it (a new process: includes its start-up)."""
    exe = shutil.which("producer") or str(ROOT / ".venv" / "bin" / "producer")
    before = time.perf_counter()
    done = subprocess.run([exe, "status", run_id, "--json"], capture_output=True, cwd=ROOT)
    return (time.perf_counter() - before) * 1000 if done.returncode == 0 else None


def report(row: dict) -> list[str]:
    status = row["status_ms"] or [float("nan")]
    cli = f"{row['cli_status_ms']:.0f} ms" if row["cli_status_ms"] else "n/a"
    submit_s = row["record_s"] + row["enqueue_s"]
    return [
        f"(d) jobs {row['jobs']}  ok {row['by_status']['ok']}  error {row['by_status']['error']}  "
        f"calls {row['sim']['requests_total']}",
        f"    submit: validate suite {row['validate_s']:.2f} s; record {row['record_s']:.2f} s + enqueue "
        f"{row['enqueue_s']:.2f} s = {submit_s:.2f} s  [target ≤ 5 s]",
        f"    run: enqueue→all final {row['final_s']:.1f} s, enqueue→report {row['report_s']:.1f} s "
        f"(report built from SQL: {row['report_build_s']:.2f} s  [target < 2 s])",
        f"    status during the run ({len(row['status_ms'])} polls): median {statistics.median(status):.0f} ms, "
        f"max {max(status):.0f} ms  [target < 200 ms]; `producer status --json` as a new process {cli}",
        "    worker peak RSS: " + ", ".join(f"{mb:.0f} MB" for mb in row["worker_peak_rss_mb"])
        + f" at -c {CONCURRENCY}, every worker on every queue  [target ≤ 150 MB]",
        f"    one worker per queue ({row['per_queue']['ok']} ok, enqueue→all final {row['per_queue']['final_s']:.1f} s), "
        "peak RSS at -c 32: " + ", ".join(f"-Q {q} {mb:.0f} MB" for q, mb in row["per_queue"]["peak_rss_mb"].items()),
    ]
