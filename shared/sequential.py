"""The sequential design's statistics: when a comparison may stop early, and the interval it
reports at the stop, with the run's error rates holding whenever it stops.

An error-spending group-sequential design (Lan & DeMets 1983). Each verdict is a one-sided test
with its own share alpha of the run's error (as in the fixed design,
shared.report.decision.error_shares): GO tests "no better than 0 (or the bar)", NO-GO tests "at
least the bar", on the score statistic of shared.stats, and each side spends its alpha with its
own function (Levels: the interval's lower end at the GO side's level, the upper at the NO-GO
side's). GO: O'Brien-Fleming-like, alpha(t) = 2 - 2 Phi(z_{alpha/2} / sqrt(t)): almost nothing
at the first looks, nearly the fixed level at the last, so GO power stays the fixed design's.
NO-GO: Hwang, Shih & DeCani (1990) with gamma 1 (close to Pocock's), alpha (1 - e^{-t}) / (1 -
e^{-1}): a clear loss stops at the first looks. Each boundary is non-binding for the other
verdict: stopping for one verdict only removes chances of the other, so each error stays at most
its alpha at any stopping time.

The boundaries come from the information actually observed at each look (pairs so far / pairs
planned), not a fixed schedule: the crossing probability of look k, given no crossing before,
equals alpha(t_k) - alpha(t_{k-1}), computed by recursive numerical integration of the
standardized statistic's density over the continuation region (Armitage, McPherson & Rowe 1969;
Jennison & Turnbull 2000, ch. 19). The last look spends what is left (t = 1). The repeated
confidence interval at look k is the score interval whose ends hold at 1 - Phi(b_k) of their
side: it covers the true difference at every look at once with at least 1 - 2 alpha.

Futility (go_within_reach): once the pooled verdict is settled, an open agent whose chance of GO
by its last look under the current trend is below FUTILITY and of NO-GO below FUTILITY_NO_GO
(from FUTILITY_FROM of its tasks on) releases no more; its verdict stays INCONCLUSIVE. Non-binding: it makes no verdict and only
removes chances of GO, so neither error rate can grow. Without it, at no gain and 400 tasks per
agent, half the agents cannot settle NO-GO even at their last look and the design pays 91% of
the fixed design's calls for any NO-GO spending (bench/sequential.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Sequence

import numpy as np

from shared.stats import PairedComparison, paired_score_test

LOOKS = 5  # [decision] looks
GO_GAMMA = None  # the GO side's spending: O'Brien-Fleming-like (keeps GO power within 3 pp of fixed)
NO_GO_GAMMA = 1.0  # the NO-GO side's: Hwang-Shih-DeCani (see the module's docstring)
_NORMAL = NormalDist()
_GRID = 241  # points per look (odd, for Simpson's rule): boundaries within 1e-6 of 1201 points
_FLOOR = 1e-15  # the smallest level a look gets (z about 7.9: no stop in practice)
_LOWEST = -10.0  # below this the standardized statistic's density is negligible (< 1e-22)
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
         -0.82215223, 0.17087277)  # Numerical Recipes' erfcc: relative error < 1.2e-7 everywhere


def _upper_tail(x: np.ndarray) -> np.ndarray:
    """P(Z >= x), elementwise (vectorised; relative error < 1.2e-7, far below the boundaries' 1e-4)."""
    y = np.asarray(x, dtype=float) / math.sqrt(2.0)
    a = np.abs(y)
    t = 1.0 / (1.0 + 0.5 * a)
    series = np.zeros_like(a)
    for c in reversed(_ERFC):
        series = series * t + c
    erfc = t * np.exp(-a * a + series)
    return 0.5 * np.where(y >= 0, erfc, 2.0 - erfc)


def spent(t: float, alpha: float, gamma: float | None = None) -> float:
    """The error spent by information fraction t. gamma None: Lan-DeMets O'Brien-Fleming-like,
    2 - 2 Phi(z_{alpha/2} / sqrt(t)); else Hwang-Shih-DeCani, alpha (1 - e^{-gamma t}) / (1 - e^{-gamma})
    (alpha t at gamma 0; gamma -4 is close to O'Brien-Fleming, gamma 1 to Pocock)."""
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return alpha
    if gamma is None:
        return 2.0 * _NORMAL.cdf(-_NORMAL.inv_cdf(1.0 - alpha / 2.0) / math.sqrt(t))
    if gamma == 0.0:
        return alpha * t
    return alpha * math.expm1(-gamma * t) / math.expm1(-gamma)


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


def boundaries(fractions: Sequence[float], alpha: float, gamma: float | None = None) -> list[float]:
    """The one-sided boundaries b_1..b_K on the standardized statistic at these information
    fractions: P(Z_k >= b_k for some k) = alpha(t_K) under no effect, spending by `spent(.., gamma)`.
    Pass the fractions the looks actually reached; a last fraction of 1 spends all of alpha."""
    return list(_boundaries(tuple(_checked(fractions, alpha)), alpha, gamma))


@lru_cache(maxsize=65536)
def _boundaries(ts: tuple[float, ...], alpha: float, gamma: float | None) -> tuple[float, ...]:
    bounds: list[float] = []
    points = weights = density = None  # the sub-density of Z_{k-1} on its continuation region
    previous_t = 0.0
    for t in ts:
        target = spent(t, alpha, gamma) - spent(previous_t, alpha, gamma)
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


@dataclass(frozen=True)
class Levels:
    """A verdict's one-sided levels at a look: `go`, the error allowed at the interval's lower end
    (GO side: the interval above 0, or the bar margin above 0 under go = "bar"), spent
    O'Brien-Fleming-like; `no_go`, at its upper end (NO-GO side), spent Hwang-Shih-DeCani with
    NO_GO_GAMMA. A float is both (the fixed design)."""

    go: float
    no_go: float


def levels(alpha_each: "float | Levels | tuple[float, float]") -> Levels:
    """Any form of a comparison's level as Levels (a tuple: (GO side's, NO-GO side's))."""
    if isinstance(alpha_each, Levels):
        return alpha_each
    if isinstance(alpha_each, tuple):
        return Levels(float(alpha_each[0]), float(alpha_each[1]))
    return Levels(float(alpha_each), float(alpha_each))


def interval_levels(alpha_each: "float | Levels | tuple[float, float]") -> "float | tuple[float, float]":
    """What shared.stats takes as `alpha_each`: one float when both sides are alike, else
    (lower end's, upper end's) = (GO side's, NO-GO side's)."""
    level = levels(alpha_each)
    return level.go if level.go == level.no_go else (level.go, level.no_go)


def look_alpha(fractions: Sequence[float], alpha: float, gamma: float | None = None) -> float:
    """The one-sided level of the latest look's boundary, 1 - Phi(b_k): the repeated confidence
    interval's end holds at 1 minus this, and a verdict at this look is the fixed rule's at
    this level."""
    b = boundaries(fractions, alpha, gamma)[-1]  # +inf when nothing is spent yet: no stop possible
    return max(_FLOOR, 0.0 if math.isinf(b) else float(_upper_tail(np.array([b]))[0]))


def repeated_interval(candidate: Sequence[float], baseline: Sequence[float], fractions: Sequence[float],
                      alpha: float) -> PairedComparison:
    """The comparison at the latest of these looks: the score test and its repeated confidence
    interval, each end holding at its side's level at every look at once (Jennison & Turnbull ch. 9)."""
    return paired_score_test(candidate, baseline, alpha_each=interval_levels(look_alpha_each(fractions, alpha)))


def look_alpha_each(fractions: Sequence[float], alpha: float) -> Levels:
    """What shared.report.decision.compare takes as `alpha_each` for a verdict at the latest of
    these looks (a verdict's share `alpha` of the run's error, spent by the design, each side
    with its own spending): the one seam between the design's boundaries and the decision's rule."""
    return Levels(look_alpha(fractions, alpha, GO_GAMMA), look_alpha(fractions, alpha, NO_GO_GAMMA))


FUTILITY = 0.05  # an agent whose chance of GO by its last look falls below this stops (INCONCLUSIVE)
FUTILITY_NO_GO = 0.5  # ... and its chance of NO-GO below this
FUTILITY_FROM = 0.6  # ... from this information fraction on (earlier trends are too noisy: GO power)


def go_chance(improvement, threshold, sd, n, fraction, needed_z=0.0):
    """The chance of GO by the last look if the current trend holds (conditional power under the
    estimate: Lan, Simon & Halperin 1982; Jennison & Turnbull 2000, ch. 10), for one comparison
    or numpy arrays of many: W = (improvement - threshold) / (sd / sqrt(n)) is the statistic of
    "the bar is met" at information fraction t; at the end GO needs it above `needed_z` (0 under
    go = "better": the estimate meets the bar; the final GO z under "bar"), and its B-value
    W sqrt(t) drifting at W / sqrt(t) reaches that with probability
    Phi((W / sqrt(t) - needed_z) / sqrt(1 - t)). 1 at the last look, without pairs, and before
    FUTILITY_FROM.

    Stopping when this is below FUTILITY is a non-binding futility stop: it only removes chances
    of GO and makes no verdict, so neither error rate can grow (the boundaries are computed
    without it); what it costs is a little power, measured by bench/sequential.py."""
    improvement, threshold, sd, n, fraction = (np.asarray(x, dtype=float) for x in (improvement, threshold, sd, n, fraction))
    spread = np.maximum(sd, 1.0 / np.sqrt(np.maximum(n, 1.0))) / np.sqrt(np.maximum(n, 1.0))  # one discordant pair at least
    w = (improvement - threshold) / spread
    t = np.clip(fraction, 1e-9, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (w / np.sqrt(t) - needed_z) / np.sqrt(np.maximum(1.0 - t, 1e-12))
    chance = 1.0 - _upper_tail(z)
    chance = np.where((t >= 1.0) | (n <= 0) | (t < FUTILITY_FROM), 1.0, chance)
    return float(chance) if chance.ndim == 0 else chance


def no_go_chance(improvement, threshold, sd, n, fraction, alpha: float, looks: int = LOOKS):
    """The chance of NO-GO by the last look if the current trend holds (as go_chance, for the
    statistic of "below the bar" against the planned last look's NO-GO boundary)."""
    z = boundaries(planned_fractions(looks), alpha, NO_GO_GAMMA)[-1]
    return go_chance(-np.asarray(improvement, dtype=float), -np.asarray(threshold, dtype=float), sd, n, fraction, z)


def needed_z(go: str, alpha: float, looks: int = LOOKS) -> float:
    """What go_chance asks of the final statistic: 0 under "better", the planned last look's GO
    z under "bar" (the bar's interval must clear it)."""
    return 0.0 if go == "better" else boundaries(planned_fractions(looks), alpha, GO_GAMMA)[-1]


def go_within_reach(row: dict, fraction: float, go: str, alpha: float, looks: int = LOOKS) -> bool:
    """Whether an open verdict's agent may release its next slice (shared.report.decision.compare's
    row at this look, its information fraction, the run's GO rule, the verdict's share of the
    error): False when its chance of GO by the last look is below FUTILITY and of NO-GO below
    FUTILITY_NO_GO. The rule: an agent
    releases its next slice iff its own verdict is open and (this is True or the pooled verdict
    is still open: the pooled verdict needs its pairs)."""
    if not row.get("n") or row.get("improvement_abs") is None:
        return True
    measures = (row["improvement_abs"], row["threshold_abs"], row["sd_difference"], row["n"], fraction)
    return not futile(go_chance(*measures, needed_z(go, alpha, looks)), no_go_chance(*measures, alpha, looks))


def futile(go_chance_, no_go_chance_):
    """Stop for futility: GO out of reach and NO-GO unlikely too (a likely NO-GO is worth its pairs)."""
    return (np.asarray(go_chance_) < FUTILITY) & (np.asarray(no_go_chance_) < FUTILITY_NO_GO)
