"""The sequential design's run-level error control, by simulation on a grid (issue #28): per
agent 50..1,000 tasks, baseline accuracies 0.3..0.9 (agents unequal), ties up to 90%, candidate
and baseline errors, 0/1 and quarter-step scores, task families of 1..8. Every run stops by the
orchestration's rule (bench/sequential_sim.py). With no candidate better, some verdict says GO in
at most 5% of runs; with every candidate at the bar, some verdict says NO-GO in at most 5% (and,
under go = "bar", GO too); the sequential design never pays more than the fixed one. 5% within
three standard errors of the simulation (a grid of many cells)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.sequential_sim import fixed_design, sequential_design, summary
from shared.config.tables import DecisionConfig
from shared.report.decision import error_shares
from tests.support.sequential_grid import grid_runs

RUNS = 600
LIMIT = 0.05 + 3 * math.sqrt(0.05 * 0.95 / RUNS)

GRID = {  # name: (tasks per agent, baseline accuracies, ties, errors, score step, family size)
    "n50 binary unequal ties90": (50, [0.3, 0.55, 0.8], 0.9, 0.03, 1.0, 1),
    "n100 quarter errors10": (100, [0.4, 0.6], 0.5, 0.10, 0.25, 1),
    "n200 binary families8 p0.3..0.9": (200, [0.3, 0.6, 0.88], 0.7, 0.0, 1.0, 8),
    "n400 quarter families4": (400, [0.45, 0.7], 0.8, 0.03, 0.25, 4),
    "n1000 binary ties90 unequal": (1000, [0.35, 0.65, 0.85], 0.9, 0.02, 1.0, 1),
    "n600 binary families2 ties0": (600, [0.5, 0.75], 0.0, 0.05, 1.0, 2),
}


@pytest.mark.statistics
@pytest.mark.parametrize("go", ["better", "bar"])
@pytest.mark.parametrize("cell", list(GRID))
def test_any_false_go_and_any_false_no_go_stay_within_five_percent(cell, go):
    tasks, accuracies, ties, errors, step, family = GRID[cell]
    rule = DecisionConfig(go=go)
    alphas = error_shares(len(accuracies), 1, rule.confidence)
    seed = sum(map(ord, cell + go))
    for scenario, gain in (("none", 0.0), ("bar", rule.min_improvement)):
        runs = grid_runs(np.random.default_rng(seed + int(gain * 100)), RUNS, accuracies, tasks, gain=gain,
                         ties=ties, errors=errors, step=step, family=family)
        sequential = sequential_design(runs, alphas, rule, looks=5)
        rates = summary(sequential, 1.0)
        if scenario == "none" or go == "bar":
            assert rates["any GO"] <= LIMIT, (cell, go, scenario, rates)
        if scenario == "bar":
            assert rates["any NO-GO"] <= LIMIT, (cell, go, scenario, rates)
        fixed = fixed_design(runs, alphas, rule)
        assert (sequential["released"] <= fixed["released"]).all()
