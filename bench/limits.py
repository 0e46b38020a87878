"""Learned limits against the simulator: 3 workers x 8 threads, openai jobs, a rate-bound run.

    python bench/limits.py [--redis-url redis://127.0.0.1:6379/9] [--sim-port 0] [--case NAME ...]

The simulator enforces (and states in OpenAI's headers) R requests a minute per key; our
`[limits.openai] rpm` is absent, twice R, or half R. The floor is what the binding limit L
allows N calls to take: a full bucket (L at once), then L/60 a second: (N - L) * 60 / L.

- absent: nothing configured; the fleet starts at 50 rpm and learns R from the first answer.
- double: a ceiling of 2R; the provider's R binds.
- half: a ceiling of R/2 holds (floor at R/2), and `producer limits` says the provider allows more.
- lowered: the provider halves its limit mid-run (`POST /_sim/config`); 429s after the change,
  and the rate from 30 s after it (against the new limit).

Prints one table: floor, span (first start to last finish, from SQL), span/floor, 429s, calls.
Key pools (two keys, one key revoked) are not measured yet: the pools are not built.
Everything runs in a temp dir with SQLite; the Redis db given is flushed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.parts import running_system  # noqa: E402
from bench.throughput import Scenario, submit_and_wait  # noqa: E402

LATENCY_MS = 200
WORKERS, THREADS = 3, 8


@dataclass(frozen=True)
class Case:
    name: str
    sim_rpm: int
    ceiling: int | None
    tasks_per_agent: int  # openai jobs = 5 agents x this (the suite has 20 per agent)
    lowered_to: int | None = None  # the provider's new limit, mid-run
    lower_after_s: float = 0.0


CASES = {
    "absent": Case("absent", sim_rpm=60, ceiling=None, tasks_per_agent=20),
    "double": Case("double", sim_rpm=60, ceiling=120, tasks_per_agent=20),
    "half": Case("half", sim_rpm=60, ceiling=30, tasks_per_agent=20),
    "lowered": Case("lowered", sim_rpm=60, ceiling=None, tasks_per_agent=20, lowered_to=15, lower_after_s=10.0),
}


def floor_s(calls: int, per_minute: int) -> float:
    return max(calls - per_minute, 0) * 60 / per_minute


def run_case(case: Case, redis_url: str, sim_port: int) -> dict:
    limits = {"openai": {"rpm": case.ceiling}} if case.ceiling else {}
    scenario = Scenario(case.name, case.name, backends=["openai"], workers=WORKERS, concurrency=THREADS,
                        latency_ms=LATENCY_MS, sim_rpm=case.sim_rpm, limits=limits, limit=case.tasks_per_agent)
    with running_system(f"limits-{case.name}", redis_url, latency_ms=LATENCY_MS, sim_rpm=case.sim_rpm,
                        limits=limits, workers=WORKERS, concurrency=THREADS, sim_port=sim_port) as system:
        sim = system.sim
        at_change: dict = {}
        if case.lowered_to:
            def lower() -> None:
                time.sleep(case.lower_after_s)
                at_change.update(sim.stats(), at=time.time())
                sim.update(rpm=case.lowered_to)

            threading.Thread(target=lower, daemon=True).start()
        result = submit_and_wait(scenario, timeout=600)
        stats = sim.stats()
        notes = _limits_notes() if case.name == "half" else []
        if case.lowered_to and not at_change:
            raise RuntimeError(f"the run ended within {case.lower_after_s} s, before the provider lowered its limit")
        after = _after_change(result["run_id"], stats, at_change, case) if case.lowered_to else {}
    binding = min(case.sim_rpm, case.ceiling or case.sim_rpm)
    calls = stats["requests_total"]
    refused = stats["by_status"].get("429", 0)
    floor = (floor_s(result["jobs"], binding) if not case.lowered_to
             else _lowered_floor(result["jobs"], case))
    return {"case": case.name, "R": case.sim_rpm, "ceiling": case.ceiling or "-", "jobs": result["jobs"],
            "floor_s": floor, "span_s": result["span_s"], "ratio": result["span_s"] / floor if floor else float("nan"),
            "429s": refused, "calls": calls, "share_429": refused / calls, "notes": notes, **after}


def _lowered_floor(jobs: int, case: Case) -> float:
    """At R until the change (a full bucket, then R/60 a second), then the rest from the
    provider's fresh bucket at the new limit (full, then new/60 a second)."""
    before = min(jobs, case.sim_rpm + case.lower_after_s * case.sim_rpm / 60)
    rest = jobs - before
    return case.lower_after_s + floor_s(int(rest), case.lowered_to) if rest > 0 else floor_s(jobs, case.sim_rpm)


def _after_change(run_id: str, stats: dict, at_change: dict, case: Case) -> dict:
    from datetime import timezone

    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job

    calls_after = stats["requests_total"] - at_change["requests_total"]
    refused_after = stats["by_status"].get("429", 0) - at_change["by_status"].get("429", 0)
    settle_from = at_change["at"] + 30
    with session_scope() as session:
        finished = sorted(j.finished_at.replace(tzinfo=timezone.utc).timestamp()
                          for j in session.exec(select(Job).where(Job.run_id == run_id)).all())
    late = [t for t in finished if t >= settle_from]
    rate = (len(late) - 1) / (late[-1] - late[0]) * 60 if len(late) > 2 else float("nan")
    return {"429s_after_change": refused_after, "calls_after_change": calls_after,
            "share_429_after": refused_after / calls_after if calls_after else 0.0,
            "rpm_from_30s_after": rate, "new_limit": case.lowered_to}


def _limits_notes() -> list[str]:
    from tests.support.runs import producer

    result = producer("limits", "--json")
    import json

    return [note for row in json.loads(result.stdout)["buckets"] for note in row["notes"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("GENESIS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"))
    parser.add_argument("--sim-port", type=int, default=0, help="the simulator's port (0: any free one)")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="repeatable; default: all")
    args = parser.parse_args()
    rows = []
    for name in args.case or list(CASES):
        rows.append(run_case(CASES[name], args.redis_url, args.sim_port))
        print(f"  {name}: {rows[-1]}", flush=True)
    print(f"\n{WORKERS} workers x {THREADS} threads, {LATENCY_MS} ms answers, openai jobs; R = the simulator's rpm")
    print("| case | R | ceiling | jobs | floor s | span s | span/floor | 429s | calls | 429 share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['R']} | {r['ceiling']} | {r['jobs']} | {r['floor_s']:.1f} | {r['span_s']:.1f} | "
              f"{r['ratio']:.2f} | {r['429s']} | {r['calls']} | {r['share_429']:.1%} |")
    for r in rows:
        for note in r["notes"]:
            print(f"{r['case']}: producer limits: {note}")
        if "new_limit" in r:
            print(f"{r['case']}: after the provider lowered its limit to {r['new_limit']} rpm: "
                  f"{r['429s_after_change']} 429s of {r['calls_after_change']} calls ({r['share_429_after']:.1%}); "
                  f"rate from 30 s after the change: {r['rpm_from_30s_after']:.0f} rpm")


if __name__ == "__main__":
    main()
