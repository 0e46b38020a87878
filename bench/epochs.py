"""Repeated trials on the demo suite: what k epochs of sampled answers show, and that greedy
answers agree.

    python bench/epochs.py [--epochs K] [--limit N] [--redis-url URL]

Against the simulator in this process (seed 7, latency 20 ms; fine-tunes right 85% of the
time, the base model 65%): every agent of `genesis-custom` (first N tasks each, default all 20)
on mistral-ft vs mistral-base, 2 workers x 8 threads, Redis db --redis-url (flushed), SQLite in
a temp dir.
Run 1: every request sampled (`--sampling always`, a fresh draw per call) with --epochs K
(default 3). Printed: jobs, calls the simulator served, and per comparison the verdict, the
interval, the within-task and between-task variance, the within share at K and the k that
would have been enough (within share <= 10%).
Run 2: the requests' own temperature (the adapters send 0: greedy) with 2 epochs: whether the
report says the epochs agreed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batch import Env, simulated_env  # noqa: E402
from tests.support.runs import submit, wait_until_reported  # noqa: E402

PAIR = ["--all-agents", "--backend", "mistral-ft", "--backend", "mistral-base"]


def one_run(env_: Env, sampling: str, epochs: int, limit: int | None) -> tuple[dict, dict, dict]:
    env_.simulator.update(sampling=sampling)
    _, workers = env_.start({})
    try:
        run_id = submit(*PAIR, "--epochs", str(epochs), *(("--limit", str(limit)) if limit else ()))
        snap = wait_until_reported(run_id, timeout=900)
        stats = env_.simulator.stats()
    finally:
        for worker in workers:
            worker.stop(timeout=60)
    return snap, json.loads((Path(snap["report"]).parent / "report.json").read_text()), stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N tasks per agent (default: all 20)")
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    opts = parser.parse_args()

    with simulated_env(opts.redis_url, latency_ms=20, name="epochs") as env_:
        sampled = one_run(env_, "always", opts.epochs, opts.limit)
        greedy = one_run(env_, "request", 2, opts.limit)

    snap, report, stats = sampled
    print(f"\ngenesis-custom, all agents, {opts.limit or 20} tasks each, mistral-ft vs mistral-base, "
          f"{opts.epochs} epochs, every answer sampled")
    print(f"jobs {snap['total']}, ok {snap['by_status']['ok']}, calls served {stats['requests_total']}")
    print(f"{'comparison':>10} {'n':>4} {'verdict':>13} {'diff pp':>8} {'CI pp':>14} {'within':>7} {'between':>8} "
          f"{'within share':>12} {'k enough':>8}")
    for c in report["comparisons"]:
        split = c["epochs"]
        ci = f"{100 * c['ci95_abs'][0]:+.1f}..{100 * c['ci95_abs'][1]:+.1f}"
        print(f"{c['agent']:>10} {c['n']:>4} {c['decision']:>13} {100 * c['improvement_abs']:>+8.1f} {ci:>14} "
              f"{split['within_one_epoch']:>7.3f} {split['between']:>8.3f} {split['within_share']:>12.0%} "
              f"{str(split['k_enough']):>8}")
    print(report["epochs"]["summary"])
    snap, report, stats = greedy
    print(f"\nthe same at the requests' temperature (0), 2 epochs: jobs {snap['total']}, calls served "
          f"{stats['requests_total']}, epochs agreed: {report['epochs']['agreed']}")
    print(report["epochs"]["summary"])


if __name__ == "__main__":
    main()
