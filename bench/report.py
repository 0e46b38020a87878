"""How long the report takes for a big run, from SQL, and how much memory it needs.

Writes a run of AGENTS x TASKS x 4 backends (10,000 jobs by default, 0/1 and fractional
scores, answers of a few hundred characters) into SQLite in a temp dir, then times
`generate_report` (SQL -> data -> statistics and decision -> markdown/HTML -> SQL copy ->
files) and reports the peak Python memory of that build (tracemalloc, a separate pass).

    python bench/report.py                     # 10,000 jobs
    python bench/report.py --tasks 1000        # 20,000 jobs

Also prints what one fractional comparison's statistics cost (numpy, vectorised).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BACKENDS = {  # name: (provider, model, quality)
    "mistral-ft": ("mistral", "ft:open-mistral-7b:{agent}", 0.80),
    "mistral-base": ("mistral", "open-mistral-7b", 0.65),
    "openai": ("openai", "gpt-5-mini", 0.75),
    "anthropic": ("anthropic", "claude-haiku-4-5", 0.78),
}
AGENTS = ["qa", "content", "legal", "support", "analyst"]


def populate(database_url: str, tasks: int, seed: int) -> str:
    from sqlalchemy import insert

    from shared.config import get_settings
    from shared.db import migrate, session_scope
    from shared.models import CostEntry, Job, Run, RunStatus

    migrate(database_url)
    rng = random.Random(seed)
    run_id = "bench-report"
    with session_scope(database_url) as session:
        session.add(Run(id=run_id, suite="genesis-custom", agents=AGENTS, backends=list(BACKENDS),
                        status=RunStatus.completed, total_jobs=len(AGENTS) * tasks * len(BACKENDS),
                        simulated=True, config=get_settings().snapshot()))
        session.flush()
        rows = []
        for agent in AGENTS:
            for t in range(tasks):
                fractional = t % 5 == 0
                for backend, (provider, model, quality) in BACKENDS.items():
                    score = (sum(rng.random() < quality for _ in range(4)) / 4 if fractional
                             else float(rng.random() < quality))
                    rows.append({
                        "run_id": run_id, "agent": agent, "task_id": f"t{t:04d}", "difficulty": rng.choice(["easy", "medium", "hard"]),
                        "backend": backend, "provider": provider, "model": model.format(agent=agent),
                        "status": "ok", "score": score, "output": f"answer {t} " + "lorem ipsum " * rng.randint(5, 40),
                        "latency_ms": rng.lognormvariate(6, 0.5), "input_tokens": 120, "output_tokens": 60,
                        "cost_usd": 0.0001, "attempts": 1,
                    })
        session.execute(insert(Job), rows)
        ids = session.exec(Job.__table__.select().with_only_columns(Job.id).where(Job.run_id == run_id)).all()
        session.execute(insert(CostEntry), [{"run_id": run_id, "job_id": i, "cost_usd": 0.0001} for (i,) in ids])
    return run_id


def one_comparison_seconds(pairs: int, rule) -> tuple[float, float]:
    """One fractional comparison through the decision (score interval, answered-only,
    tasks needed at 80% power, smallest confirmable improvement), and its interval alone."""
    from types import SimpleNamespace

    from shared.report.decision import compare
    from shared.stats import two_sided

    rng = random.Random(0)
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    baseline = [rng.choice(levels) for _ in range(pairs)]
    candidate = [b if rng.random() < 0.7 else rng.choice(levels) for b in baseline]
    jobs = [{i: SimpleNamespace(status="ok", score=s, model="m") for i, s in enumerate(side)}
            for side in (candidate, baseline)]
    started = time.perf_counter()
    compare("x", "ft", "base", *jobs, rule)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    two_sided(candidate, baseline, rule.confidence)
    return whole, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500, help="tasks per agent (x 5 agents x 4 backends)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="genesis-bench-report-") as tmp:
        database_url = f"sqlite:///{tmp}/bench.db"
        os.environ.update({"GENESIS_DATABASE_URL": database_url, "GENESIS_REPORTS_DIR": f"{tmp}/reports"})
        from shared.config import get_settings
        from shared.report import generate_report

        get_settings.cache_clear()
        started = time.perf_counter()
        run_id = populate(database_url, args.tasks, args.seed)
        jobs = len(AGENTS) * args.tasks * len(BACKENDS)
        print(f"populated {jobs:,} jobs in {time.perf_counter() - started:.1f} s (SQLite, {tmp})")

        generate_report(run_id, database_url=database_url)  # warm: imports, suite, engine
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            published = generate_report(run_id, database_url=database_url)
            timings.append(time.perf_counter() - started)
        tracemalloc.start()
        generate_report(run_id, database_url=database_url)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        sizes = {name: path.stat().st_size for name, path in published.paths.items()}
        from collections import Counter

        methods = Counter(c["method"] for c in published.data["comparisons"])
        print(f"report of {jobs:,} jobs: best {min(timings):.2f} s, worst {max(timings):.2f} s over 3 builds "
              f"(target < 2 s); peak Python memory during a build {peak / 2**20:.1f} MiB")
        print(f"  {len(published.data['comparisons'])} comparisons ({dict(methods)}), "
              f"{len(published.data['disagreements']):,} disagreements listed; files: "
              + ", ".join(f"{name} {size / 1024:,.0f} KiB" for name, size in sizes.items()))
        rule = get_settings().decision
        pairs = 100  # a default run pooled (5 agents x 20 tasks)
        whole, interval = one_comparison_seconds(pairs, rule)
        print(f"one comparison of {pairs} fractional pairs: {whole:.3f} s with its power figures, "
              f"the interval alone {interval:.3f} s")

if __name__ == "__main__":
    main()
