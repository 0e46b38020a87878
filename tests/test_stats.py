"""The statistics against published or hand-computed values (each test says where from)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

import shared.stats as stats
from shared.stats import paired_sign_flip, pairs_needed, percentile

# Darwin's Zea mays data as Fisher used it (The Design of Experiments, 1935, §21): height
# differences (crossed - self-fertilised) of 15 pairs, in eighths of an inch. Fisher counts 863
# of the 2^15 = 32768 sign patterns with a sum at least the observed 314, so the two-sided
# randomization p-value is 1726 / 32768 = 0.05267.
DARWIN = [49, -67, 8, 16, 6, 23, 28, 41, 14, 29, 56, 24, 75, 60, -48]


def test_sign_flip_reproduces_fishers_randomization_test():
    result = paired_sign_flip(DARWIN, [0] * 15, bounds=(-100, 100))
    assert result.exact is True
    assert result.p_value == pytest.approx(1726 / 32768)
    assert result.mean_difference == pytest.approx(314 / 15)
    assert result.ci[0] < 0 < result.ci[1]  # p > 0.05: the interval includes 0


def test_monte_carlo_agrees_with_the_exact_count_and_is_seeded(monkeypatch):
    monkeypatch.setattr(stats, "EXACT_LIMIT", 0)  # force the sampled path
    first = paired_sign_flip(DARWIN, [0] * 15, bounds=(-100, 100), resamples=20_000, seed=3)
    again = paired_sign_flip(DARWIN, [0] * 15, bounds=(-100, 100), resamples=20_000, seed=3)
    assert first.exact is False and first == again  # same rows, same numbers
    # Monte Carlo standard error at p = 0.053 over 20,000 draws: sqrt(p (1 - p) / 20000) = 0.0016.
    assert first.p_value == pytest.approx(1726 / 32768, abs=0.005)


def test_zero_one_scores_give_the_exact_sign_test():
    # 20 tasks: candidate right / baseline wrong on 8, the reverse on 1, ties on 11. The exact
    # McNemar (binomial) test: 2 * P(X <= 1), X ~ Bin(9, 1/2) = 2 * (1 + 9) / 512 = 0.0390625.
    candidate = [1] * 8 + [0] + [1] * 6 + [0] * 5
    baseline = [0] * 8 + [1] + [1] * 6 + [0] * 5
    result = paired_sign_flip(candidate, baseline)
    assert result.exact is True and result.n == 20
    assert result.p_value == pytest.approx(20 / 512)
    assert result.mean_difference == pytest.approx(7 / 20)
    assert result.ci[0] > 0  # p < 0.05 and the estimate is positive: the interval clears 0


def test_fractional_scores_by_hand_enumeration():
    # Differences 0.5, 0.25, 1.0, -0.25 (sum 1.5). With the 1.0 kept positive the other three
    # give sums 2.0, 1.5, 1.5, 1.0, 1.0, 0.5, 0.5, 0: three reach 1.5; by symmetry 6 of 16.
    result = paired_sign_flip([0.5, 0.25, 1.0, 0.0], [0.0, 0.0, 0.0, 0.25])
    assert result.p_value == pytest.approx(6 / 16)
    # Four pairs can never reject at 5% (the smallest p is 2/16): the interval is all of [-1, 1].
    assert result.ci == (-1.0, 1.0)


def test_constant_differences_collapse_the_interval():
    # Every difference 0.3: for any other shift all signs agree, p = 2 / 2^10 < 0.05.
    result = paired_sign_flip([0.8] * 10, [0.5] * 10)
    assert result.p_value == pytest.approx(2 / 1024)
    assert result.ci == pytest.approx((0.3, 0.3))
    assert result.sd_difference == pytest.approx(0.0, abs=1e-12)
    same = paired_sign_flip([1, 0, 1, 0, 1, 0], [1, 0, 1, 0, 1, 0])
    assert same.p_value == 1.0 and same.ci == (0.0, 0.0)


@pytest.mark.parametrize("seed", range(12))
def test_the_interval_excludes_zero_exactly_when_the_test_rejects(seed):
    rng = random.Random(seed)
    n = rng.randint(8, 40)
    levels = [0, 0.25, 0.5, 0.75, 1] if seed % 2 else [0, 1]
    candidate = [rng.choice(levels) if rng.random() < 0.6 else 1 for _ in range(n)]
    baseline = [rng.choice(levels) for _ in range(n)]
    result = paired_sign_flip(candidate, baseline)
    low, high = result.ci
    assert low <= result.mean_difference <= high
    assert (low > 0 or high < 0) == (result.p_value <= 0.05)


def test_no_pairs_and_bad_input():
    empty = paired_sign_flip([], [])
    assert empty.n == 0 and empty.ci is None and empty.p_value is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_sign_flip([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_sign_flip([1.0], [0.0], confidence=1.0)


def test_pairs_needed_is_the_normal_sample_size():
    # (z_0.975 * sd / margin)^2 = (1.959964 * 0.5 / 0.1)^2 = 96.04 -> 97.
    assert pairs_needed(0.1, 0.5, 0.1, 0.95) == 97
    assert pairs_needed(0.1, 0.5, 0.1, 0.90) == math.ceil((1.644854 * 5) ** 2)  # 67.6 -> 68
    assert pairs_needed(0.1, 0.0, 0.1, 0.95) is None  # no spread observed: cannot say


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


def test_large_samples_use_the_normal_limit_of_the_same_distribution(monkeypatch):
    # 400 quarter-step scores, half the candidate's copied from the baseline, some lifted.
    rng = random.Random(5)
    levels = [0, 0.25, 0.5, 0.75, 1]
    baseline = [rng.choice(levels) for _ in range(400)]
    candidate = [rng.choice(levels) if rng.random() < 0.5 else b for b in baseline]
    candidate = [min(1.0, c + 0.25) if rng.random() < 0.32 else c for c in candidate]
    normal = paired_sign_flip(candidate, baseline)
    assert normal.method == "normal" and 0.02 < normal.p_value < 0.2  # a p-value worth comparing
    monkeypatch.setattr(stats, "LARGE_N", 10_000)  # the same data through the sampled path
    sampled = paired_sign_flip(candidate, baseline, resamples=100_000)
    assert sampled.method == "monte-carlo"
    # Measured: p 0.081 vs 0.087 (the normal limit has no continuity correction); the interval,
    # which is what gates the decision, agrees to a tenth of a point.
    assert normal.p_value == pytest.approx(sampled.p_value, abs=0.01)
    assert normal.ci == pytest.approx(sampled.ci, abs=0.001)
