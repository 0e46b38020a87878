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
- two-pools: two keys (OPENAI_API_KEY, OPENAI_API_KEY_B in [keys.openai]), each its own pool, each
  R a minute at the simulator; 200 jobs (2 epochs): the floor is at 2R, and the throughput
  (jobs/span, and the steady rate after the burst) is compared with `absent`'s one key.
- one-pool: the same two keys declared one pool (`pools = {team = [...]}`) while the simulator
  gives each its own R: only our limiter holds the pair to R (the steady rate must not pass R).
- revoked: two pools; the simulator answers OPENAI_API_KEY_B's key 401 from its 20th request on:
  every job must end ok on the other key, and the workers' logs hold one line naming the variable.
- anthropic-split (`--case anthropic-split`, not in the default set): anthropic jobs, the simulator
  limiting input and output tokens apart (ITPM, OTPM; no rpm). The floor is the slower of the two
  buckets (input: the prompts the simulator counted; output: the jobs' max tokens, which it
  charges in full); "one rate" is the floor of one token rate at min(ITPM, OTPM) (before the split).

Prints one table: floor, span (first start to last finish, from SQL), span/floor, 429s, calls,
and the steady rate (jobs finished a minute once the first burst is spent, from SQL).
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
    keys: int = 1  # key variables of [keys.openai] (2: OPENAI_API_KEY and OPENAI_API_KEY_B)
    one_pool: bool = False  # the keys declared one pool
    revoke_after: int | None = None  # the simulator refuses the second key (401) from this request on
    epochs: int = 1


CASES = {
    "absent": Case("absent", sim_rpm=60, ceiling=None, tasks_per_agent=20),
    "double": Case("double", sim_rpm=60, ceiling=120, tasks_per_agent=20),
    "half": Case("half", sim_rpm=60, ceiling=30, tasks_per_agent=20),
    "lowered": Case("lowered", sim_rpm=60, ceiling=None, tasks_per_agent=20, lowered_to=15, lower_after_s=10.0),
    "two-pools": Case("two-pools", sim_rpm=60, ceiling=None, tasks_per_agent=20, keys=2, epochs=2),
    "one-pool": Case("one-pool", sim_rpm=60, ceiling=None, tasks_per_agent=20, keys=2, one_pool=True),
    "revoked": Case("revoked", sim_rpm=60, ceiling=None, tasks_per_agent=20, keys=2, revoke_after=20),
}
SPLIT = {"itpm": 2000, "otpm": 1000, "tasks_per_agent": 10}  # anthropic-split: small enough that input binds
SECOND_KEY = ("OPENAI_API_KEY_B", "sk-sim-second")  # the second variable and its (simulated) key


def binding_rpm(case: Case) -> int:
    """What the fleet may send a minute: the ceiling or the provider's R, per pool, times the
    pools (a revoked key's pool is gone: one pool's)."""
    per_pool = min(case.sim_rpm, case.ceiling or case.sim_rpm)
    pools = 1 if case.one_pool or case.revoke_after is not None else case.keys
    return per_pool * pools


def key_setup(case: Case) -> dict:
    """The running_system arguments of a case's keys: [keys.openai], the second key's variable,
    the simulator's refusal of it."""
    if case.keys == 1:
        return {}
    variables = '["OPENAI_API_KEY", "OPENAI_API_KEY_B"]'
    toml = f"[keys.openai]\napi_key_env = {variables}\n" + (f"pools = {{ team = {variables} }}\n" if case.one_pool else "")
    sim_args = ("--revoke-key", SECOND_KEY[1], "--revoke-key-after", str(case.revoke_after)) if case.revoke_after else ()
    return {"extra_toml": toml, "extra_env": {SECOND_KEY[0]: SECOND_KEY[1],
                                              "GENESIS_DECISION__EPOCHS": str(case.epochs)}, "sim_args": sim_args}


def floor_s(calls: int, per_minute: int) -> float:
    return max(calls - per_minute, 0) * 60 / per_minute


def run_case(case: Case, redis_url: str, sim_port: int) -> dict:
    limits = {"openai": {"rpm": case.ceiling}} if case.ceiling else {}
    scenario = Scenario(case.name, case.name, backends=["openai"], workers=WORKERS, concurrency=THREADS,
                        latency_ms=LATENCY_MS, sim_rpm=case.sim_rpm, limits=limits, limit=case.tasks_per_agent)
    with running_system(f"limits-{case.name}", redis_url, latency_ms=LATENCY_MS, sim_rpm=case.sim_rpm,
                        limits=limits, workers=WORKERS, concurrency=THREADS, sim_port=sim_port,
                        **key_setup(case)) as system:
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
        refusals = _refusal_lines(system.tmp) if case.revoke_after else []
        steady = _steady_rpm(result["run_id"], binding_rpm(case))
    binding = binding_rpm(case)
    calls = stats["requests_total"]
    refused = stats["by_status"].get("429", 0)
    floor = (_lowered_floor(result["jobs"], case) if case.lowered_to
             else floor_s(result["jobs"] - case.revoke_after, binding) if case.revoke_after  # B served at most those
             else floor_s(result["jobs"], binding))
    keys = "1" if case.keys == 1 else f"{case.keys}, {'one pool' if case.one_pool else 'own pools'}"
    return {"case": case.name, "R": case.sim_rpm, "ceiling": case.ceiling or "-", "keys": keys, "jobs": result["jobs"],
            "ok": result["by_status"].get("ok", 0), "floor_s": floor, "span_s": result["span_s"],
            "ratio": result["span_s"] / floor if floor else float("nan"), "429s": refused,
            "401s": stats["by_status"].get("401", 0), "calls": calls, "share_429": refused / calls,
            "steady_rpm": steady, "notes": notes, "refusal_lines": refusals, **after}


def run_split_case(redis_url: str, sim_port: int) -> dict:
    itpm, otpm = SPLIT["itpm"], SPLIT["otpm"]
    scenario = Scenario("anthropic-split", "anthropic-split", backends=["anthropic"], workers=WORKERS,
                        concurrency=THREADS, latency_ms=LATENCY_MS, limit=SPLIT["tasks_per_agent"])
    with running_system("limits-anthropic-split", redis_url, latency_ms=LATENCY_MS, sim_rpm=None, limits={},
                        workers=WORKERS, concurrency=THREADS, sim_port=sim_port,
                        sim_args=("--itpm", str(itpm), "--otpm", str(otpm))) as system:
        result = submit_and_wait(scenario, timeout=900)
        stats = system.sim.stats()
        allowance = _max_tokens_served(result["run_id"])
    calls, refused = stats["requests_total"], stats["by_status"].get("429", 0)
    ok_in = stats["input_tokens"]  # the prompts of the answered calls, as the simulator counted them
    floor = max(floor_s(ok_in, itpm), floor_s(allowance, otpm))
    one_rate = floor_s(ok_in + allowance, min(itpm, otpm))
    return {"case": "anthropic-split", "R": f"itpm {itpm} otpm {otpm}", "ceiling": "-", "keys": "1",
            "jobs": result["jobs"], "ok": result["by_status"].get("ok", 0), "floor_s": floor, "span_s": result["span_s"],
            "ratio": result["span_s"] / floor if floor else float("nan"), "429s": refused, "401s": 0, "calls": calls,
            "share_429": refused / calls, "steady_rpm": float("nan"), "refusal_lines": [], "notes": [],
            "split": [f"input {ok_in} tokens, output allowance {allowance}: floor input {floor_s(ok_in, itpm):.1f} s, "
                      f"output {floor_s(allowance, otpm):.1f} s; one token rate at {min(itpm, otpm)} would floor at "
                      f"{one_rate:.1f} s"]}


def _max_tokens_served(run_id: str) -> int:
    """The output allowance (max tokens) of a run's jobs, as their requests asked it."""
    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job, Run
    from shared.suite import load_task, run_suite_folder

    with session_scope() as session:
        suite = run_suite_folder(session.get(Run, run_id).suite)
        return sum(load_task(suite, job.agent, job.task_id).max_tokens
                   for job in session.exec(select(Job).where(Job.run_id == run_id)).all())


def _finished_times(run_id: str) -> list[float]:
    from datetime import timezone

    from sqlmodel import select

    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        return sorted(j.finished_at.replace(tzinfo=timezone.utc).timestamp()
                      for j in session.exec(select(Job).where(Job.run_id == run_id)).all() if j.finished_at)


def _steady_rpm(run_id: str, burst: int) -> float:
    """Jobs finished a minute once the first `burst` (a full bucket's worth) are done."""
    late = _finished_times(run_id)[burst:]
    return (len(late) - 1) / (late[-1] - late[0]) * 60 if len(late) > 2 and late[-1] > late[0] else float("nan")


def _refusal_lines(tmp: Path) -> list[str]:
    """The workers' log lines that bench a refused key."""
    return [line.strip() for log in sorted(tmp.glob("worker*.log"))
            for line in log.read_text(errors="replace").splitlines() if "refused by" in line and "benched" in line]


def _lowered_floor(jobs: int, case: Case) -> float:
    """At R until the change (a full bucket, then R/60 a second), then the rest from the
    provider's fresh bucket at the new limit (full, then new/60 a second)."""
    before = min(jobs, case.sim_rpm + case.lower_after_s * case.sim_rpm / 60)
    rest = jobs - before
    return case.lower_after_s + floor_s(int(rest), case.lowered_to) if rest > 0 else floor_s(jobs, case.sim_rpm)


def _after_change(run_id: str, stats: dict, at_change: dict, case: Case) -> dict:
    calls_after = stats["requests_total"] - at_change["requests_total"]
    refused_after = stats["by_status"].get("429", 0) - at_change["by_status"].get("429", 0)
    settle_from = at_change["at"] + 30
    late = [t for t in _finished_times(run_id) if t >= settle_from]
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
    parser.add_argument("--case", choices=sorted([*CASES, "anthropic-split"]), action="append",
                        help="repeatable; default: all but anthropic-split")
    args = parser.parse_args()
    rows = []
    for name in args.case or list(CASES):
        rows.append(run_split_case(args.redis_url, args.sim_port) if name == "anthropic-split"
                    else run_case(CASES[name], args.redis_url, args.sim_port))
        print(f"  {name}: {rows[-1]}", flush=True)
    print(f"\n{WORKERS} workers x {THREADS} threads, {LATENCY_MS} ms answers, openai jobs; R = the simulator's rpm "
          "per key")
    print("| case | R | ceiling | keys | jobs (ok) | floor s | span s | span/floor | 429s | 401s | calls | 429 share "
          "| steady rpm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['R']} | {r['ceiling']} | {r['keys']} | {r['jobs']} ({r['ok']}) | {r['floor_s']:.1f} | "
              f"{r['span_s']:.1f} | {r['ratio']:.2f} | {r['429s']} | {r['401s']} | {r['calls']} | {r['share_429']:.1%} "
              f"| {r['steady_rpm']:.0f} |")
    by_name = {r["case"]: r for r in rows}
    if "two-pools" in by_name and "absent" in by_name:
        two, one = by_name["two-pools"], by_name["absent"]
        print(f"two-pools: throughput {two['jobs'] / two['span_s'] * 60:.0f} jobs/min against one key's "
              f"{one['jobs'] / one['span_s'] * 60:.0f} ({two['jobs'] / two['span_s'] / (one['jobs'] / one['span_s']):.2f}x); "
              f"steady {two['steady_rpm']:.0f} against {one['steady_rpm']:.0f} rpm "
              f"({two['steady_rpm'] / one['steady_rpm']:.2f}x)")
    for r in rows:
        if r["refusal_lines"] or r["case"] == "revoked":
            print(f"{r['case']}: {len(r['refusal_lines'])} log line(s) naming the refused key:")
            for line in r["refusal_lines"]:
                print(f"  {line}")
    for r in rows:
        for note in r.get("split", []):
            print(f"{r['case']}: {note}")
        for note in r["notes"]:
            print(f"{r['case']}: producer limits: {note}")
        if "new_limit" in r:
            print(f"{r['case']}: after the provider lowered its limit to {r['new_limit']} rpm: "
                  f"{r['429s_after_change']} 429s of {r['calls_after_change']} calls ({r['share_429_after']:.1%}); "
                  f"rate from 30 s after the change: {r['rpm_from_30s_after']:.0f} rpm")


if __name__ == "__main__":
    main()
