"""The sequential design's statistics (shared/sequential.py) against published tables and
against simulated Brownian motion at unplanned information fractions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.sequential import boundaries, look_alpha, planned_fractions, repeated_interval, spent
from shared.stats import paired_score_test


def test_lan_demets_obrien_fleming_boundaries_match_the_published_table():
    # K = 5 equally spaced, one-sided alpha 0.025 (Jennison & Turnbull 2000, Table 7.6; gsDesign sfLDOF).
    assert boundaries(planned_fractions(5), 0.025) == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=1e-3)
    # K = 2 (gsDesign: 2.963, 1.969) and K = 1, the fixed design's z.
    assert boundaries(planned_fractions(2), 0.025) == pytest.approx([2.963, 1.969], abs=1e-3)
    assert boundaries([1.0], 0.025) == pytest.approx([1.95996], abs=1e-4)


def test_spending_is_obrien_fleming_like_and_the_last_look_spends_what_is_left():
    assert spent(0.0, 0.025) == 0.0 and spent(1.0, 0.025) == 0.025 and spent(1.7, 0.025) == 0.025
    assert spent(0.2, 0.025) == pytest.approx(2 * (1 - 0.5 * math.erfc(-2.2414 / math.sqrt(0.2) / math.sqrt(2))), abs=1e-6)
    assert spent(0.2, 0.025) < 1e-5 < spent(0.6, 0.025) < spent(0.8, 0.025) < 0.025


@pytest.mark.parametrize("fractions", [[0.3, 0.55, 1.0], [0.13, 0.5, 0.61, 0.9, 1.0], [0.45, 0.8]])
def test_boundaries_at_unplanned_fractions_keep_the_error_spent(fractions):
    """Brownian motion observed at these fractions crosses the boundaries with probability
    alpha(t_K): the recursive integration checked against 400,000 simulated paths."""
    alpha = 0.025
    bounds = np.array(boundaries(fractions, alpha))
    rng = np.random.default_rng(7)
    steps = np.diff([0.0, *fractions])
    paths = np.cumsum(rng.normal(size=(400_000, len(fractions))) * np.sqrt(steps), axis=1)
    z = paths / np.sqrt(fractions)
    crossed = (z >= bounds).any(axis=1).mean()
    expected = spent(fractions[-1], alpha)
    assert crossed == pytest.approx(expected, abs=4 * math.sqrt(expected / 400_000))
    # and each look spends its own share
    first = (z[:, 0] >= bounds[0]).mean()
    assert first == pytest.approx(spent(fractions[0], alpha), abs=4 * math.sqrt(max(spent(fractions[0], alpha), 1e-6) / 400_000) + 1e-5)


def test_bad_fractions_and_alpha_are_refused():
    for fractions in ([], [0.5, 0.5], [0.6, 0.4], [0.0, 1.0], [1.2]):
        with pytest.raises(ValueError):
            boundaries(fractions, 0.025)
    with pytest.raises(ValueError):
        boundaries([1.0], 0.6)
    with pytest.raises(ValueError):
        planned_fractions(0)


def test_repeated_interval_is_the_score_interval_at_the_looks_level():
    candidate = [1.0] * 30 + [0.0] * 10 + [1.0] * 40 + [0.0] * 20
    baseline = [0.0] * 30 + [1.0] * 10 + [1.0] * 40 + [0.0] * 20
    first = repeated_interval(candidate, baseline, [0.2], 0.025)
    last = repeated_interval(candidate, baseline, planned_fractions(5), 0.025)
    fixed = paired_score_test(candidate, baseline, alpha_each=0.025)
    # the first look's interval is the widest, the last is a little wider than the fixed design's
    assert first.ci[0] < last.ci[0] < fixed.ci[0] and fixed.ci[1] < last.ci[1] < first.ci[1]
    assert look_alpha(planned_fractions(5), 0.025) == pytest.approx(0.5 * math.erfc(2.031 / math.sqrt(2)), rel=1e-3)


def _runs(scenario: str, runs: int, go: str = "better", tasks: int = 60, seed: int = 3):
    from bench.sequential import simulate
    from shared.config.tables import DecisionConfig

    rule = DecisionConfig(go=go)
    return rule, simulate(np.random.default_rng(seed), scenario, runs, 3, tasks, rule, (0.45, 0.65))


def test_the_benchs_vectorised_verdicts_are_the_reports():
    """bench/sequential.py judges thousands of runs at once; on the same jobs, its verdicts are
    those of shared.report.decision.compare (the report's), for both GO rules."""
    from types import SimpleNamespace

    from bench.sequential import GO_CODE, NO_GO_CODE, verdicts
    from shared.report.decision import GO, INCONCLUSIVE, NO_GO, compare

    names = {GO_CODE: GO, NO_GO_CODE: NO_GO, 0: INCONCLUSIVE}
    for go in ("better", "bar"):
        rule, (candidate, baseline, paired) = _runs("bar+5", 40, go, tasks=80)
        released = np.full(40, 50)
        codes = verdicts(candidate[:, 0], baseline[:, 0], paired[:, 0], released, 0.01, rule)
        seen = set()
        for r in range(40):
            def jobs(scores, counted):
                return {t: SimpleNamespace(task_id=t, status="ok" if counted[t] else "error",
                                           score=float(scores[t]) if counted[t] else None, model="m")
                        for t in range(50)}
            # a left-out task: the baseline failed; a counted candidate error scores 0 either way
            row = compare("a", "ft", "base", jobs(candidate[r, 0], np.ones(80, bool)), jobs(baseline[r, 0], paired[r, 0]),
                          rule, alpha_each=0.01, plan=False)
            assert row["decision"] == names[int(codes[r])], (go, r, row["headline"])
            seen.add(row["decision"])
        assert len(seen) >= 2  # the check saw more than one verdict


@pytest.mark.statistics
@pytest.mark.parametrize("go", ["better", "bar"])
def test_run_level_error_rates_hold_at_any_stopping_time(go):
    """Over simulated runs of 3 agents x 200 tasks (+ the pooled verdict), stopping look by look:
    with no candidate better, some verdict says GO in at most 5% of runs; with every candidate
    at the bar, some says NO-GO in at most 5% (and, under go = "bar", GO too); no run pays more
    calls than the fixed design. 5% within two standard errors of the simulation."""
    from bench.sequential import fixed_design, sequential_design, summary
    from shared.report.decision import error_shares

    runs = 1500
    limit = 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)
    for scenario, worst in (("none", "any GO"), ("bar", "any NO-GO")):
        rule, (candidate, baseline, paired) = _runs(scenario, runs, go, tasks=200, seed=11)
        alphas = error_shares(3, 1, rule.confidence)
        sequential = sequential_design(candidate, baseline, paired, alphas, rule, looks=5)
        fixed = fixed_design(candidate, baseline, paired, alphas, rule)
        rates = summary(sequential, 1.0)
        assert rates[worst] <= limit, (scenario, rates)
        if go == "bar" and scenario == "bar":
            assert rates["any GO"] <= limit, rates
        assert (sequential["released"] <= fixed["released"]).all()
