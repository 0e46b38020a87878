"""The sequential design against the fixed one over whole simulated runs (statistics only: no
workers): GO and NO-GO rates, paid calls, dollars and looks, side by side, per scenario.

    python bench/sequential.py                          # 2,000 runs per scenario, 5 agents x 400 tasks, 5 looks
    python bench/sequential.py --tasks 100 400 1000 --go better bar

Runs are bench/decision.py's (its loss share, error and halt rates), drawn for many runs at once;
verdicts come from the decision's own rule (shared.report.decision.settled) on shared.stats'
score interval, at the fixed design's level or at each look's levels from
shared.sequential.look_alpha_each (GO side O'Brien-Fleming-like, NO-GO side Hwang-Shih-DeCani).
The sequential rule is bench/sequential_sim.py's (the orchestration's): an agent releases its
next slice iff its own verdict is open and, once the pooled verdict is settled, its GO is still
within reach (shared.sequential.go_within_reach); the pooled verdict is judged at each look over
the pairs released so far; the run stops when no agent releases or the last look is done.

Scenarios (the candidate's accuracy net of its errors): none (= its baseline), loss (12 points
below the bar), bar (exactly the required improvement), bar+5 and bar+12 (points above it),
large (+50% relative, from lower baselines). Errors: any GO at "none" (and, under --go bar, at
"bar"); any NO-GO at "bar". Dollars: two calls per released task at config/genesis.toml's
mistral-ft and open-mistral-7b prices, for INPUT_TOKENS in and OUTPUT_TOKENS out.
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

from bench.decision import ERRORS, HALTED, LARGE_ACCURACIES, LOSS, TARGETS, wilson  # noqa: E402
from bench.sequential_sim import GO_CODE, NO_GO_CODE, Runs, fixed_design, sequential_design, summary  # noqa: E402,F401
from shared.config.tables import DecisionConfig  # noqa: E402
from shared.report.decision import error_shares  # noqa: E402
from shared.sequential import NO_GO_GAMMA  # noqa: E402

SCENARIOS = ("none", "loss", "bar", "bar+5", "bar+12", "large")
_SCENARIO = {"none": "null"}  # bench/decision.py's name for it
INPUT_TOKENS, OUTPUT_TOKENS = 300, 150


def usd_per_task() -> float:
    """One released task: the candidate's and the baseline's call, at the shipped prices."""
    pricing = tomllib.loads((ROOT / "config" / "genesis.toml").read_text())["pricing"]
    total = 0.0
    for model in ("ft:open-mistral-7b:*", "open-mistral-7b"):
        total += (INPUT_TOKENS * pricing[model]["input_per_mtok"] + OUTPUT_TOKENS * pricing[model]["output_per_mtok"]) / 1e6
    return total


def candidate_change(scenario: str, p_base: float, rule: DecisionConfig) -> tuple[float, float]:
    """(loss, fix): the share of the baseline's right answers the candidate gets wrong and of its
    misses it gets right, so that net of its errors its accuracy is the scenario's; LOSS unless
    only a larger loss gets there ("loss": 12 points below the bar)."""
    target = p_base * (1 + rule.min_improvement) - 0.12 if scenario == "loss" else \
        TARGETS[_SCENARIO.get(scenario, scenario)](p_base, rule.min_improvement)
    gross = target / (1 - ERRORS)
    fix = (gross - p_base * (1 - LOSS)) / (1 - p_base)
    if fix < 0.0:
        return 1.0 - gross / p_base, 0.0
    if fix > 1.0:
        raise SystemExit(f"scenario {scenario!r} cannot be reached from a baseline accuracy of {p_base:.0%}")
    return LOSS, fix


def simulate(rng: np.random.Generator, scenario: str, runs: int, agents: int, tasks: int, rule: DecisionConfig,
             accuracies: tuple[float, float]) -> Runs:
    """bench/decision.py's runs, many at once. As shared.report.decision.pairing counts them: a
    candidate error scores 0, a task the baseline did not answer is left out, a halted candidate
    is missing."""
    low, high = accuracies
    p_base = low + (high - low) * np.arange(agents) / max(agents - 1, 1)
    loss, fix = np.array([candidate_change(scenario, p, rule) for p in p_base]).T
    shape = (runs, agents, tasks)
    right = rng.random(shape) < np.clip(p_base[None, :, None] + rng.uniform(-0.15, 0.15, shape), 0.0, 1.0)
    draw = rng.random(shape)
    candidate_right = np.where(right, draw >= loss[None, :, None], draw < fix[None, :, None])

    def status() -> np.ndarray:  # 0 ok, 1 error, 2 halted
        u = rng.random(shape)
        return np.where(u < ERRORS, 1, np.where(u < ERRORS + HALTED, 2, 0))

    candidate_status, baseline_status = status(), status()
    paired = (baseline_status == 0) & (candidate_status != 2)
    candidate = np.where(candidate_status == 0, candidate_right, False)
    return Runs(candidate.astype(float), right.astype(float), paired)


def run_scenario(scenario: str, args, tasks: int, rule: DecisionConfig) -> tuple[dict, dict]:
    rng = np.random.default_rng([args.seed, SCENARIOS.index(scenario), tasks])
    accuracies = tuple(args.accuracies)
    if scenario == "large":
        accuracies = (min(accuracies[0], LARGE_ACCURACIES[0]), min(accuracies[1], LARGE_ACCURACIES[1]))
    runs = simulate(rng, scenario, args.runs, args.agents, tasks, rule, accuracies)
    alphas = error_shares(args.agents, 1, rule.confidence)
    usd = usd_per_task()
    return (summary(fixed_design(runs, alphas, rule), usd),
            summary(sequential_design(runs, alphas, rule, args.looks), usd))


COLUMNS = (("any GO", "any GO", "{:7.1%}"), ("any NO-GO", "any NO-GO", "{:9.1%}"), ("overall GO", "overall GO", "{:10.1%}"),
           ("agent GO", "agent GO", "{:8.1%}"), ("agent NO-GO", "agent NO-GO", "{:11.1%}"), ("calls", "calls", "{:6.0f}"),
           ("USD", "usd", "{:7.3f}"), ("looks", "looks", "{:5.2f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="simulated runs per scenario (default 2000)")
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--tasks", type=int, nargs="+", default=[400], help="tasks per agent, one or a grid (default 400)")
    parser.add_argument("--looks", type=int, default=5)
    parser.add_argument("--go", nargs="+", choices=("better", "bar"), default=["better"])
    parser.add_argument("--accuracies", type=float, nargs=2, default=(0.45, 0.65), metavar=("LOW", "HIGH"))
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.runs} runs x {args.agents} agents per scenario, baseline accuracies {args.accuracies[0]:.0%}.."
          f"{args.accuracies[1]:.0%}; loss {LOSS:.0%}, jobs {ERRORS:.0%} error, {HALTED:.0%} halted; sequential: "
          f"{args.looks} looks, GO side Lan-DeMets O'Brien-Fleming-like, NO-GO side Hwang-Shih-DeCani "
          f"gamma {NO_GO_GAMMA:g}; agent GO / NO-GO: the share of per-agent verdicts")
    for go in args.go:
        rule = DecisionConfig(go=go)
        for tasks in args.tasks:
            print(f'\ngo = "{rule.go}", min_improvement {rule.min_improvement:.0%} relative, confidence '
                  f"{rule.confidence:.0%} family-wise, n = {tasks} tasks per agent")
            print(f"{'scenario':<8} {'design':<10} " + " ".join(f"{name:>{len(fmt.format(0.5))}}" for name, _, fmt in COLUMNS)
                  + "   vs fixed")
            results = {}
            for scenario in args.scenarios:
                started = time.perf_counter()
                fixed, sequential = run_scenario(scenario, args, tasks, rule)
                results[scenario] = fixed, sequential
                for name, row in (("fixed", fixed), ("sequential", sequential)):
                    versus = ""
                    if name == "sequential":
                        versus = (f"calls {row['calls'] / fixed['calls']:.0%}; agent GO "
                                  f"{100 * (row['agent GO'] - fixed['agent GO']):+.1f} pp"
                                  f"   [{time.perf_counter() - started:.0f} s]")
                    cells = " ".join(fmt.format(row[key]) for _, key, fmt in COLUMNS)
                    print(f"{scenario:<8} {name:<10} {cells}   {versus}", flush=True)
            for line in targets(results, rule):
                print(line)
    low, high = wilson(0.05, args.runs)
    print(f"\n(a rate of 5.0% over {args.runs} runs has a 95% interval of {low:.1%}..{high:.1%})")


def targets(results: dict, rule: DecisionConfig) -> list[str]:
    """The issue's targets, each met or not at this run size (simulation noise included)."""
    checks = []
    for scenario, bound in (("none", 0.85), ("loss", 0.60), ("bar+12", 0.60), ("large", 0.60)):
        if scenario in results:
            fixed, sequential = results[scenario]
            ratio = sequential["calls"] / fixed["calls"]
            checks.append((f"calls at {scenario} <= {bound:.0%} of fixed", f"{ratio:.0%}", ratio <= bound))
    for scenario in ("bar+5", "bar+12"):
        if scenario in results:
            fixed, sequential = results[scenario]
            for key in ("overall GO", "agent GO"):
                gap = sequential[key] - fixed[key]
                checks.append((f"{key} at {scenario} no more than 3 pp below fixed", f"{100 * gap:+.1f} pp",
                               gap >= -0.03))
    errors = [("none", "any GO")] + [("bar", "any NO-GO")] + ([("bar", "any GO")] if rule.go == "bar" else [])
    for scenario, key in errors:
        if scenario in results:
            rate = results[scenario][1][key]
            checks.append((f"sequential {key} at {scenario} <= 5%", f"{rate:.1%}", rate <= 0.05))
    return [f"target: {what}: {value}: {'met' if ok else 'NOT met'}" for what, value, ok in checks]


if __name__ == "__main__":
    main()
