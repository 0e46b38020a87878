"""How often the go/no-go rule is wrong over whole simulated runs (statistics only: no workers),
decided by the report's own code (shared.report.decision.comparisons + decide) under the
project's [decision] config; the power it promises; what the shipped suite can confirm.

    python bench/decision.py            # 500 runs per scenario (~4 min here)
    python bench/decision.py --quick    # 150 runs, 150 samples per power check

A run: AGENTS agents x TASKS tasks, each agent with its own baseline accuracy (0.45..0.65: agents
differ in difficulty) and every task its own easiness. Tie-heavy, as a fine-tune against its
base: the candidate keeps the baseline's right answers except LOSS of them, and fixes the share
of its misses that gives the scenario's true difference. Failed jobs: each job ends in `error`
with probability ERRORS (a candidate error counts 0, a baseline-only error is left out) and is
`halted` with probability HALTED. The true difference is the candidate's accuracy net of its
own errors minus the baseline's.

Scenarios: null (every candidate exactly as good as its baseline: any GO is an error); flaky
(the issue's: 10% better when it answers but 15% errors, so worse once they count: any GO is
an error); above
the bar (every candidate 2 pp above the required improvement: any NO-GO is an error); +50%
relative. Then the power check: from an observed pilot comparison, the tasks-needed number it
reports; drawing that many tasks from the pilot's differences (the observed effect as the
truth), how often the verdict comes out GO (target 75-85%).
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

from shared.config.tables import DecisionConfig  # noqa: E402
from shared.power import confirmable  # noqa: E402
from shared.report.decision import GO, NO_GO, compare, comparisons, decide, error_shares  # noqa: E402

LOSS = 0.05  # of the baseline's right answers, the candidate gets wrong
ERRORS = 0.03
HALTED = 0.01
BACKENDS = {"ft": {"role": "candidate", "baseline": "base"}, "base": {"role": "baseline"}}


def _job(task: int, status: str, score: float | None, model: str) -> SimpleNamespace:
    return SimpleNamespace(task_id=f"t{task}", status=status, score=score if status == "ok" else None, model=model)


FLAKY_ERRORS = 0.15  # the "flaky" scenario's candidate errors


def _status(rng: random.Random, errors: float = ERRORS) -> str:
    u = rng.random()
    return "error" if u < errors else "halted" if u < errors + HALTED else "ok"


TARGETS = {  # scenario: the candidate's accuracy net of its errors, from the baseline's p and the bar r
    "null": lambda p, r: p, "above": lambda p, r: p * (1 + r) + 0.02, "large": lambda p, r: 1.5 * p,
    "flaky": lambda p, r: 0.935 * p,
    # bench/sequential.py's, by distance from the bar
    "bar": lambda p, r: p * (1 + r), "bar+5": lambda p, r: p * (1 + r) + 0.05,
    "bar+12": lambda p, r: p * (1 + r) + 0.12,
}


def candidate_fix(scenario: str, p_base: float, rule: DecisionConfig, errors: float) -> float:
    """The share of the baseline's misses the candidate gets right (it keeps the baseline's right
    answers except LOSS of them) so that, net of its own errors, its accuracy is the scenario's
    ("flaky": 10% better when it answers, 15% errors: worse once they count)."""
    gross = TARGETS[scenario](p_base, rule.min_improvement) / (1 - errors)
    fix = (gross - p_base * (1 - LOSS)) / (1 - p_base)
    if not 0.0 <= fix <= 1.0:
        raise SystemExit(f"scenario {scenario!r} cannot be reached from a baseline accuracy of {p_base:.0%}")
    return fix


def simulate_run(rng: random.Random, scenario: str, agents: int, tasks: int, rule: DecisionConfig,
                 accuracies: tuple[float, float] = (0.45, 0.65)) -> SimpleNamespace:
    """One run's jobs as the report reads them (RunFacts' fields)."""
    by_pair = {}
    names = [f"agent{a}" for a in range(agents)]
    for a, agent in enumerate(names):
        low, high = accuracies
        p_base = low + (high - low) * a / max(agents - 1, 1)
        errors = FLAKY_ERRORS if scenario == "flaky" else ERRORS
        fix = candidate_fix(scenario, p_base, rule, errors)
        cand, base = [], []
        for t in range(tasks):
            easiness = rng.uniform(-0.15, 0.15)
            right = rng.random() < min(1.0, max(0.0, p_base + easiness))
            candidate_right = rng.random() >= LOSS if right else rng.random() < fix
            cand.append(_job(t, _status(rng, errors), float(candidate_right), "ft-model"))
            base.append(_job(t, _status(rng), float(right), "base-model"))
        by_pair[(agent, "ft")], by_pair[(agent, "base")] = cand, base
    return SimpleNamespace(agents=names, backends=list(BACKENDS), by_pair=by_pair, snapshot={"backends": BACKENDS})


# +50% relative cannot be reached from a baseline much above 60% (the candidate would need more
# than every answer right): that scenario's baselines are taken this much lower, and its line says so.
LARGE_ACCURACIES = (0.30, 0.50)


def accuracies_for(scenario: str, args) -> tuple[float, float]:
    if scenario == "large":
        return min(args.accuracies[0], LARGE_ACCURACIES[0]), min(args.accuracies[1], LARGE_ACCURACIES[1])
    return tuple(args.accuracies)


def run_scenario(scenario: str, runs: int, args, rule: DecisionConfig) -> dict:
    rng = random.Random(f"{args.seed}-{scenario}")
    any_go = any_no_go = overall_go = 0
    for _ in range(runs):
        facts = simulate_run(rng, scenario, args.agents, args.tasks, rule, accuracies_for(scenario, args))
        rows = comparisons(facts, rule, plan=False)  # the verdicts as the report's; no power figures
        verdicts = decide(facts.agents, rows)
        every = [verdicts["overall"], *verdicts["by_agent"].values()]
        any_go += GO in every
        any_no_go += NO_GO in every
        overall_go += verdicts["overall"] == GO
    return {"any GO": any_go / runs, "any NO-GO": any_no_go / runs, "overall GO": overall_go / runs}


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    p = successes
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


PILOTS = {  # name: (candidate scores, baseline scores) of an observed comparison
    "b=2, c=0 of 20 (the issue's)": ([1.0] * 2 + [1.0] * 10 + [0.0] * 8, [0.0] * 2 + [1.0] * 10 + [0.0] * 8),
    "b=8, c=2 of 20": ([1.0] * 8 + [0.0] * 2 + [1.0] * 5 + [0.0] * 5, [0.0] * 8 + [1.0] * 2 + [1.0] * 5 + [0.0] * 5),
    "b=14, c=6 of 100": ([1.0] * 14 + [0.0] * 6 + [1.0] * 50 + [0.0] * 30, [0.0] * 14 + [1.0] * 6 + [1.0] * 50 + [0.0] * 30),
    "quarter steps, 20": ([1, 0.75, 0.5, 1, 1, 0.25, 0.75, 1, 0, 0.5] * 2, [0.75, 0.5, 0.5, 1, 0.75, 0.25, 0.5, 1, 0, 0.75] * 2),
}


def power_check(name: str, pilot: tuple[list[float], list[float]], samples: int, alpha_each: float,
                rule: DecisionConfig, rng: random.Random) -> str:
    def jobs(scores):
        return {i: SimpleNamespace(status="ok", score=s, model="m") for i, s in enumerate(scores)}

    candidate, baseline = pilot
    observed = compare("pilot", "ft", "base", jobs(candidate), jobs(baseline), rule, alpha_each=alpha_each)
    needed = observed["pairs_needed"]
    if needed is None:
        return f"  {name}: {observed['decision']} already; no tasks-needed number"
    differences = list(zip(candidate, baseline))
    goal = GO if observed["improvement_abs"] >= observed["threshold_abs"] else NO_GO
    hits = 0
    for _ in range(samples):
        draw = [rng.choice(differences) for _ in range(needed)]
        row = compare("x", "ft", "base", jobs([c for c, _ in draw]), jobs([b for _, b in draw]), rule,
                      alpha_each=alpha_each)
        hits += row["decision"] == goal
    low, high = wilson(hits / samples, samples)
    return (f"  {name}: {observed['decision']} at n={observed['n']}, observed {100 * observed['improvement_abs']:+.1f} pp; "
            f"tasks needed {needed}; {goal} in {hits / samples:.1%} of {samples} draws of {needed} "
            f"(95% CI {low:.1%}..{high:.1%}; target 75-85%)")


def shipped_suite_power(rule: DecisionConfig, baseline_accuracy: float, agents: int, tasks: int) -> list[str]:
    per_agent, per_pooled = error_shares(agents, 1, rule.confidence)
    lines = []
    for who, n, alpha_each in (("per agent", tasks, per_agent), ("pooled", agents * tasks, per_pooled)):
        reachable, smallest = confirmable(n, baseline_accuracy, rule, alpha_each)
        if not reachable:
            text = "cannot reach GO at all"
        elif smallest is None:
            text = "no improvement reachable at 80% power (a candidate right on every task the baseline misses falls short)"
        else:
            text = f"{100 * smallest:+.1f} pp ({smallest / baseline_accuracy:+.0%} relative)"
        lines.append(f"  {who} ({n} tasks, each end at {1 - alpha_each:.2%}): {text}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=None, help="simulated runs per scenario (default 500; --quick 150)")
    parser.add_argument("--samples", type=int, default=None, help="draws per power check (default 400; --quick 150)")
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=20, help="tasks per agent (default 20)")
    parser.add_argument("--accuracies", type=float, nargs=2, default=(0.45, 0.65), metavar=("LOW", "HIGH"),
                        help="the agents' baseline accuracies, spread evenly (default 0.45 0.65)")
    parser.add_argument("--scenarios", nargs="*", default=None, help="null flaky above large (default: all)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    runs = args.runs or (150 if args.quick else 500)
    samples = args.samples or (150 if args.quick else 400)
    rule = DecisionConfig()
    print(f"rule: min_improvement {rule.min_improvement:.0%} relative, confidence {rule.confidence:.0%} family-wise; "
          f"{runs} runs x {args.agents} agents x {args.tasks} tasks, baseline accuracies {args.accuracies[0]:.0%}.."
          f"{args.accuracies[1]:.0%}; candidate loses {LOSS:.0%} of the baseline's "
          f"right answers; jobs {ERRORS:.0%} error, {HALTED:.0%} halted")
    for scenario, label, key in (("null", "null: every candidate = its baseline", "any GO"),
                                 ("flaky", "candidate errs on 15%, worse net of it", "any GO"),
                                 ("above", "every candidate +2 pp above the bar", "any NO-GO"),
                                 ("large", "every candidate +50% relative, baselines {}", "overall GO")):
        if args.scenarios is not None and scenario not in args.scenarios:
            continue
        started = time.perf_counter()
        rates = run_scenario(scenario, runs, args, rule)
        low_acc, high_acc = accuracies_for(scenario, args)
        label = label.format(f"{low_acc:.0%}..{high_acc:.0%}")
        low, high = wilson(rates[key], runs)
        print(f"{label:<40} {key}: {rates[key]:6.1%} (95% CI {low:.1%}..{high:.1%})   "
              + "  ".join(f"{k} {v:.1%}" for k, v in rates.items() if k != key)
              + f"   [{time.perf_counter() - started:.0f} s]", flush=True)
    rng = random.Random(args.seed)
    per_agent, per_pooled = error_shares(args.agents, 1, rule.confidence)
    print(f"power check (at a per-agent comparison's share, each end {1 - per_agent:.2%}; "
          f"and the pooled one's, {1 - per_pooled:.2%}):")
    for name, pilot in PILOTS.items():
        alpha_each = per_pooled if "100" in name else per_agent
        print(power_check(name, pilot, samples, alpha_each, rule, rng), flush=True)
    print(f"genesis-custom ({args.agents} agents x {args.tasks} tasks): smallest improvement confirmed at 80% power, "
          f"candidate missing {rule.assumed_loss_share:.0%} of the baseline's right answers "
          f"({rule.assumed_baseline_accuracy:.0%}: the configured assumption):")
    for accuracy in sorted({0.3, rule.assumed_baseline_accuracy, 0.8}):
        print(f" baseline accuracy {accuracy:.0%}:")
        for line in shipped_suite_power(rule, accuracy, args.agents, args.tasks):
            print(line)


if __name__ == "__main__":
    main()
