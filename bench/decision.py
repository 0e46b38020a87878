"""How often the go/no-go rule is wrong, over many simulated runs (statistics only: no workers).

Each simulated run has AGENTS agents x TASKS tasks; every task has its own easiness, shared by
both models (paired data, as in a real suite), and a share of tasks scores fractionally (as the
`keywords` scorer does: k of 4 keywords found). The rule under test is the report's own
(shared.report.decision.compare), with the project's [decision] config.

    python bench/decision.py                 # 1,000 runs per scenario
    python bench/decision.py --runs 2000 --fractional 0.3

Prints, per scenario: GO / NO-GO / INCONCLUSIVE rates per agent and pooled (the report's
`overall`), with a 95% Wilson interval for the GO rate, and the interval's coverage of the true
difference (the mean over the run's tasks of the two models' expected scores).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.config import DecisionConfig  # noqa: E402
from shared.report.decision import GO, INCONCLUSIVE, NO_GO, POOLED, compare  # noqa: E402

SCENARIOS = {  # name: (baseline quality, candidate quality)
    "null (equal, 0.60 vs 0.60)": (0.60, 0.60),
    "null (equal, 0.85 vs 0.85)": (0.85, 0.85),
    "small (+8% rel, 0.60 vs 0.648)": (0.60, 0.648),
    "large (+50% rel, 0.60 vs 0.90)": (0.60, 0.90),
}
KEYWORDS = 4


def _score(rng: random.Random, p: float, fractional: bool) -> float:
    if fractional:
        return sum(rng.random() < p for _ in range(KEYWORDS)) / KEYWORDS
    return 1.0 if rng.random() < p else 0.0


def simulate_run(rng: random.Random, baseline_q: float, candidate_q: float, agents: int, tasks: int,
                 fractional_share: float):
    """Jobs of one run as the report sees them, and the true difference per agent and pooled."""
    by_agent, truth = {}, {}
    for a in range(agents):
        cand, base, gaps = {}, {}, []
        for t in range(tasks):
            easiness = rng.uniform(-0.2, 0.2)
            p_base = min(1.0, max(0.0, baseline_q + easiness))
            p_cand = min(1.0, max(0.0, candidate_q + easiness))
            fractional = rng.random() < fractional_share
            cand[t] = SimpleNamespace(status="ok", score=_score(rng, p_cand, fractional))
            base[t] = SimpleNamespace(status="ok", score=_score(rng, p_base, fractional))
            gaps.append(p_cand - p_base)
        by_agent[f"agent{a}"] = (cand, base)
        truth[f"agent{a}"] = sum(gaps) / tasks
    truth[POOLED] = sum(truth.values()) / agents
    return by_agent, truth


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_scenario(rule: DecisionConfig, baseline_q: float, candidate_q: float, args) -> dict:
    rng = random.Random(args.seed)
    counts = {scope: {GO: 0, NO_GO: 0, INCONCLUSIVE: 0, "covered": 0, "n": 0} for scope in ("agent", "pooled")}
    for _ in range(args.runs):
        by_agent, truth = simulate_run(rng, baseline_q, candidate_q, args.agents, args.tasks, args.fractional)
        pooled_c, pooled_b = {}, {}
        rows = []
        for agent, (cand, base) in by_agent.items():
            rows.append(compare(agent, "ft", "base", cand, base, rule))
            pooled_c.update({(agent, t): j for t, j in cand.items()})
            pooled_b.update({(agent, t): j for t, j in base.items()})
        rows.append(compare(POOLED, "ft", "base", pooled_c, pooled_b, rule))
        for row in rows:
            tally = counts["pooled" if row["agent"] == POOLED else "agent"]
            tally[row["decision"]] += 1
            tally["n"] += 1
            low, high = row["ci95_abs"]
            tally["covered"] += low - 1e-9 <= truth[row["agent"]] <= high + 1e-9
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="simulated runs per scenario (default 1000)")
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20, help="tasks per agent (default 20)")
    parser.add_argument("--fractional", type=float, default=0.2, help="share of tasks scored k/4 (default 0.2)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rule = DecisionConfig()
    print(f"rule: min_improvement {rule.min_improvement:.0%} relative, confidence {rule.confidence:.0%}; "
          f"{args.runs} runs x {args.agents} agents x {args.tasks} tasks, {args.fractional:.0%} fractional")
    header = f"{'scenario':<32} {'scope':<7} {'GO':>7} {'GO 95% CI':>15} {'NO-GO':>7} {'INCONC.':>8} {'coverage':>9}"
    print(header)
    print("-" * len(header))
    for name, (baseline_q, candidate_q) in SCENARIOS.items():
        started = time.perf_counter()
        counts = run_scenario(rule, baseline_q, candidate_q, args)
        for scope, c in counts.items():
            low, high = wilson(c[GO], c["n"])
            print(f"{name if scope == 'agent' else '':<32} {scope:<7} {c[GO] / c['n']:>7.1%} "
                  f"{f'[{low:.1%}, {high:.1%}]':>15} {c[NO_GO] / c['n']:>7.1%} "
                  f"{c[INCONCLUSIVE] / c['n']:>8.1%} {c['covered'] / c['n']:>9.1%}")
        print(f"{'':<32} ({counts['agent']['n']} agent and {counts['pooled']['n']} pooled comparisons, "
              f"{time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
