"""The engine of bench/sequential.py and of the sequential design's error-control test: the
decision's verdicts for thousands of simulated runs at once (0/1 or quarter-step scores, task
families), under the fixed design and under the sequential rule, the rule the orchestration
runs (issue #28):

- an agent releases its next slice of tasks iff its own verdict is open;
- at each look every verdict that gained pairs is judged over the pairs released so far, at its
  level from shared.sequential.look_alpha_each(fractions, its share of the run's error), where a
  verdict's information fraction is its paired tasks so far / its tasks planned, and the last
  planned look's is 1 (it spends what is left);
- the run stops when every agent's verdict is settled or the last look is done; a pooled verdict
  still open then stays INCONCLUSIVE (nothing is spent at an unplanned stop);
- and (non-binding futility, shared.sequential.go_within_reach) once the pooled verdict is
  settled, an open agent whose chance of GO by its last look under the current trend is below
  FUTILITY (and of NO-GO below FUTILITY_NO_GO) releases no more either: its verdict stays
  INCONCLUSIVE. Without it a candidate with no gain at n = 400 per agent costs 91%
  of the fixed design's calls (half its agents cannot settle NO-GO even at the last look).

Fractions before the last look are rounded to FRACTION_STEP to share the boundary computation
between runs (the level of a look moves by well under 1% of itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shared.config.tables import DecisionConfig
from shared.report.decision import MIN_PAIRED_COVERAGE, settled
from shared.sequential import FUTILITY, futile, go_chance, no_go_chance, look_alpha_each, needed_z, planned_fractions
from shared.stats import SMALLEST_ALPHA, bounds

GO_CODE, NO_GO_CODE = 1, -1
FRACTION_STEP = 0.01
_DECIMALS = 9


@dataclass
class Runs:
    """Simulated runs, each (runs, agents, tasks): the candidate's score as counted (an error
    scores 0), the baseline's, whether the task is paired (the baseline answered, the candidate
    was not halted); `clusters`: each task's family within its agent (None: every task its own);
    `step`: the score grid (1.0: 0/1 scores, 0.25: quarter steps)."""

    candidate: np.ndarray
    baseline: np.ndarray
    paired: np.ndarray
    clusters: np.ndarray | None = None
    step: float = 1.0


def _support(step: float, scale: float = 1.0) -> np.ndarray:
    scores = np.arange(0.0, 1.0 + step / 2, step)
    return np.unique(np.round(scores[:, None] / scale - scores[None, :], _DECIMALS))


def _counts(differences: np.ndarray, use: np.ndarray, values: np.ndarray) -> np.ndarray:
    index = np.searchsorted(values, np.round(differences, _DECIMALS))
    rows = differences.shape[0]
    flat = (np.arange(rows)[:, None] * values.size + index)[use]
    return np.bincount(flat, minlength=rows * values.size).reshape(rows, values.size).astype(float)


def _inflation(differences: np.ndarray, use: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Per row, the clustered test's variance inflation (shared.stats.clustered_score_test: design
    effect x G / (G - 1)); 1 where every used family is a single task; inf below 2 families."""
    rows = differences.shape[0]
    if labels is None:
        return np.ones(rows)
    families = int(labels.max()) + 1
    n = use.sum(axis=1)
    mean = (differences * use).sum(axis=1) / np.maximum(n, 1)
    centred = (differences - mean[:, None]) * use
    flat = np.arange(rows)[:, None] * families + labels[None, :]
    sums = np.bincount(flat.ravel(), weights=centred.ravel(), minlength=rows * families).reshape(rows, families)
    used = np.bincount(flat.ravel(), weights=use.ravel().astype(float), minlength=rows * families).reshape(rows, families)
    groups = (used > 0).sum(axis=1)
    within = (centred ** 2).sum(axis=1)
    effect = np.where(within > 0, np.maximum(1.0, (sums ** 2).sum(axis=1) / np.where(within > 0, within, 1.0)), 1.0)
    clustered = groups < n
    with np.errstate(divide="ignore", invalid="ignore"):
        inflation = np.where(groups >= 2, effect * groups / (groups - 1.0), np.inf)
    return np.where(clustered, inflation, 1.0)


def _widened(alpha, inflation: np.ndarray) -> np.ndarray:
    """The level each row's interval end uses: alpha with z stretched by sqrt(inflation)."""
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), inflation.shape)
    z = np.array([_Z(a) for a in alpha]) * np.sqrt(np.where(np.isfinite(inflation), inflation, 1.0))
    level = 0.5 * np.array([math.erfc(x / math.sqrt(2.0)) for x in z])
    return np.clip(level, SMALLEST_ALPHA, 0.49)


def _Z(alpha: float) -> float:
    from statistics import NormalDist
    return NormalDist().inv_cdf(1.0 - alpha)


def verdicts(candidate: np.ndarray, baseline: np.ndarray, use: np.ndarray, released: np.ndarray, go_alpha,
             no_go_alpha, rule: DecisionConfig, labels: np.ndarray | None = None, step: float = 1.0,
             measures: dict | None = None) -> np.ndarray:
    """GO_CODE / NO_GO_CODE / 0 per row (R, N): the decision's rule over the pairs `use` marks,
    `released` tasks counting for coverage; levels per row or one for all. `measures`, when
    given, receives each row's improvement, threshold, sd of the differences and n."""
    rows = candidate.shape[0]
    n = use.sum(axis=1).astype(float)
    safe = np.where(n > 0, n, 1.0)
    differences = candidate - baseline
    inflation = _inflation(differences, use, labels)
    go_level, no_go_level = _widened(go_alpha, inflation), _widened(no_go_alpha, inflation)
    values = _support(step)
    counts = _counts(differences, use, values)
    counts[n == 0, np.searchsorted(values, 0.0)] = 1.0
    low, high = bounds(values, counts, (go_level, no_go_level))
    improvement = (differences * use).sum(axis=1) / safe
    threshold = rule.min_improvement * (baseline * use).sum(axis=1) / safe
    bar_low = np.full(rows, -1.0)
    if rule.go == "bar":  # the interval of candidate - (1 + bar) x baseline, as decision.bar_margin_low
        scale = 1.0 + rule.min_improvement
        bar_values = _support(step, scale)
        bar_counts = _counts(candidate / scale - baseline, use, bar_values)
        bar_counts[n == 0, np.searchsorted(bar_values, 0.0)] = 1.0
        bar_level = _widened(go_alpha, _inflation(candidate / scale - baseline, use, labels))  # its own families' effect
        bar_low = bounds(bar_values, bar_counts, bar_level)[0] * scale
    if measures is not None:
        spread = np.sqrt(np.maximum(((differences - improvement[:, None]) ** 2 * use).sum(axis=1) / safe, 0.0))
        measures.update(improvement=improvement, threshold=threshold, sd=spread * np.sqrt(inflation), n=n)
    valid = (n > 0) & (n >= MIN_PAIRED_COVERAGE * released) & np.isfinite(inflation)
    go, no_go = settled(low, high, improvement, threshold, bar_low, rule.go)
    return np.where(valid & go, GO_CODE, np.where(valid & no_go, NO_GO_CODE, 0))


def _pooled_labels(runs: Runs) -> np.ndarray | None:
    agents, tasks = runs.candidate.shape[1:]
    if runs.clusters is None:
        return None
    span = int(runs.clusters.max()) + 1
    return (np.arange(agents)[:, None] * span + runs.clusters[None, :]).ravel()


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1)


def fixed_design(runs: Runs, alphas: tuple[float, float], rule: DecisionConfig) -> dict:
    count, agents, tasks = runs.candidate.shape
    per_agent, pooled = alphas
    everyone = np.full(count, tasks)
    by_agent = np.stack([verdicts(runs.candidate[:, a], runs.baseline[:, a], runs.paired[:, a], everyone,
                                  per_agent, per_agent, rule, runs.clusters, runs.step) for a in range(agents)], axis=1)
    overall = verdicts(_flat(runs.candidate), _flat(runs.baseline), _flat(runs.paired), everyone * agents, pooled,
                       pooled, rule, _pooled_labels(runs), runs.step)
    return {"by_agent": by_agent, "overall": overall, "released": np.full((count, agents), tasks),
            "looks": np.ones(count), "stopped_at": np.full((count, agents), 1)}


class _Levels:
    """Each verdict's levels from its fractions so far, shared between runs."""

    def __init__(self, alpha: float):
        self.alpha, self.cache = alpha, {}

    def __call__(self, fractions: tuple[float, ...]) -> tuple[float, float]:
        key = tuple(1.0 if f >= 1.0 else round(f / FRACTION_STEP) * FRACTION_STEP for f in fractions)
        if any(b <= a for a, b in zip(key, key[1:])) or key[0] <= 0.0:
            key = fractions
        if key not in self.cache:
            level = look_alpha_each(key, self.alpha)
            self.cache[key] = (level.go, level.no_go)
        return self.cache[key]


def _judge(rows: np.ndarray, history: list, fraction: np.ndarray, levels: _Levels) -> tuple[np.ndarray, np.ndarray]:
    go, no_go = np.empty(rows.size), np.empty(rows.size)
    for i, r in enumerate(rows):
        history[r].append(float(fraction[r]))
        go[i], no_go[i] = levels(tuple(history[r]))
    return go, no_go


def sequential_design(runs: Runs, alphas: tuple[float, float], rule: DecisionConfig, looks: int,
                      futility: float | None = FUTILITY) -> dict:
    """The sequential rule (the module's docstring), look by look; `futility`: an open agent also
    stops when its chance of GO by the last look is below it (shared.sequential.go_within_reach;
    None: never)."""
    count, agents, tasks = runs.candidate.shape
    per_agent, pooled = _Levels(alphas[0]), _Levels(alphas[1])
    ends = [int(round(f * tasks)) for f in planned_fractions(looks)]
    cumulative = np.cumsum(runs.paired, axis=2)
    by_agent = np.zeros((count, agents), int)
    overall = np.zeros(count, int)
    agent_open = np.ones((count, agents), bool)
    pooled_open = np.ones(count, bool)
    released = np.zeros((count, agents), int)
    pairs = np.zeros((count, agents), int)
    looks_taken = np.zeros(count)
    stopped_at = np.zeros((count, agents), int)
    agent_history = [[[] for _ in range(count)] for _ in range(agents)]
    pooled_history = [[] for _ in range(count)]
    labels = _pooled_labels(runs)
    final_z = needed_z(rule.go, alphas[0], looks)
    for k, end in enumerate(ends, start=1):
        last = k == looks
        releasing = agent_open.copy()  # an agent releases its next slice iff its own verdict is open
        live = releasing.any(axis=1)
        if not live.any():
            break
        looks_taken += live
        released = np.where(releasing, end, released)
        stopped_at = np.where(releasing, k, stopped_at)
        before = pairs.copy()
        out_of_reach = np.zeros((count, agents), bool)
        pairs = np.where(released > 0, np.take_along_axis(cumulative, np.maximum(released - 1, 0)[:, :, None],
                                                          axis=2)[:, :, 0], 0)
        for a in range(agents):
            rows = np.flatnonzero(releasing[:, a] & (pairs[:, a] > before[:, a]))  # a look with no new pair is none
            if rows.size == 0:
                continue
            fraction = np.ones(count) if last else pairs[:, a] / tasks
            go, no_go = _judge(rows, agent_history[a], fraction, per_agent)
            upto = np.arange(tasks)[None, :] < released[rows, a][:, None]
            measures: dict = {}
            code = verdicts(runs.candidate[rows, a], runs.baseline[rows, a], runs.paired[rows, a] & upto,
                            released[rows, a], go, no_go, rule, runs.clusters, runs.step, measures)
            by_agent[rows, a] = code
            reach = np.ones(rows.size, bool)
            if futility is not None and not last:
                trend = (measures["improvement"], measures["threshold"], measures["sd"], measures["n"], fraction[rows])
                reach = ~futile(go_chance(*trend, final_z), no_go_chance(*trend, alphas[0], looks))
            agent_open[rows, a] = (code == 0) & (not last)
            out_of_reach[rows, a] = ~reach
        rows = np.flatnonzero(pooled_open & live & (pairs.sum(axis=1) > before.sum(axis=1)))
        if rows.size:
            fraction = np.ones(count) if last else pairs.sum(axis=1) / (agents * tasks)
            go, no_go = _judge(rows, pooled_history, fraction, pooled)
            mask = _flat(np.arange(tasks)[None, None, :] < released[rows][:, :, None])
            code = verdicts(_flat(runs.candidate[rows]), _flat(runs.baseline[rows]), _flat(runs.paired[rows]) & mask,
                            mask.sum(axis=1), go, no_go, rule, labels, runs.step)
            overall[rows] = code
            pooled_open[rows] = (code == 0) & (not last)
        # futility stops an agent only once the pooled verdict is settled: the pooled one needs its pairs
        agent_open &= ~(out_of_reach & ~pooled_open[:, None])
    return {"by_agent": by_agent, "overall": overall, "released": released, "looks": looks_taken,
            "stopped_at": stopped_at}


def summary(result: dict, usd_per_task: float) -> dict:
    every = np.concatenate([result["overall"][:, None], result["by_agent"]], axis=1)
    released = result["released"].sum(axis=1)
    return {"any GO": float((every == GO_CODE).any(axis=1).mean()),
            "any NO-GO": float((every == NO_GO_CODE).any(axis=1).mean()),
            "overall GO": float((result["overall"] == GO_CODE).mean()),
            "agent GO": float((result["by_agent"] == GO_CODE).mean()),
            "agent NO-GO": float((result["by_agent"] == NO_GO_CODE).mean()),
            "calls": float(2 * released.mean()), "usd": float(usd_per_task * released.mean()),
            "looks": float(result["looks"].mean())}
