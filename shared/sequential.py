"""The sequential design's statistics: when a comparison may stop early, and the interval it
reports at the stop, with the run's error rates holding whenever it stops.

An error-spending group-sequential design (Lan & DeMets 1983) with O'Brien-Fleming-like spending,
alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t)): almost nothing is spent at the first looks (so an
early stop needs overwhelming evidence) and nearly the fixed design's level is left for the last.
Each verdict is a one-sided test with its own share alpha of the run's error (as in the fixed
design, shared.report.decision.error_shares): GO tests "no better than 0 (or the bar)", NO-GO
tests "at least the bar", and both use the same boundaries (by symmetry) on the score statistic
of shared.stats. Each boundary is non-binding for the other verdict: stopping for one verdict only
removes chances of the other, so each error stays at most its alpha at any stopping time.

The boundaries come from the information actually observed at each look (pairs so far / pairs
planned), not a fixed schedule: the crossing probability of look k, given no crossing before,
equals alpha(t_k) - alpha(t_{k-1}), computed by recursive numerical integration of the
standardized statistic's density over the continuation region (Armitage, McPherson & Rowe 1969;
Jennison & Turnbull 2000, ch. 19). The last look spends what is left (t = 1). The repeated
confidence interval at look k is the score interval whose ends each hold at 1 - Phi(b_k): it
covers the true difference at every look at once with at least 1 - 2 alpha.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist
from typing import Sequence

import numpy as np

from shared.stats import PairedComparison, paired_score_test

LOOKS = 5  # [decision] looks
_NORMAL = NormalDist()
_GRID = 1201  # points per look (odd, for Simpson's rule): boundaries to about 1e-4
_LOWEST = -10.0  # below this the standardized statistic's density is negligible (< 1e-22)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _upper_tail(x: np.ndarray) -> np.ndarray:
    """P(Z >= x), elementwise."""
    return 0.5 * _erfc(np.asarray(x, dtype=float) / math.sqrt(2.0)).astype(float)


def spent(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-like spending: the error spent by information fraction t."""
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return alpha
    return 2.0 * _NORMAL.cdf(-_NORMAL.inv_cdf(1.0 - alpha / 2.0) / math.sqrt(t))


def planned_fractions(looks: int = LOOKS) -> list[float]:
    """Equally spaced information fractions: 1/K, 2/K, ..., 1."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1 (got {looks})")
    return [(k + 1) / looks for k in range(looks)]


def _simpson(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid points and Simpson weights on [low, high]."""
    points = np.linspace(low, high, _GRID)
    weights = np.ones(_GRID)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return points, weights * (high - low) / (3.0 * (_GRID - 1))


def _checked(fractions: Sequence[float], alpha: float) -> list[float]:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5) (got {alpha})")
    ts = [float(t) for t in fractions]
    if not ts or any(not 0.0 < t <= 1.0 for t in ts) or any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"information fractions must increase within (0, 1] (got {ts})")
    return ts


def boundaries(fractions: Sequence[float], alpha: float) -> list[float]:
    """The one-sided boundaries b_1..b_K on the standardized statistic at these information
    fractions: P(Z_k >= b_k for some k) = alpha(t_K) under no effect. Pass the fractions the looks
    actually reached; a last fraction of 1 spends all of alpha."""
    return list(_boundaries(tuple(_checked(fractions, alpha)), alpha))


@lru_cache(maxsize=4096)
def _boundaries(ts: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    bounds: list[float] = []
    points = weights = density = None  # the sub-density of Z_{k-1} on its continuation region
    previous_t = 0.0
    for t in ts:
        target = spent(t, alpha) - spent(previous_t, alpha)
        if density is None:
            def crossing(b: float) -> float:
                return float(_upper_tail(np.array([b]))[0])
        else:
            step = math.sqrt(t - previous_t)
            scaled = points * math.sqrt(previous_t)
            mass = weights * density

            def crossing(b: float) -> float:
                return float(mass @ _upper_tail((b * math.sqrt(t) - scaled) / step))
        b = _solve(crossing, target)
        bounds.append(b)
        new_points, new_weights = _simpson(_LOWEST, b)
        if density is None:
            density = np.exp(-new_points ** 2 / 2.0) / math.sqrt(2.0 * math.pi)
        else:
            # f_k(z) = sum_u f_{k-1}(u) w(u) sqrt(t_k)/step phi((z sqrt(t_k) - u sqrt(t_{k-1})) / step)
            gap = (new_points[:, None] * math.sqrt(t) - scaled[None, :]) / step
            kernel = np.exp(-gap ** 2 / 2.0) / math.sqrt(2.0 * math.pi) * math.sqrt(t) / step
            density = kernel @ mass
        points, weights, previous_t = new_points, new_weights, t
    return tuple(bounds)


def _solve(crossing, target: float) -> float:
    """The b with crossing(b) = target (crossing falls as b grows); +inf when nothing is spent."""
    if target <= 0.0:
        return math.inf
    low, high = _LOWEST, 40.0  # crossing(-10): all that is left; crossing(40): nothing
    for _ in range(40):  # 50 / 2^40: far below the 1e-4 the grid gives
        middle = (low + high) / 2.0
        low, high = (middle, high) if crossing(middle) > target else (low, middle)
    return (low + high) / 2.0


def look_alpha(fractions: Sequence[float], alpha: float) -> float:
    """The one-sided level of the latest look's boundary, 1 - Phi(b_k): the repeated confidence
    interval's ends each hold at 1 minus this, and a verdict at this look is the fixed rule's at
    this level."""
    b = boundaries(fractions, alpha)[-1]
    return 0.0 if math.isinf(b) else float(_upper_tail(np.array([b]))[0])


def repeated_interval(candidate: Sequence[float], baseline: Sequence[float], fractions: Sequence[float],
                      alpha: float) -> PairedComparison:
    """The comparison at the latest of these looks: the score test and its repeated confidence
    interval, each end holding at 1 - alpha at every look at once (Jennison & Turnbull ch. 9)."""
    return paired_score_test(candidate, baseline, alpha_each=look_alpha(fractions, alpha))


def look_alpha_each(fractions: Sequence[float], alpha: float):
    """What shared.report.decision.compare takes as `alpha_each` for a verdict at the latest of
    these looks (a verdict's share `alpha` of the run's error, spent by the design): the one
    seam between the design's boundaries and the decision's rule."""
    return look_alpha(fractions, alpha)
