"""The statistics the decision rests on: a score test of the mean paired difference
(candidate - baseline) and the interval got by inverting that same test.

Why this method: scores lie in [0, 1] (mostly 0/1, some quarter steps or judge grades), a
comparison may have 5-20 paired tasks, and a fine-tune mostly agrees with its base, so most
differences are 0. The test of "mean difference = delta" divides the observed gap by the spread
the differences would have if delta were true: the maximum-likelihood distribution of the
differences under that constraint, over the values observed plus the two ends -1 and +1. For 0/1
scores (differences -1, 0, +1) this is exactly Tango's (1998) score test for paired proportions;
for fractional scores it is the same construction on their values. Because the spread is taken
under the tested value, 20 ties still leave room for a +/-16 pp gain: the interval never
collapses to a point the data cannot support.

A continuity correction of half a task (the sum of differences is shifted half a unit toward
the tested value) keeps the coverage at or above the nominal level where the plain score
interval dips (tie-heavy data, n about 100: 0.936 without it, `bench/coverage.py --continuity 0
--quick`). bench/coverage.py prints the
coverage over n = 5..1000, discordance 0-40%, differences -0.2..+0.2, 0/1 and quarter steps.

One formula at every n (no exact/Monte Carlo/normal switch, so nothing jumps as n grows), one
function for the p-value and the interval: each end of the interval is where the one-sided
p-value crosses its level, so the interval lies above 0 exactly when the p-value says so.
Vectorised with numpy over many samples at once (the benches test thousands).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist, fmean
from typing import Sequence

import numpy as np

CONTINUITY = 0.5  # half a task, on the sum of the differences
ENDS = (-1.0, 1.0)  # where a difference of two scores in [0, 1] can lie
_INNER = 36  # bisections for the constrained maximum likelihood (t in (0, 1))
_OUTER = 60  # at most, steps for an interval end (Illinois; typically 10-15)
_WIDTH = 1e-10  # an interval end is known to this (far below the report's rounding)
_DECIMALS = 12  # differences are grouped on this grid, so 0.9 - 0.8 equals 0.8 - 0.7
_EDGE = 1e-12
_NORMAL = NormalDist()


def support(differences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct differences with -1 and +1 always present, and how often each occurs."""
    rounded = np.round(np.asarray(differences, dtype=float), _DECIMALS)
    if rounded.size and (rounded.min() < -1.0 - 1e-9 or rounded.max() > 1.0 + 1e-9):
        raise ValueError("a paired difference lies outside [-1, 1]: scores must be in [0, 1]")
    values = np.union1d(np.clip(rounded, -1.0, 1.0), np.array(ENDS))
    counts = np.zeros(values.size)
    np.add.at(counts, np.searchsorted(values, np.clip(rounded, -1.0, 1.0)), 1.0)
    return values, counts


def null_variance(values: np.ndarray, counts: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Variance of one difference under the most likely distribution with mean `delta`.

    values: (k,) sorted, values[0] = -1 and values[-1] = +1. counts: (R, k) observed counts
    (floats allowed: a population's shares times n). delta: (R,) in (-1, 1).
    The maximum has p_j = c_j / (n + nu (v_j - delta)) on the observed values, nu solving
    sum_j p_j = 1 between 0 and the nu at which the far end's weight would turn negative. When
    no such nu exists, the mass left over sits at the end opposite the data (-1 when the
    observed mean exceeds delta): that is how ties still allow a gain. For values -1, 0, +1
    the maximum has a closed form (Tango's), which this reproduces."""
    if values.size == 3 and values[1] == 0.0:
        return _tango_variance(counts, delta)
    rows = np.arange(counts.shape[0])
    n = counts.sum(axis=1)
    deviation = values[None, :] - delta[:, None]
    side = np.sign(counts @ values - n * delta)  # +1: the data lie above delta, the far end is -1
    far = np.where(side > 0, 0, values.size - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        nu_end = np.where(side != 0, n / (delta - values[far]), 0.0)
    scaled = nu_end[:, None] * deviation  # nu = t * nu_end, t in [0, 1]
    seen = counts > 0

    def weights(t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(seen, counts / (n[:, None] + t[:, None] * scaled), 0.0)

    # The total weight is 1 at t = 0, falls below 1, and (convex in t) rises back through 1
    # once at most: bisect for that crossing.
    leftover = (~seen[rows, far]) & (side != 0) & (weights(np.ones_like(n)).sum(axis=1) <= 1.0)
    low, high = np.zeros_like(n), np.ones_like(n)
    for _ in range(_INNER):
        middle = (low + high) / 2.0
        below = weights(middle).sum(axis=1) < 1.0
        low, high = np.where(below, middle, low), np.where(below, high, middle)
    p = weights(np.where(leftover, 1.0, (low + high) / 2.0))
    extra = np.where(leftover, np.clip(1.0 - p.sum(axis=1), 0.0, 1.0), 0.0)
    variance = (p * deviation**2).sum(axis=1) + extra * deviation[rows, far] ** 2
    return np.where(side != 0, variance, (counts * deviation**2).sum(axis=1) / np.maximum(n, 1.0))


def _tango_variance(counts: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Tango (1998): with c losses, b wins, the weight at -1 under mean delta is the positive
    root of 2n p^2 + (-(b + c) + (2n - b + c) delta) p - c delta (1 - delta) = 0."""
    losses, wins = counts[:, 0], counts[:, 2]
    n = counts.sum(axis=1)
    a, b = 2.0 * n, -(wins + losses) + (2.0 * n - wins + losses) * delta
    c = -losses * delta * (1.0 - delta)
    at_minus_one = (-b + np.sqrt(np.maximum(b * b - 4.0 * a * c, 0.0))) / (2.0 * a)
    return 2.0 * at_minus_one + delta * (1.0 - delta)


def statistic(values: np.ndarray, counts: np.ndarray, delta: np.ndarray,
              continuity: float = CONTINUITY) -> np.ndarray:
    """Score statistic for "mean difference = delta": positive when the data lie above it."""
    delta = np.clip(delta, ENDS[0] + _EDGE, ENDS[1] - _EDGE)
    n = counts.sum(axis=1)
    gap = counts @ values - n * delta
    corrected = np.sign(gap) * np.maximum(np.abs(gap) - continuity, 0.0)
    spread = np.sqrt(np.maximum(n * null_variance(values, counts, delta), 1e-300))
    return corrected / spread


def upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z, accurate far into the tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def ends(alpha_each) -> tuple[float, float]:
    """(lower end's, upper end's) error from an `alpha_each`: one float for both ends, or a pair
    (a sequential look's GO and NO-GO levels, shared.sequential.Levels); each in (0, 0.5)."""
    low, high = (alpha_each, alpha_each) if np.ndim(alpha_each) == 0 else tuple(alpha_each)
    for level in (low, high):
        if not 0.0 < level < 0.5:
            raise ValueError(f"the error allowed at each end must be in (0, 0.5) (got {alpha_each})")
    return float(low), float(high)


SMALLEST_ALPHA = 1e-15  # z = 7.94: a smaller error (an early look, widened for families) is taken as this


def _quantiles(alpha, rows: int) -> np.ndarray:
    """z_{1 - alpha} for every row: alpha one float or one per row (at least SMALLEST_ALPHA, where
    1 - alpha still differs from 1)."""
    if np.ndim(alpha) == 0:
        return np.full(rows, _NORMAL.inv_cdf(1.0 - max(float(alpha), SMALLEST_ALPHA)))
    return np.array([_NORMAL.inv_cdf(1.0 - max(float(a), SMALLEST_ALPHA)) for a in np.asarray(alpha, dtype=float)])


def bounds(values: np.ndarray, counts: np.ndarray, alpha_each,
           continuity: float = CONTINUITY) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound, each holding with probability >= 1 - its error: the deltas where
    the one-sided test's statistic crosses z. `alpha_each`: one error for both ends, or (lower
    end's, upper end's), each a float or one per row. counts: (R, k); returns two (R,) arrays."""
    rows = counts.shape[0]
    low_alpha, high_alpha = alpha_each if isinstance(alpha_each, tuple) else (alpha_each, alpha_each)
    z = np.concatenate([_quantiles(low_alpha, rows), _quantiles(high_alpha, rows)])
    n = counts.sum(axis=1)
    mean = counts @ values / n
    both = np.vstack([counts, counts])
    low_end, high_end = np.full(rows, ENDS[0]), np.full(rows, ENDS[1])
    # Search each end between the estimate (never rejected) and its side's limit of [-1, 1].
    accepted = np.concatenate([mean, mean])
    rejected = np.concatenate([low_end, high_end])
    sign = np.concatenate([np.ones(rows), -np.ones(rows)])  # lower: stat <= z; upper: stat >= -z
    def excess(delta: np.ndarray) -> np.ndarray:
        """> 0 where the test rejects delta; squashed to (-1, 1), since the statistic explodes
        toward the ends of [-1, 1] and would stall the secant steps."""
        over = sign * statistic(values, both, delta, continuity) - z
        return over / (1.0 + np.abs(over))

    excess_rejected = excess(rejected)
    at_limit = excess_rejected <= 0
    accepted = np.where(at_limit, rejected, accepted)  # nothing to search for
    excess_accepted = np.where(at_limit, excess_rejected, -z / (1.0 + z))  # the statistic is 0 at the estimate
    stale = np.zeros(2 * rows)  # +1: the rejected end stayed last step, -1: the accepted end
    # Illinois (regula falsi halving an end's value when it stays twice in a row): about a
    # dozen steps where bisection takes forty; both ends stay a bracket, the accepted one is
    # returned.
    for _ in range(_OUTER):
        with np.errstate(divide="ignore", invalid="ignore"):
            trial = accepted - excess_accepted * (accepted - rejected) / (excess_accepted - excess_rejected)
        trial = np.where(np.isfinite(trial) & (np.abs(trial - accepted) < np.abs(rejected - accepted)),
                         trial, (accepted + rejected) / 2.0)
        value = excess(trial)
        keep = value <= 0
        excess_rejected = np.where(keep & (stale > 0), excess_rejected / 2.0, excess_rejected)
        excess_accepted = np.where(~keep & (stale < 0), excess_accepted / 2.0, excess_accepted)
        stale = np.where(keep, 1.0, -1.0)
        accepted, excess_accepted = np.where(keep, trial, accepted), np.where(keep, value, excess_accepted)
        rejected, excess_rejected = np.where(keep, rejected, trial), np.where(keep, excess_rejected, value)
        if np.all(np.abs(rejected - accepted) < _WIDTH):
            break
    return accepted[:rows], accepted[rows:]


@dataclass(frozen=True)
class PairedComparison:
    """The test and interval of one comparison. `alpha_each`: the error allowed at each end
    (for a plain two-sided `confidence` interval, (1 - confidence) / 2)."""

    n: int
    mean_difference: float
    sd_difference: float
    ci: tuple[float, float] | None  # None when there is no pair
    p_above_zero: float | None  # one-sided: "the candidate is no better", small when it is
    p_below_zero: float | None  # one-sided: "the candidate is no worse"
    alpha_each: float | tuple[float, float]  # one error for both ends, or (lower end's, upper end's)
    method: str = "score"

    @property
    def p_two_sided(self) -> float | None:
        if self.p_above_zero is None or self.p_below_zero is None:
            return None
        return min(1.0, 2.0 * min(self.p_above_zero, self.p_below_zero))


def paired_score_test(candidate: Sequence[float], baseline: Sequence[float], *, alpha_each) -> PairedComparison:
    """Score test of mean(candidate - baseline) and the interval whose ends each hold with
    probability 1 - alpha_each (a float, or (lower end's, upper end's)). Scores must lie in [0, 1]."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in length ({len(candidate)} vs {len(baseline)})")
    alpha_each = ends(alpha_each) if np.ndim(alpha_each) else ends(alpha_each)[0]
    differences = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    if differences.size == 0:
        return PairedComparison(0, 0.0, 0.0, None, None, None, alpha_each)
    values, counts = support(differences)
    row = counts[None, :]
    low, high = bounds(values, row, alpha_each)
    at_zero = float(statistic(values, row, np.zeros(1))[0])
    return PairedComparison(
        n=int(differences.size),
        mean_difference=float(differences.mean()),
        sd_difference=float(differences.std()),
        ci=(round(float(low[0]), 9), round(float(high[0]), 9)),
        p_above_zero=upper_tail(at_zero),
        p_below_zero=upper_tail(-at_zero),
        alpha_each=alpha_each,
    )


def two_sided(candidate: Sequence[float], baseline: Sequence[float], confidence: float) -> PairedComparison:
    """The plain `confidence` interval and two-sided p-value (producer compare: no decision)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    return paired_score_test(candidate, baseline, alpha_each=(1.0 - confidence) / 2.0)


def mean_or_none(values: Sequence[float]) -> float | None:
    return fmean(values) if values else None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's
    default, Hyndman & Fan type 7)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100] (got {q})")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def clustered_score_test(candidate: Sequence[float], baseline: Sequence[float], clusters: Sequence,
                         *, alpha_each) -> PairedComparison:
    """The score test and interval of mean(candidate - baseline) when tasks come in families
    (`clusters`, one label per pair) whose results move together: the score statistic divided by
    the square root of the observed design effect (Rao & Scott 1992: the families' variance of
    the mean over the independent tasks' one, times G / (G - 1) for G families). Same interval
    construction, so it never collapses to a point and matches paired_score_test when the
    families are single tasks (the decision then uses paired_score_test itself). Fewer than 2
    families: nothing can be said (the interval is [-1, 1])."""
    if len(candidate) != len(baseline) or len(candidate) != len(clusters):
        raise ValueError("candidate, baseline and clusters differ in length")
    alpha_each = ends(alpha_each) if np.ndim(alpha_each) else ends(alpha_each)[0]
    differences = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    families = len(set(clusters))
    if differences.size == 0 or families < 2:
        plain = paired_score_test(candidate, baseline, alpha_each=alpha_each)
        ci = None if differences.size == 0 else (-1.0, 1.0)
        p = None if differences.size == 0 else 0.5
        return PairedComparison(plain.n, plain.mean_difference, plain.sd_difference, ci, p, p, alpha_each,
                                method="clustered score")
    inflation = design_effect(differences, clusters) * families / (families - 1.0)

    def widened(level: float) -> float:
        return max(SMALLEST_ALPHA, upper_tail(_NORMAL.inv_cdf(1.0 - level) * math.sqrt(inflation)))

    test = paired_score_test(candidate, baseline, alpha_each=tuple(map(widened, alpha_each)) if isinstance(
        alpha_each, tuple) else widened(alpha_each))
    values, counts = support(differences)
    at_zero = float(statistic(values, counts[None, :], np.zeros(1))[0]) / math.sqrt(inflation)
    return PairedComparison(n=test.n, mean_difference=test.mean_difference, sd_difference=test.sd_difference,
                            ci=test.ci, p_above_zero=upper_tail(at_zero), p_below_zero=upper_tail(-at_zero),
                            alpha_each=alpha_each, method="clustered score")


def design_effect(differences: Sequence[float], clusters: Sequence) -> float:
    """How much the families inflate the variance of the mean difference over independent tasks
    (>= 1 by convention here: a family never counts for more than its tasks)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return 1.0
    labels = {label: i for i, label in enumerate(dict.fromkeys(clusters))}
    index = np.array([labels[label] for label in clusters])
    centred = d - d.mean()
    within = float((centred ** 2).sum())
    if within <= 0.0:
        return 1.0
    summed = np.bincount(index, weights=centred, minlength=len(labels))
    return max(1.0, float((summed ** 2).sum()) / within)
