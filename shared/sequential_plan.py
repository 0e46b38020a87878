"""Before paying: what the sequential design is expected to release of an agent's tasks, and
how often it says GO or NO-GO, for a true difference (submit --dry-run shows it under no gain,
at the bar and at the design alternative, beside the fixed design's).

A small seeded simulation of the comparison's statistic on the design's own boundaries
(shared.sequential: GO side O'Brien-Fleming-like, NO-GO side Hwang-Shih-DeCani, the futility
stop from FUTILITY_FROM, taking the pooled verdict as settled), in the normal approximation: at look k the mean paired difference is
the true one plus Brownian noise of variance sigma^2 / n_k, sigma^2 that of one paired
difference when the candidate misses `loss_share` of the baseline's right answers and fixes
enough of its misses to make the difference (2 L p + delta - delta^2). Every slice is taken as
paired. PATHS paths per figure: the share released is known to about 0.5 points.
"""

from __future__ import annotations

import math

import numpy as np

from shared.sequential import (GO_GAMMA, LOOKS, NO_GO_GAMMA, boundaries, futile, go_chance, needed_z, no_go_chance,
                               planned_fractions)

PATHS = 4000


def difference_sd(baseline_accuracy: float, difference: float, loss_share: float) -> float:
    """The sd of one paired difference (-1, 0, +1) with P(-1) = L p and P(+1) = L p + delta."""
    losses = loss_share * baseline_accuracy
    wins = max(losses + difference, 0.0)
    return math.sqrt(max(wins + losses - difference ** 2, 1e-9))


def expected_stop(tasks: int, baseline_accuracy: float, difference: float, *, min_improvement: float, go: str,
                  alpha: float, looks: int = LOOKS, loss_share: float = 0.05, seed: int = 0) -> dict:
    """For an agent of `tasks` tasks whose candidate is truly `difference` (absolute) better:
    the expected share of its tasks released (`share`), P(GO) and P(NO-GO) by its last look,
    and the expected looks, at its verdict's share `alpha` of the run's error."""
    if tasks <= 0:
        return {"share": 0.0, "go": 0.0, "no_go": 0.0, "looks": 0.0}
    looks = max(1, min(looks, tasks))
    fractions = planned_fractions(looks)
    sizes = np.array([max(1, int(round(f * tasks))) for f in fractions], dtype=float)
    go_bound = np.array(boundaries(fractions, alpha, GO_GAMMA))
    no_go_bound = np.array(boundaries(fractions, alpha, NO_GO_GAMMA))
    threshold = min_improvement * baseline_accuracy
    sd = difference_sd(baseline_accuracy, difference, loss_share)
    final_z = needed_z(go, alpha, looks)
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(PATHS, looks)) * np.sqrt(np.diff(np.concatenate([[0.0], sizes])))
    estimate = difference + sd * np.cumsum(steps, axis=1) / sizes  # the mean difference at each look
    released = np.full(PATHS, float(tasks))
    stopped_at = np.full(PATHS, looks)
    outcome = np.zeros(PATHS, int)
    running = np.ones(PATHS, bool)
    for k in range(looks):
        se = sd / math.sqrt(sizes[k])
        d = estimate[:, k]
        if go == "bar":
            go_now = (d - threshold) / se > go_bound[k]
        else:
            go_now = (d / se > go_bound[k]) & (d >= threshold)
        no_go_now = ~go_now & ((threshold - d) / se > no_go_bound[k])
        settled = running & (go_now | no_go_now)
        outcome[settled & go_now] = 1
        outcome[settled & no_go_now] = -1
        stop = settled.copy()
        if k < looks - 1:
            trend = (d, threshold, sd, sizes[k], fractions[k])
            stop |= running & futile(go_chance(*trend, final_z), no_go_chance(*trend, alpha, looks))
        released[stop] = sizes[k]
        stopped_at[stop] = k + 1
        running &= ~stop
    return {"share": float(released.mean() / tasks), "go": float((outcome == 1).mean()),
            "no_go": float((outcome == -1).mean()), "looks": float(stopped_at.mean())}
