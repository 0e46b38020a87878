"""The few statistics the report needs, in pure Python: scipy is not a dependency and a paired
t-test plus percentiles do not justify one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Sequence

_TINY = 1e-300


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), by the continued fraction of Numerical Recipes §6.4 (modified Lentz)."""
    if a <= 0 or b <= 0:
        raise ValueError(f"a and b must be > 0 (got {a}, {b})")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1] (got {x})")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast only below the mean; use the symmetry I_x(a,b) = 1 - I_1-x(b,a).
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def _beta_continued_fraction(a: float, b: float, x: float, max_terms: int = 500) -> float:
    def guard(value: float) -> float:
        return value if abs(value) > _TINY else _TINY

    c = 1.0
    d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    fraction = d
    for m in range(1, max_terms + 1):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 / guard(1.0 + even * d)
        c = guard(1.0 + even / c)
        fraction *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 / guard(1.0 + odd * d)
        c = guard(1.0 + odd / c)
        fraction *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return fraction
    raise ArithmeticError(f"incomplete beta I_{x}({a}, {b}) did not converge")


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0 (got {df})")
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The t quantile: the inverse of t_cdf, by bisection on the upper tail (precise near 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1) (got {q})")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    target_tail = 2.0 * (1.0 - q)  # two-sided p of the quantile we want
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > target_tail:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_two_sided_p(middle, df) > target_tail:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class PairedTTest:
    n: int
    mean_difference: float
    ci95: tuple[float, float] | None  # None when n < 2: one pair says nothing about spread
    p_value: float | None


def paired_t_test(candidate: Sequence[float], baseline: Sequence[float]) -> PairedTTest:
    """Two-sided paired t-test of candidate - baseline, with the 95% CI of the mean difference.

    When every difference is the same there is no spread to test against: the CI collapses to
    that difference, and p is 0 if it is non-zero (certain) or 1 if it is zero (no effect).
    """
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in length ({len(candidate)} vs {len(baseline)})")
    if not candidate:
        raise ValueError("a paired t-test needs at least one pair")
    differences = [c - b for c, b in zip(candidate, baseline)]
    n = len(differences)
    mean = fmean(differences)
    if n < 2:
        return PairedTTest(n, mean, None, None)
    spread = stdev(differences)
    # 0.9 - 0.8 and 0.8 - 0.7 differ in the last bits: spread at rounding-noise level is none.
    if spread <= 1e-12 * max(1.0, abs(mean)):
        return PairedTTest(n, mean, (mean, mean), 0.0 if mean != 0.0 else 1.0)
    standard_error = spread / math.sqrt(n)
    margin = t_ppf(0.975, n - 1) * standard_error
    p_value = t_two_sided_p(mean / standard_error, n - 1)
    return PairedTTest(n, mean, (mean - margin, mean + margin), p_value)


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
