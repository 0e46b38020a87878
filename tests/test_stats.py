"""The statistics against published formulas or hand-computed values (each test says where
from), and the interval's promises: coverage, no collapse, no jump, no contradiction."""

from __future__ import annotations

import math
import random
import statistics

import numpy as np
import pytest

from bench.coverage import binary_coverage, binary_points, quarter_coverage
from shared.stats import bounds, null_variance, paired_score_test, percentile, statistic, support, two_sided

BINARY = np.array([-1.0, 0.0, 1.0])


def tango_statistic(b: int, c: int, n: int, delta: float) -> float:
    """Tango (1998), Statistics in Medicine 17:891, eq. (3)-(4), written out independently:
    p01 the positive root of 2n p^2 + [-(b + c) + (2n - b + c) delta] p - c delta (1 - delta)."""
    A = 2 * n
    B = -b - c + (2 * n - b + c) * delta
    C = -c * delta * (1 - delta)
    p01 = (-B + math.sqrt(B * B - 4 * A * C)) / (2 * A)
    return (b - c - n * delta) / math.sqrt(n * (2 * p01 + delta * (1 - delta)))


@pytest.mark.parametrize("b,c,n", [(5, 0, 20), (8, 1, 20), (1, 7, 21), (60, 40, 300), (0, 4, 9), (20, 0, 20)])
def test_zero_one_scores_give_tangos_score_statistic(b, c, n):
    counts = np.array([[c, n - b - c, b]], dtype=float)
    for delta in (-0.6, -0.05, 0.1, 0.37, 0.9):
        ours = statistic(BINARY, counts, np.array([delta]), continuity=0.0)[0]
        assert ours == pytest.approx(tango_statistic(b, c, n, delta), rel=1e-9)


def test_the_general_solver_agrees_with_the_closed_form():
    # An unobserved value 0.5 in the support sends the computation through the bisection path.
    values = np.array([-1.0, 0.0, 0.5, 1.0])
    for b, c, n in [(5, 0, 20), (3, 3, 10), (14, 2, 100), (0, 0, 7)]:
        for delta in (-0.3, 0.05, 0.4):
            general = null_variance(values, np.array([[c, n - b - c, 0, b]], dtype=float), np.array([delta]))
            closed = null_variance(BINARY, np.array([[c, n - b - c, b]], dtype=float), np.array([delta]))
            assert general[0] == pytest.approx(closed[0], rel=1e-8)


def test_twenty_ties_leave_room_for_a_gain():
    # All ties: the interval is where (n delta - 1/2)^2 <= z^2 n delta (1 - delta) (Tango with
    # b = c = 0 and the continuity correction), about +/-20 pp at n = 20: never (0, 0).
    result = two_sided([1] * 12 + [0] * 8, [1] * 12 + [0] * 8, 0.95)
    z = statistics.NormalDist().inv_cdf(0.975)
    high = result.ci[1]
    assert (20 * high - 0.5) ** 2 == pytest.approx(z * z * 20 * high * (1 - high), rel=1e-6)
    assert result.ci == pytest.approx((-high, high)) and 0.19 < high < 0.21
    assert result.p_two_sided == 1.0


def test_one_pair_and_no_pair():
    one = two_sided([1.0], [0.0], 0.95)
    assert one.n == 1 and one.ci[0] < 0 < one.ci[1] == 1.0  # one win proves nothing
    empty = two_sided([], [], 0.95)
    assert empty.n == 0 and empty.ci is None and empty.p_two_sided is None
    with pytest.raises(ValueError, match="differ in length"):
        two_sided([1.0, 0.0], [1.0], 0.95)
    with pytest.raises(ValueError, match="confidence"):
        two_sided([1.0], [0.0], 1.0)
    with pytest.raises(ValueError, match="outside"):
        two_sided([2.0], [0.0], 0.95)


def test_no_jump_at_three_hundred_pairs():
    # The case: b = 60, c = 40 at 299 pairs, then one more tie. The old test switched
    # to a normal limit at 300 and went from p = 0.058 to 0.0455; this one has no switch.
    results = []
    for n in (299, 300):
        candidate = [1] * 60 + [0] * 40 + [1] * (n - 100)
        baseline = [0] * 60 + [1] * 40 + [1] * (n - 100)
        results.append(two_sided(candidate, baseline, 0.95))
    (before, after) = results
    # Tango at 0 with the correction: (b - c - 1/2) / sqrt(b + c) = 19.5 / 10 for both.
    assert before.p_two_sided == pytest.approx(2 * (1 - statistics.NormalDist().cdf(1.95)), rel=1e-6)
    assert after.p_two_sided == pytest.approx(before.p_two_sided, rel=1e-9)
    assert after.ci == pytest.approx(before.ci, abs=0.001) and before.ci[0] < 0


@pytest.mark.parametrize("seed", range(12))
def test_the_interval_excludes_zero_exactly_when_the_one_sided_p_says_so(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    levels = [0, 0.25, 0.5, 0.75, 1] if seed % 2 else [0, 1]
    candidate = [rng.choice(levels) if rng.random() < 0.6 else 1 for _ in range(n)]
    baseline = [rng.choice(levels) if rng.random() < 0.7 else c for c in candidate]
    alpha_each = rng.choice([0.025, 0.005, 0.05])
    result = paired_score_test(candidate, baseline, alpha_each=alpha_each)
    low, high = result.ci
    assert low <= result.mean_difference <= high
    assert (low > 0) == (result.p_above_zero < alpha_each)
    assert (high < 0) == (result.p_below_zero < alpha_each)


def test_fractional_scores_never_collapse_to_a_point():
    # Every difference +0.25 (judge grades one step up on every task): the old sign-flip
    # interval was (0.25, 0.25); this one keeps room on both sides.
    result = two_sided([0.75] * 10, [0.5] * 10, 0.95)
    assert result.ci[0] < 0.25 < result.ci[1]
    assert result.ci[1] - result.ci[0] > 0.1


def test_support_keeps_the_ends_and_groups_equal_differences():
    values, counts = support(np.array([0.9 - 0.8, 0.8 - 0.7, 0.0]))
    assert list(values) == [-1.0, 0.0, 0.1, 1.0] and list(counts) == [0, 1, 2, 0]


def test_coverage_of_zero_one_scores_on_a_small_grid():
    # Exact (sums over every outcome): the nominal 95% interval covers at least 94% everywhere
    # on the grid, tie-heavy points included. bench/coverage.py prints the full grid.
    points = binary_points(discordance=(0.0, 0.05, 0.1, 0.4), differences=(-0.1, -0.05, 0.0, 0.05, 0.1))
    for n in (5, 20, 50):
        cover = binary_coverage(n, points)
        assert min(cover) >= 0.94, (n, min(cover))


def test_coverage_of_quarter_step_scores_on_a_small_grid():
    rng = np.random.default_rng(3)
    for n, shape, d, delta in [(20, "spread", 0.4, 0.1), (50, "skewed", 0.2, 0.05), (20, "skewed", 0.05, 0.05)]:
        cover = quarter_coverage(n, shape, d, delta, 1500, rng)
        assert cover >= 0.93, (n, shape, d, delta, cover)  # 0.95 less 3 Monte Carlo standard errors


def test_bounds_are_vectorised_over_samples():
    counts = np.array([[1, 10, 9], [0, 20, 0], [9, 10, 1]], dtype=float)
    low, high = bounds(BINARY, counts, 0.025)
    assert low[0] > 0 and high[2] < 0 and low[1] == pytest.approx(-high[1])
    single = paired_score_test([1] * 9 + [1] * 10 + [0], [0] * 9 + [1] * 10 + [1], alpha_each=0.025)
    assert single.ci == pytest.approx((low[0], high[0]), abs=1e-8)


def test_percentile_interpolates_linearly():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile(list(range(1, 21)), 95) == pytest.approx(19.05)
    assert percentile([7.0], 95) == 7.0
    values = [random.Random(3).uniform(0, 1000) for _ in range(37)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")  # the same definition
    assert percentile(values, 50) == pytest.approx(cuts[49])
    assert percentile(values, 95) == pytest.approx(cuts[94])
    assert (percentile(values, 0), percentile(values, 100)) == (min(values), max(values))
    with pytest.raises(ValueError):
        percentile([], 50)
