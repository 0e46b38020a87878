"""The sequential design against the fixed one over whole simulated runs (statistics only: no
workers): GO and NO-GO rates, paid calls, dollars and looks, side by side, per scenario.

    python bench/sequential.py                 # 2,000 runs per scenario, 5 agents x 100 tasks, 5 looks
    python bench/sequential.py --go bar --runs 4000 --tasks 200

Runs are bench/decision.py's (its scenarios, loss share, error and halt rates), drawn for many
runs at once; verdicts come from the decision's own rule (shared.report.decision.settled) on
shared.stats' score interval, at the fixed design's level or at each look's level from
shared.sequential (Lan-DeMets O'Brien-Fleming-like spending over `looks` equally spaced looks).
A sequential run releases every agent's tasks look by look (both backends, the same tasks); an
agent stops releasing once its verdict and the pooled one are settled (a verdict is kept from
the look it settles at); the last look spends what is left.

Scenarios (the candidate's accuracy net of its errors): none (= its baseline), bar (exactly the
required improvement), bar+5 and bar+12 (points above it), large (+50% relative, from lower
baselines). Errors: any GO at "none" (and, under --go bar, at "bar"); any NO-GO at "bar".
Dollars: two calls per released task at config/genesis.toml's mistral-ft and open-mistral-7b
prices, for INPUT_TOKENS in and OUTPUT_TOKENS out.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decision import ERRORS, HALTED, LARGE_ACCURACIES, LOSS, candidate_fix, wilson  # noqa: E402
from shared.config.tables import DecisionConfig  # noqa: E402
from shared.report.decision import MIN_PAIRED_COVERAGE, error_shares, settled  # noqa: E402
from shared.sequential import look_alpha, planned_fractions  # noqa: E402
from shared.stats import bounds  # noqa: E402

SCENARIOS = ("none", "bar", "bar+5", "bar+12", "large")
_SCENARIO = {"none": "null"}  # bench/decision.py's name for it
INPUT_TOKENS, OUTPUT_TOKENS = 300, 150
GO_CODE, NO_GO_CODE = 1, -1
_DIFFERENCES = np.array([-1.0, 0.0, 1.0])


def usd_per_task() -> float:
    """One released task: the candidate's and the baseline's call, at the shipped prices."""
    pricing = tomllib.loads((ROOT / "config" / "genesis.toml").read_text())["pricing"]
    total = 0.0
    for model in ("ft:open-mistral-7b:*", "open-mistral-7b"):
        total += (INPUT_TOKENS * pricing[model]["input_per_mtok"] + OUTPUT_TOKENS * pricing[model]["output_per_mtok"]) / 1e6
    return total


def simulate(rng: np.random.Generator, scenario: str, runs: int, agents: int, tasks: int, rule: DecisionConfig,
             accuracies: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bench/decision.py's runs, many at once: (candidate score as counted, baseline score, paired),
    each (runs, agents, tasks). As shared.report.decision.pairing counts them: a candidate error
    scores 0, a task the baseline did not answer is left out, a halted candidate is missing."""
    low, high = accuracies
    p_base = low + (high - low) * np.arange(agents) / max(agents - 1, 1)
    fix = np.array([candidate_fix(_SCENARIO.get(scenario, scenario), p, rule, ERRORS) for p in p_base])
    shape = (runs, agents, tasks)
    right = rng.random(shape) < np.clip(p_base[None, :, None] + rng.uniform(-0.15, 0.15, shape), 0.0, 1.0)
    draw = rng.random(shape)
    candidate_right = np.where(right, draw >= LOSS, draw < fix[None, :, None])

    def status() -> np.ndarray:  # 0 ok, 1 error, 2 halted
        u = rng.random(shape)
        return np.where(u < ERRORS, 1, np.where(u < ERRORS + HALTED, 2, 0))

    candidate_status, baseline_status = status(), status()
    paired = (baseline_status == 0) & (candidate_status != 2)
    candidate = np.where(candidate_status == 0, candidate_right, False)
    return candidate.astype(float), right.astype(float), paired


def verdicts(candidate: np.ndarray, baseline: np.ndarray, paired: np.ndarray, released: np.ndarray,
             alpha_each: float, rule: DecisionConfig) -> np.ndarray:
    """GO_CODE / NO_GO_CODE / 0 per row, for rows of tasks (R, T) of which `released` count."""
    upto = np.arange(candidate.shape[1])[None, :] < released[:, None]
    use = paired & upto
    c, b = candidate * use, baseline * use
    n10 = (c * (1 - b)).sum(axis=1)
    n01 = ((1 - c) * b * use).sum(axis=1)
    n11 = (c * b).sum(axis=1)
    n = use.sum(axis=1).astype(float)
    n00 = n - n10 - n01 - n11
    valid = (n > 0) & (n >= MIN_PAIRED_COVERAGE * released)
    safe = np.where(n > 0, n, 1.0)
    counts = np.stack([n01, n00 + n11, n10], axis=1)
    counts[n == 0] = [0.0, 1.0, 0.0]
    low, high = bounds(_DIFFERENCES, counts, alpha_each)
    improvement = (n10 - n01) / safe
    threshold = rule.min_improvement * (n01 + n11) / safe
    bar_low = np.full(len(n), -1.0)
    if rule.go == "bar":  # the interval of candidate - (1 + bar) x baseline, as decision.bar_margin_low
        scale = 1.0 + rule.min_improvement
        values = np.array([-1.0, 1.0 / scale - 1.0, 0.0, 1.0 / scale, 1.0])
        bar_counts = np.stack([n01, n11, n00, n10, np.zeros_like(n)], axis=1)
        bar_counts[n == 0] = [0.0, 0.0, 1.0, 0.0, 0.0]
        bar_low = bounds(values, bar_counts, alpha_each)[0] * scale
    go, no_go = settled(low, high, improvement, threshold, bar_low, rule.go)
    return np.where(valid & go, GO_CODE, np.where(valid & no_go, NO_GO_CODE, 0))


def _pooled(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1)


def _pooled_released(released: np.ndarray, tasks: int) -> np.ndarray:
    """The pooled rows' tasks (agent-major) count when each agent's first `released` count: as a
    mask, since agents may have released different numbers."""
    return (np.arange(tasks)[None, None, :] < released[:, :, None]).reshape(released.shape[0], -1)


def _masked(candidate, baseline, paired, mask, alpha_each, rule) -> np.ndarray:
    """Verdicts over the pooled tasks that `mask` marks as released (coverage over those)."""
    order = np.argsort(~mask, axis=1, kind="stable")  # released tasks first, in their order
    take = lambda a: np.take_along_axis(_pooled(a), order, axis=1)  # noqa: E731
    return verdicts(take(candidate), take(baseline), take(paired).astype(bool), mask.sum(axis=1), alpha_each, rule)


def fixed_design(candidate, baseline, paired, alphas, rule) -> dict:
    runs, agents, tasks = candidate.shape
    per_agent, pooled = alphas
    everyone = np.full(runs, tasks)
    by_agent = np.stack([verdicts(candidate[:, a], baseline[:, a], paired[:, a], everyone, per_agent, rule)
                         for a in range(agents)], axis=1)
    overall = _masked(candidate, baseline, paired, np.ones((runs, agents * tasks), bool), pooled, rule)
    return {"by_agent": by_agent, "overall": overall, "released": np.full((runs, agents), tasks),
            "looks": np.ones(runs)}


def sequential_design(candidate, baseline, paired, alphas, rule, looks: int) -> dict:
    """Look by look: release, judge what is unsettled at the look's level, stop the settled."""
    runs, agents, tasks = candidate.shape
    per_agent, pooled = alphas
    fractions = planned_fractions(looks)
    by_agent = np.zeros((runs, agents), int)
    overall = np.zeros(runs, int)
    agent_done = np.zeros((runs, agents), bool)
    pooled_done = np.zeros(runs, bool)
    released = np.zeros((runs, agents), int)
    looks_taken = np.zeros(runs)
    for k in range(1, looks + 1):
        last = k == looks
        releasing = ~(agent_done & pooled_done[:, None])
        if not releasing.any():
            break
        looks_taken += releasing.any(axis=1)
        released = np.where(releasing, int(round(k * tasks / looks)), released)
        # the look's fraction is the share of tasks released: while any verdict of a run is open,
        # its agents release on the planned schedule (an agent settles only with the pooled one)
        # (the last fraction is 1: the last look spends what is left)
        agent_alpha, pooled_alpha = look_alpha(fractions[:k], per_agent), look_alpha(fractions[:k], pooled)
        for a in range(agents):
            open_ = ~agent_done[:, a]
            if open_.any():
                code = verdicts(candidate[open_, a], baseline[open_, a], paired[open_, a], released[open_, a],
                                agent_alpha, rule)
                by_agent[open_, a] = code
                agent_done[open_, a] = (code != 0) | last
        open_ = ~pooled_done
        if open_.any():
            mask = _pooled_released(released[open_], tasks)
            code = _masked(candidate[open_], baseline[open_], paired[open_], mask, pooled_alpha, rule)
            overall[open_] = code
            pooled_done[open_] = (code != 0) | last
    return {"by_agent": by_agent, "overall": overall, "released": released, "looks": looks_taken}


def summary(result: dict, usd: float) -> dict:
    every = np.concatenate([result["overall"][:, None], result["by_agent"]], axis=1)
    released = result["released"].sum(axis=1)
    return {"any GO": float((every == GO_CODE).any(axis=1).mean()),
            "any NO-GO": float((every == NO_GO_CODE).any(axis=1).mean()),
            "overall GO": float((result["overall"] == GO_CODE).mean()),
            "calls": float(2 * released.mean()), "usd": float(usd * released.mean()),
            "looks": float(result["looks"].mean())}


def run_scenario(scenario: str, args, rule: DecisionConfig) -> tuple[dict, dict]:
    rng = np.random.default_rng([args.seed, SCENARIOS.index(scenario)])
    accuracies = tuple(args.accuracies)
    if scenario == "large":
        accuracies = (min(accuracies[0], LARGE_ACCURACIES[0]), min(accuracies[1], LARGE_ACCURACIES[1]))
    candidate, baseline, paired = simulate(rng, scenario, args.runs, args.agents, args.tasks, rule, accuracies)
    alphas = error_shares(args.agents, 1, rule.confidence)
    usd = usd_per_task()
    return (summary(fixed_design(candidate, baseline, paired, alphas, rule), usd),
            summary(sequential_design(candidate, baseline, paired, alphas, rule, args.looks), usd))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="simulated runs per scenario (default 2000)")
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=100, help="tasks per agent (default 100)")
    parser.add_argument("--looks", type=int, default=5)
    parser.add_argument("--go", choices=("better", "bar"), default="better")
    parser.add_argument("--accuracies", type=float, nargs=2, default=(0.45, 0.65), metavar=("LOW", "HIGH"))
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rule = DecisionConfig(go=args.go)
    print(f'rule: go = "{rule.go}", min_improvement {rule.min_improvement:.0%} relative, confidence '
          f"{rule.confidence:.0%} family-wise; {args.runs} runs x {args.agents} agents x {args.tasks} tasks, "
          f"baseline accuracies {args.accuracies[0]:.0%}..{args.accuracies[1]:.0%}; loss {LOSS:.0%}, jobs "
          f"{ERRORS:.0%} error, {HALTED:.0%} halted; sequential: {args.looks} looks, Lan-DeMets O'Brien-Fleming-like")
    print(f"{'scenario':<8} {'design':<10} {'any GO':>7} {'any NO-GO':>9} {'overall GO':>10} {'calls':>8} "
          f"{'USD':>8} {'looks':>5}   vs fixed")
    results = {}
    for scenario in args.scenarios:
        started = time.perf_counter()
        fixed, sequential = run_scenario(scenario, args, rule)
        results[scenario] = fixed, sequential
        for name, row in (("fixed", fixed), ("sequential", sequential)):
            versus = ""
            if name == "sequential":
                versus = (f"calls {row['calls'] / fixed['calls']:.0%} of fixed; overall GO "
                          f"{100 * (row['overall GO'] - fixed['overall GO']):+.1f} pp, any GO "
                          f"{100 * (row['any GO'] - fixed['any GO']):+.1f} pp   [{time.perf_counter() - started:.0f} s]")
            print(f"{scenario:<8} {name:<10} {row['any GO']:7.1%} {row['any NO-GO']:9.1%} {row['overall GO']:10.1%} "
                  f"{row['calls']:8.0f} {row['usd']:8.4f} {row['looks']:5.2f}   {versus}", flush=True)
    low, high = wilson(0.05, args.runs)
    print(f"(a rate of 5.0% over {args.runs} runs has a 95% interval of {low:.1%}..{high:.1%})")
    for line in targets(results, rule):
        print(line)


def targets(results: dict, rule: DecisionConfig) -> list[str]:
    """The issue's targets, each met or not at this run size (simulation noise included)."""
    checks = []
    for scenario, bound in (("none", 0.85), ("bar+12", 0.60), ("large", 0.60)):
        if scenario in results:
            fixed, sequential = results[scenario]
            ratio = sequential["calls"] / fixed["calls"]
            checks.append((f"calls at {scenario} <= {bound:.0%} of fixed", f"{ratio:.0%}", ratio <= bound))
    for scenario in ("bar+5", "bar+12"):
        if scenario in results:
            fixed, sequential = results[scenario]
            gap = sequential["overall GO"] - fixed["overall GO"]
            checks.append((f"overall GO at {scenario} no more than 3 pp below fixed", f"{100 * gap:+.1f} pp", gap >= -0.03))
    errors = [("none", "any GO")] + [("bar", "any NO-GO")] + ([("bar", "any GO")] if rule.go == "bar" else [])
    for scenario, key in errors:
        if scenario in results:
            rate = results[scenario][1][key]
            checks.append((f"sequential {key} at {scenario} <= 5%", f"{rate:.1%}", rate <= 0.05))
    return [f"target: {what}: {value}: {'met' if ok else 'NOT met'}" for what, value, ok in checks]


if __name__ == "__main__":
    main()
