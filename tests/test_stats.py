"""Student t and the paired test, against closed forms, tables and brute-force integration."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from shared.stats import (
    paired_t_test,
    percentile,
    regularized_incomplete_beta,
    t_cdf,
    t_ppf,
    t_two_sided_p,
)

# Student's sleep data (Cushny & Peebles), the textbook paired example; R's t.test(paired=TRUE)
# gives t = 4.0621, df = 9, p = 0.002833, 95% CI [0.7001142, 2.4598858] for group2 - group1.
SLEEP_GROUP1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_GROUP2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


@pytest.mark.parametrize(
    ("q", "df", "expected"),
    [(0.975, 19, 2.093), (0.975, 4, 2.776), (0.975, 9, 2.262), (0.975, 1, 12.706),
     (0.95, 10, 1.812), (0.995, 30, 2.750), (0.025, 4, -2.776)],
)
def test_t_quantiles_match_the_tables(q, df, expected):
    assert t_ppf(q, df) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("t", [-30.0, -2.5, -0.3, 0.0, 0.7, 1.96, 12.0])
def test_t_cdf_matches_closed_forms(t):
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    normal = 0.5 * (1 + math.erf(t / math.sqrt(2)))
    assert t_cdf(t, 1e6) == pytest.approx(normal, abs=1e-6)


@pytest.mark.parametrize(
    ("q", "df"), [(0.6, 3), (0.975, 7), (0.999, 2), (0.01, 25), (0.9999999, 1)]
)
def test_t_ppf_inverts_the_cdf(q, df):
    assert t_cdf(t_ppf(q, df), df) == pytest.approx(q, rel=1e-9)
    assert t_ppf(1 - q, df) == pytest.approx(-t_ppf(q, df))


def test_incomplete_beta_special_cases():
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert regularized_incomplete_beta(2.5, 1, x) == pytest.approx(x**2.5, abs=1e-12)
        expected = 1 - (1 - x) ** 3.5
        assert regularized_incomplete_beta(1, 3.5, x) == pytest.approx(expected, abs=1e-12)
    assert regularized_incomplete_beta(7.3, 7.3, 0.5) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(ValueError):
        regularized_incomplete_beta(1, 1, 1.5)
    with pytest.raises(ValueError):
        t_ppf(1.0, 5)


def _t_pdf(x: float, df: int) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm) * (1 + x * x / df) ** (-(df + 1) / 2)


def _simpson(f, a: float, b: float, steps: int = 4000) -> float:
    h = (b - a) / steps
    total = f(a) + f(b) + sum((4 if i % 2 else 2) * f(a + i * h) for i in range(1, steps))
    return total * h / 3


def test_paired_t_test_on_the_sleep_data():
    result = paired_t_test(SLEEP_GROUP2, SLEEP_GROUP1)
    assert result.n == 10
    assert result.mean_difference == pytest.approx(1.58)
    assert result.ci95 == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
    assert result.p_value == pytest.approx(0.002833, abs=1e-6)

    # The same p by another route: t from the raw differences, tail area by Simpson's rule.
    diffs = [b - a for a, b in zip(SLEEP_GROUP1, SLEEP_GROUP2)]
    mean = sum(diffs) / 10
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 9)
    t = mean / (sd / math.sqrt(10))
    assert t == pytest.approx(4.0621, abs=1e-4)
    assert result.p_value == pytest.approx(1 - 2 * _simpson(lambda x: _t_pdf(x, 9), 0, t), abs=1e-9)
    assert t_two_sided_p(-t, 9) == pytest.approx(result.p_value)


def test_paired_t_test_degenerate_samples():
    same_gain = paired_t_test([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert same_gain.ci95 == pytest.approx((0.1, 0.1)) and same_gain.p_value == 0.0
    no_change = paired_t_test([1.0, 0.0], [1.0, 0.0])
    assert no_change.ci95 == (0.0, 0.0) and no_change.p_value == 1.0
    single = paired_t_test([1.0], [0.0])
    assert (single.mean_difference, single.ci95, single.p_value) == (1.0, None, None)
    with pytest.raises(ValueError):
        paired_t_test([], [])
    with pytest.raises(ValueError):
        paired_t_test([1.0, 0.0], [1.0])


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
