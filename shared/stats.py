"""The statistics the decision rests on: a paired sign-flip (randomization) test of candidate
minus baseline, and the confidence interval got by inverting that same test.

Why this method: scores are in [0, 1], mostly 0/1, some fractional, and a comparison may have
only 10-20 paired tasks. Under "the two models are equally good" each task's two scores are
exchangeable, so flipping the sign of any difference is as likely as not: the sign-flip test
needs no normality and no large n, and is exact. For 0/1 scores it is the exact McNemar (sign)
test. The interval is every shift delta the same test does not reject, so the interval lies
above zero exactly when the test rejects "no difference" and the estimate is positive: the
p-value, the interval and the decision can never contradict each other.

Exact by enumeration whenever the differences take few distinct values (always for 0/1 scores:
differences in {-1, 0, 1}, at any n); otherwise a seeded Monte Carlo over random sign vectors,
so a report rebuilt from the same rows gives the same numbers; from LARGE_N pairs on, the
randomization distribution's normal limit (same mean and variance), which is as precise as the
Monte Carlo there and costs nothing. numpy because the interval evaluates the test at ~100
shifts over up to 250,000 sign patterns per comparison (bench/report.py prints the pure-Python
cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist, fmean
from typing import Sequence

import numpy as np

EXACT_LIMIT = 250_000  # sign patterns (grouped by distinct difference) enumerated exactly
DEFAULT_RESAMPLES = 20_000  # Monte Carlo sign vectors otherwise
LARGE_N = 300  # from here the randomization distribution is normal to within Monte Carlo noise
_CHUNK = 2_000  # sign vectors drawn at a time (bounds memory at large n)
DEFAULT_SEED = 20261201
_BISECTIONS = 50


@dataclass(frozen=True)
class PairedComparison:
    n: int
    mean_difference: float
    sd_difference: float
    ci: tuple[float, float] | None  # None when there is no pair
    p_value: float | None
    confidence: float
    method: str  # exact | monte-carlo (seeded, `resamples` sign vectors) | normal (n >= LARGE_N)

    @property
    def exact(self) -> bool:
        return self.method == "exact"


@dataclass(frozen=True)
class _NullDistribution:
    """Every sign pattern (or a seeded sample of them) as two sums and a weight, so testing any
    shift delta costs one vectorised pass: sum(s_i * (d_i - delta)) = S - delta * T."""

    signed_sums: np.ndarray  # S = sum(s_i * d_i)
    sign_totals: np.ndarray  # T = sum(s_i)
    weights: np.ndarray  # probability of each pattern under the null
    total: float  # sum(d_i)
    n: int

    def p_value(self, delta: float) -> float:
        observed = abs(self.total - self.n * delta)
        null = np.abs(self.signed_sums - delta * self.sign_totals)
        tolerance = 1e-9 * max(1.0, observed)
        return float(min(1.0, self.weights[null >= observed - tolerance].sum()))


def _grouped_exact(values: np.ndarray, counts: np.ndarray) -> _NullDistribution | None:
    """With m_j differences equal to v_j, only how many of them keep their sign matters:
    K_j ~ Binomial(m_j, 1/2) independently, contributing v_j * (2 K_j - m_j)."""
    if math.prod(int(m) + 1 for m in counts) > EXACT_LIMIT:
        return None
    signed_sums = np.zeros(1)
    sign_totals = np.zeros(1)
    weights = np.ones(1)
    for value, m in zip(values, counts):
        m = int(m)
        kept = np.arange(m + 1)
        net = 2 * kept - m
        pmf = np.array([math.comb(m, k) for k in kept], dtype=float) / 2.0**m
        signed_sums = (signed_sums[:, None] + value * net[None, :]).ravel()
        sign_totals = (sign_totals[:, None] + net[None, :]).ravel()
        weights = (weights[:, None] * pmf[None, :]).ravel()
    n = int(counts.sum())
    return _NullDistribution(signed_sums, sign_totals, weights, float(values @ counts), n)


def _monte_carlo(differences: np.ndarray, resamples: int, seed: int) -> _NullDistribution:
    """The observed pattern counts as one of resamples + 1 (a valid Monte Carlo p-value).
    Signs come from random bits, kept = 1: sum(s_i d_i) = 2 * sum(kept_i d_i) - sum(d)."""
    rng = np.random.default_rng(seed)
    n, total = differences.size, float(differences.sum())
    signed_sums, sign_totals = [], []
    for start in range(0, resamples, _CHUNK):
        rows = min(_CHUNK, resamples - start)
        packed = rng.integers(0, 256, size=(rows, (n + 7) // 8), dtype=np.uint8)
        kept = np.unpackbits(packed, axis=1, count=n)
        signed_sums.append(2.0 * (kept @ differences) - total)
        sign_totals.append(2.0 * kept.sum(axis=1, dtype=np.int64) - n)
    signed_sums.append(np.array([total]))
    sign_totals.append(np.array([float(n)]))
    weights = np.full(resamples + 1, 1.0 / (resamples + 1))
    return _NullDistribution(np.concatenate(signed_sums), np.concatenate(sign_totals), weights, total, n)


@dataclass(frozen=True)
class _NormalNull:
    """Large n: sum(s_i (d_i - delta)) over random signs has mean 0 and variance
    sum((d_i - delta)^2), and is normal to a fraction of Monte Carlo noise."""

    differences: np.ndarray

    def p_value(self, delta: float) -> float:
        shifted = self.differences - delta
        spread = math.sqrt(float(shifted @ shifted))
        if spread == 0.0:
            return 1.0
        return min(1.0, 2.0 * NormalDist().cdf(-abs(float(shifted.sum())) / spread))


def _null_distribution(differences: np.ndarray, resamples: int, seed: int) -> tuple[_NullDistribution | _NormalNull, str]:
    # Group on a fine grid so 0.9 - 0.8 and 0.8 - 0.7 count as the same difference.
    values, counts = np.unique(np.round(differences, 12), return_counts=True)
    exact = _grouped_exact(values, counts)
    if exact is not None:
        return exact, "exact"
    if differences.size >= LARGE_N:
        return _NormalNull(differences), "normal"
    return _monte_carlo(differences, resamples, seed), "monte-carlo"


def _boundary(null: _NullDistribution | _NormalNull, accepted: float, rejected: float, alpha: float) -> float:
    """Bisection between a shift the test accepts and one it rejects."""
    for _ in range(_BISECTIONS):
        middle = (accepted + rejected) / 2.0
        if null.p_value(middle) > alpha:
            accepted = middle
        else:
            rejected = middle
    return accepted


def paired_sign_flip(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    bounds: tuple[float, float] = (-1.0, 1.0),
) -> PairedComparison:
    """Two-sided sign-flip test of mean(candidate - baseline) = 0 and the `confidence` interval
    of that mean difference. `bounds`: where the difference can lie ([-1, 1] for scores)."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired samples differ in length ({len(candidate)} vs {len(baseline)})")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    differences = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    n = differences.size
    if n == 0:
        return PairedComparison(0, 0.0, 0.0, None, None, confidence, "exact")
    mean = float(differences.mean())
    null, method = _null_distribution(differences, resamples, seed)
    alpha = 1.0 - confidence
    low, high = bounds
    lower = low if null.p_value(low) > alpha else _boundary(null, mean, low, alpha)
    upper = high if null.p_value(high) > alpha else _boundary(null, mean, high, alpha)
    return PairedComparison(
        n=n,
        mean_difference=mean,
        sd_difference=float(differences.std()),
        ci=(round(lower, 9), round(upper, 9)),  # bisection noise off the ends
        p_value=null.p_value(0.0),
        confidence=confidence,
        method=method,
    )


def pairs_needed(mean_difference: float, sd_difference: float, margin: float, confidence: float) -> int | None:
    """Roughly how many pairs make a normal-approximation interval around `mean_difference`
    with spread `sd_difference` stop straddling the boundary `margin` away from it:
    n = (z * sd / margin)^2. None when the data give no spread or the margin is zero."""
    if sd_difference <= 0.0 or margin <= 0.0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    return math.ceil((z * sd_difference / margin) ** 2)


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
